//! Many bodies in one object.
//!
//! A pack is the [`codec`](crate::codec) frames of several bodies written back to back, with
//! nothing between or around them: whoever writes a pack keeps the [`ByteRange`] of each frame
//! (the shard stores it in the log row), so a pack needs no index of its own. A body is read by
//! fetching its range with [`BlobStore::get_range`] and decoding that one frame. Deleting some
//! of the bodies erases their ranges ([`BlobStore::erase`]); the zeros left behind do not decode,
//! so a stale reference reads as [`BlobError::Corrupt`], never as another body.

use std::fmt;

use bytes::Bytes;

use crate::codec::STORED_FRAME_OVERHEAD;
use crate::{BlobError, BlobStore, ByteRange, Codec, validate_key};

/// Builds one pack object: the codec frames (AGB1 + zstd, checksummed) of many bodies, back to
/// back.
pub struct PackWriter {
    codec: Codec,
    buf: Vec<u8>,
}

impl PackWriter {
    /// An empty pack whose bodies are framed by `codec`. Bodies must not exceed
    /// [`Codec::max_decoded_bytes`] of the codec they are later read with, or
    /// [`read_body`] refuses them.
    pub fn new(codec: Codec) -> Self {
        Self::with_room_for(codec, 0, 0)
    }

    /// [`PackWriter::new`], with room made at once for `bodies` bodies of `body_bytes` in all
    /// (stored as they are, the most a small body takes): a pack grown by doubling copied
    /// itself over and over, each time into freshly faulted-in pages.
    pub fn with_room_for(codec: Codec, bodies: usize, body_bytes: usize) -> Self {
        Self {
            codec,
            buf: Vec::with_capacity(
                body_bytes.saturating_add(bodies.saturating_mul(STORED_FRAME_OVERHEAD)),
            ),
        }
    }

    /// Appends the encoded frame of `body`; returns where the frame lies in the pack. On error
    /// the pack is unchanged.
    pub fn push(&mut self, body: &[u8]) -> Result<ByteRange, BlobError> {
        let offset = self.buf.len();
        self.codec.encode_into(body, &mut self.buf)?;
        Ok(ByteRange::new(
            offset as u64,
            (self.buf.len() - offset) as u64,
        ))
    }

    /// The length of the pack so far, in bytes.
    pub fn len(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The pack object, ready for [`BlobStore::put`].
    pub fn finish(self) -> Bytes {
        Bytes::from(self.buf)
    }
}

impl fmt::Debug for PackWriter {
    // The buffer can hold megabytes of compressed bodies: show its length only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackWriter")
            .field("codec", &self.codec)
            .field("len", &self.buf.len())
            .finish()
    }
}

/// Reads and decodes the body framed at `range` of pack `key`.
///
/// A range longer than [`codec.max_stored_bytes()`](Codec::max_stored_bytes) is refused as
/// [`BlobError::Corrupt`] before any IO; a frame that does not decode (erased, hence zeros, or
/// tampered with) is [`BlobError::Corrupt`] naming the range; an absent pack is
/// [`BlobError::NotFound`]. Large frames are decoded on the blocking pool.
pub async fn read_body(
    store: &dyn BlobStore,
    codec: &Codec,
    key: &str,
    range: ByteRange,
) -> Result<Bytes, BlobError> {
    validate_key(key)?;
    let max = codec.max_stored_bytes();
    if range.len > max as u64 {
        return Err(BlobError::Corrupt {
            key: key.to_owned(),
            reason: format!("{range} are longer than any frame of this codec ({max} bytes)"),
        });
    }
    let frame = store.get_range(key, range).await?;
    match codec.decode_async(&store.describe(), key, frame).await {
        Err(BlobError::Corrupt { key, reason }) => Err(BlobError::Corrupt {
            key,
            reason: format!("the frame at {range}: {reason}"),
        }),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemBlobStore;
    use crate::codec::tests::{json_body, noise};

    fn bodies() -> Vec<Vec<u8>> {
        vec![
            b"{\"first\":true}".to_vec(),
            Vec::new(),
            json_body(1 << 20),
            noise(1 << 20, 17),
            b"x".to_vec(),
            Vec::new(),
            json_body(300),
        ]
    }

    fn corrupt_reason(result: Result<Bytes, BlobError>, pack: &str) -> String {
        match result {
            Err(BlobError::Corrupt { key, reason }) => {
                assert_eq!(key, pack);
                reason
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn a_pack_opened_with_room_for_its_small_bodies_never_grows() {
        let bodies = ["", "short", "a somewhat longer body of a few dozen bytes"];
        let total = bodies.iter().map(|b| b.len()).sum();
        let mut pack = PackWriter::with_room_for(Codec::default(), bodies.len(), total);
        let room = pack.buf.capacity();
        for body in bodies {
            pack.push(body.as_bytes()).unwrap();
        }
        assert_eq!(pack.buf.capacity(), room);
        assert_eq!(
            pack.len() as usize,
            total + bodies.len() * STORED_FRAME_OVERHEAD
        );
    }

    #[test]
    fn frames_lie_back_to_back() {
        let codec = Codec::default();
        let mut writer = PackWriter::new(codec);
        assert!(writer.is_empty());
        let ranges: Vec<ByteRange> = bodies()
            .iter()
            .map(|body| writer.push(body).unwrap())
            .collect();
        assert!(!writer.is_empty());
        let len = writer.len();
        assert!(format!("{writer:?}").contains(&format!("len: {len}")));
        let pack = writer.finish();
        assert_eq!(pack.len() as u64, len);
        let mut next = 0;
        for (range, body) in ranges.iter().zip(bodies()) {
            assert_eq!(range.offset, next, "no gaps");
            next = range.end().unwrap();
            let frame = &pack[range.offset as usize..next as usize];
            assert_eq!(codec.decode("p", frame).unwrap(), body);
        }
        assert_eq!(next, len, "nothing after the last frame");
        assert!(PackWriter::new(codec).finish().is_empty());
    }

    #[tokio::test]
    async fn bodies_read_back_and_damage_is_corrupt() {
        let store = MemBlobStore::new();
        let codec = Codec::default();
        let mut writer = PackWriter::new(codec);
        let ranges: Vec<ByteRange> = bodies()
            .iter()
            .map(|body| writer.push(body).unwrap())
            .collect();
        let pack = writer.finish();
        store.put("gw/pack1", pack.clone()).await.unwrap();
        for (range, body) in ranges.iter().zip(bodies()) {
            assert_eq!(
                read_body(&store, &codec, "gw/pack1", *range).await.unwrap(),
                body
            );
        }

        // A range shifted by one byte is no frame.
        let shifted = ByteRange::new(ranges[2].offset + 1, ranges[2].len - 1);
        let reason = corrupt_reason(
            read_body(&store, &codec, "gw/pack1", shifted).await,
            "gw/pack1",
        );
        assert!(reason.contains(&shifted.to_string()), "{reason}");

        store.erase("gw/pack1", vec![ranges[2]]).await.unwrap();
        let reason = corrupt_reason(
            read_body(&store, &codec, "gw/pack1", ranges[2]).await,
            "gw/pack1",
        );
        assert!(reason.contains("AGB1"), "{reason}");
        assert_eq!(
            read_body(&store, &codec, "gw/pack1", ranges[3])
                .await
                .unwrap(),
            bodies()[3],
            "the neighbours survive"
        );

        // One byte flipped inside a frame: the checksum (or the decoder) catches it.
        let mut tampered = pack.to_vec();
        let target = ranges[6].offset + ranges[6].len / 2;
        tampered[target as usize] ^= 0x40;
        store.raw_put("gw/pack2", tampered);
        corrupt_reason(
            read_body(&store, &codec, "gw/pack2", ranges[6]).await,
            "gw/pack2",
        );
        assert_eq!(
            read_body(&store, &codec, "gw/pack2", ranges[5])
                .await
                .unwrap(),
            bodies()[5]
        );

        let err = read_body(&store, &codec, "gw/none", ranges[0])
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::NotFound { .. }), "{err:?}");
        let err = read_body(&store, &codec, "../x", ranges[0])
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::InvalidKey { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn oversized_ranges_are_refused_before_any_io() {
        // The pack does not exist: reaching the store would say NotFound.
        let store = MemBlobStore::new();
        let codec = Codec::new(1024);
        let range = ByteRange::new(0, codec.max_stored_bytes() as u64 + 1);
        let reason = corrupt_reason(read_body(&store, &codec, "p", range).await, "p");
        assert!(reason.contains("longer than any frame"), "{reason}");
    }
}
