//! The frame of one body: how [`pack`](crate::pack) stores bodies in objects.
//!
//! A frame is the 4-byte [`MAGIC`] followed by one zstd frame (level [`LEVEL`]) that records the
//! content size and a checksum, so a damaged, truncated, erased (zeroed) or foreign frame is
//! reported as [`BlobError::Corrupt`] instead of being returned as garbage. Bodies under
//! [`STORED_BELOW_BYTES`] are written as a zstd frame of one *raw* block (zstd's own stored
//! form, with the same content size and checksum): a few hundred bytes of JSON shrink by about
//! a fifth at level 3 for some 3 µs each, most of a small log's compression cost, while the
//! stored form costs a copy and a hash. Any zstd decoder reads both, so readers need no change.
//! Decoding is bounded: a frame that expands past the codec's maximum (default
//! [`DEFAULT_MAX_DECODED_BYTES`]) or asks for a window larger than level 3 ever uses is refused,
//! so a hostile object cannot exhaust memory.

use std::cell::RefCell;
use std::io::{self, Read};

use bytes::Bytes;

use crate::BlobError;

/// The first bytes of every frame ("aigw blob, format 1").
pub const MAGIC: [u8; 4] = *b"AGB1";

/// The zstd compression level bodies are written with.
pub const LEVEL: i32 = 3;

/// Bodies shorter than this are stored uncompressed, in a raw-block zstd frame.
pub const STORED_BELOW_BYTES: usize = 1024;

/// The zstd frame magic number, little-endian.
const ZSTD_MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();

/// The default bound on a decoded body: 64 MiB, above the 50 MiB body limit of the edge.
pub const DEFAULT_MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;

/// The largest zstd window (as a power of two) the decoder accepts: 32 MiB. Level 3 uses at most
/// 2 MiB, so this only refuses frames that were not written by [`encode`].
const WINDOW_LOG_MAX: u32 = 25;

/// Bodies up to this size are encoded and decoded on the calling task by
/// [`Codec::encode_async`] / [`Codec::decode_async`]; larger ones on the blocking pool.
const INLINE_CODEC_BYTES: usize = 128 * 1024;

/// Encodes and decodes bodies, refusing to decode more than a maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    max_decoded_bytes: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_DECODED_BYTES)
    }
}

impl Codec {
    /// A codec that refuses to decode bodies larger than `max_decoded_bytes`. It must exceed the
    /// largest body ever stored, or that body cannot be read back.
    pub const fn new(max_decoded_bytes: usize) -> Self {
        Self { max_decoded_bytes }
    }

    /// The largest decoded body this codec returns.
    pub const fn max_decoded_bytes(&self) -> usize {
        self.max_decoded_bytes
    }

    /// The largest frame [`encode`](Self::encode) produces for a body of
    /// [`max_decoded_bytes`](Self::max_decoded_bytes); [`read_body`](crate::pack::read_body)
    /// refuses to read longer ranges.
    pub fn max_stored_bytes(&self) -> usize {
        // Header + worst-case zstd expansion + frame header and checksum.
        MAGIC.len() + zstd::zstd_safe::compress_bound(self.max_decoded_bytes) + 32
    }

    /// Returns the frame of `body`: [`MAGIC`] and a checksummed zstd frame.
    pub fn encode(&self, body: &[u8]) -> Result<Vec<u8>, BlobError> {
        let mut out = Vec::new();
        self.encode_into(body, &mut out)?;
        Ok(out)
    }

    /// Appends the frame of `body` to `out`; on error `out` is left as it was. Lets a pack grow
    /// in place instead of copying every frame.
    pub(crate) fn encode_into(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), BlobError> {
        encode_frame_into(body, out).map_err(|e| BlobError::Unavailable {
            store: "zstd encoder".to_owned(),
            reason: format!("cannot compress a body of {} bytes: {e}", body.len()),
        })
    }

    /// Returns the body whose frame is `stored`, or [`BlobError::Corrupt`] naming `key` when
    /// the header or frame is damaged or the body would exceed the maximum.
    pub fn decode(&self, key: &str, stored: &[u8]) -> Result<Bytes, BlobError> {
        self.decode_frame(stored)
            .map(Bytes::from)
            .map_err(|reason| BlobError::Corrupt {
                key: key.to_owned(),
                reason,
            })
    }

    /// [`encode`](Self::encode) that moves large bodies to the blocking pool so compression
    /// does not stall the async runtime. `store` names the caller in errors.
    pub async fn encode_async(&self, store: &str, body: Bytes) -> Result<Bytes, BlobError> {
        if body.len() <= INLINE_CODEC_BYTES {
            return self.encode(&body).map(Bytes::from);
        }
        let codec = *self;
        crate::run_blocking(store, move || codec.encode(&body).map(Bytes::from)).await
    }

    /// [`decode`](Self::decode) that moves large objects to the blocking pool.
    pub async fn decode_async(
        &self,
        store: &str,
        key: &str,
        stored: Bytes,
    ) -> Result<Bytes, BlobError> {
        if stored.len() <= INLINE_CODEC_BYTES {
            return self.decode(key, &stored);
        }
        let codec = *self;
        let key = key.to_owned();
        crate::run_blocking(store, move || codec.decode(&key, &stored)).await
    }

    fn decode_frame(&self, stored: &[u8]) -> Result<Vec<u8>, String> {
        let Some(frame) = stored.strip_prefix(&MAGIC) else {
            return Err(format!(
                "missing the AGB1 header (the object is {} bytes and starts with {:?})",
                stored.len(),
                String::from_utf8_lossy(&stored[..stored.len().min(MAGIC.len())])
            ));
        };
        let max = self.max_decoded_bytes;
        let declared = zstd::zstd_safe::get_frame_content_size(frame)
            .map_err(|_| "invalid zstd frame header".to_owned())?;
        if let Some(size) = declared
            && size > max as u64
        {
            return Err(format!(
                "the frame declares {size} bytes, more than the limit of {max} bytes"
            ));
        }
        let capacity = declared.map_or(frame.len().saturating_mul(4), |size| size as usize);
        let mut out = Vec::with_capacity(capacity.min(max));
        let mut decoder = zstd::stream::read::Decoder::with_buffer(frame)
            .map_err(|e| format!("cannot start the zstd decoder: {e}"))?;
        decoder
            .window_log_max(WINDOW_LOG_MAX)
            .map_err(|e| format!("cannot configure the zstd decoder: {e}"))?;
        decoder
            .take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("zstd frame does not decode: {e}"))?;
        if out.len() > max {
            return Err(format!(
                "the body decodes to more than the limit of {max} bytes"
            ));
        }
        Ok(out)
    }
}

/// Bytes a frame adds to the body it stores uncompressed: [`MAGIC`], zstd's magic, frame
/// header descriptor and content size, block header, checksum.
pub(crate) const STORED_FRAME_OVERHEAD: usize = MAGIC.len() + ZSTD_MAGIC.len() + 1 + 4 + 3 + 4;

/// Appends [`MAGIC`] and a zstd frame holding `body` in one raw block (RFC 8878 §3.1.1): a
/// single-segment frame header declaring the 4-byte content size and a content checksum, the
/// block, and the low 32 bits of the body's XXH64. `body` must be under [`STORED_BELOW_BYTES`]
/// (one block holds at most 128 KiB).
fn store_frame_into(body: &[u8], out: &mut Vec<u8>) {
    debug_assert!(body.len() < STORED_BELOW_BYTES);
    // Frame_Header_Descriptor: content size in 4 bytes (flag 2), single segment, checksum.
    const DESCRIPTOR: u8 = (2 << 6) | (1 << 5) | (1 << 2);
    let len = body.len() as u32;
    // Block_Header: last block, type Raw (0), size in the upper 21 bits.
    let block_header = (len << 3) | 1;
    out.reserve(STORED_FRAME_OVERHEAD + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&ZSTD_MAGIC);
    out.push(DESCRIPTOR);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&block_header.to_le_bytes()[..3]);
    out.extend_from_slice(body);
    let checksum = xxhash_rust::xxh64::xxh64(body, 0) as u32;
    out.extend_from_slice(&checksum.to_le_bytes());
}

fn encode_frame_into(body: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    if body.len() < STORED_BELOW_BYTES {
        store_frame_into(body, out);
        return Ok(());
    }
    thread_local! {
        // A compression context per thread: creating one per body was a tenth of ingest CPU.
        static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match &mut *slot {
            Some(compressor) => compressor,
            empty => {
                let mut compressor = zstd::bulk::Compressor::new(LEVEL)?;
                compressor.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))?;
                compressor.set_parameter(zstd::stream::raw::CParameter::ContentSizeFlag(true))?;
                empty.insert(compressor)
            }
        };
        let start = out.len();
        let data = start + MAGIC.len();
        out.resize(data + zstd::zstd_safe::compress_bound(body.len()), 0);
        out[start..data].copy_from_slice(&MAGIC);
        match compressor.compress_to_buffer(body, &mut out[data..]) {
            Ok(written) => {
                out.truncate(data + written);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    })
}

/// [`Codec::encode`] with the default codec.
pub fn encode(body: &[u8]) -> Result<Vec<u8>, BlobError> {
    Codec::default().encode(body)
}

/// [`Codec::decode`] with the default codec (at most [`DEFAULT_MAX_DECODED_BYTES`]).
pub fn decode(key: &str, stored: &[u8]) -> Result<Bytes, BlobError> {
    Codec::default().decode(key, stored)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    /// Bytes that zstd cannot shrink much (a xorshift stream).
    pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    /// A log-like JSON body of about `len` bytes that compresses well.
    pub(crate) fn json_body(len: usize) -> Vec<u8> {
        let mut out = b"{\"messages\":[".to_vec();
        let mut i = 0u64;
        while out.len() < len {
            out.extend_from_slice(
                format!("{{\"role\":\"user\",\"content\":\"Tell me about request number {i}\"}},")
                    .as_bytes(),
            );
            i += 1;
        }
        out.extend_from_slice(b"{}]}");
        out
    }

    fn corrupt_reason(result: Result<Bytes, BlobError>) -> String {
        match result {
            Err(BlobError::Corrupt { key, reason }) => {
                assert_eq!(key, "k");
                reason
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn round_trips() {
        for body in [
            Vec::new(),
            b"{}".to_vec(),
            noise(100_000, 7),
            json_body(300_000),
        ] {
            let stored = encode(&body).unwrap();
            assert!(stored.starts_with(&MAGIC));
            assert_eq!(decode("k", &stored).unwrap(), body);
        }
    }

    #[test]
    fn small_bodies_are_stored_in_frames_any_zstd_decoder_reads() {
        for len in [0, 1, 200, STORED_BELOW_BYTES - 1] {
            let body = json_body(len)[..len].to_vec();
            let stored = encode(&body).unwrap();
            // The header, 9 bytes of frame header, 3 of block header, the body, a checksum.
            assert_eq!(stored.len(), MAGIC.len() + 9 + 3 + len + 4, "{len}");
            assert_eq!(decode("k", &stored).unwrap(), body);
            let frame = &stored[MAGIC.len()..];
            assert_eq!(zstd::stream::decode_all(frame).unwrap(), body);
            assert_eq!(
                zstd::zstd_safe::get_frame_content_size(frame).ok(),
                Some(Some(len as u64))
            );
        }
        // At the threshold bodies are compressed again.
        let body = json_body(STORED_BELOW_BYTES)[..STORED_BELOW_BYTES].to_vec();
        assert!(encode(&body).unwrap().len() < body.len());
    }

    #[test]
    fn damaged_stored_frames_are_corrupt() {
        let stored = encode(b"{\"model\":\"gpt-4o-mini\",\"n\":1}").unwrap();
        for at in MAGIC.len()..stored.len() {
            let mut flipped = stored.clone();
            flipped[at] ^= 0x01;
            corrupt_reason(decode("k", &flipped));
        }
        corrupt_reason(decode("k", &stored[..stored.len() - 1]));
        corrupt_reason(decode("k", &vec![0; stored.len()]));
    }

    #[test]
    fn json_shrinks_a_lot() {
        let body = json_body(1 << 20);
        let stored = encode(&body).unwrap();
        assert!(
            stored.len() * 10 < body.len(),
            "{} -> {}",
            body.len(),
            stored.len()
        );
    }

    #[test]
    fn stored_form_is_bounded() {
        let codec = Codec::new(1 << 20);
        let stored = codec.encode(&noise(1 << 20, 3)).unwrap();
        assert!(stored.len() <= codec.max_stored_bytes());
    }

    #[test]
    fn missing_header_is_corrupt() {
        let reason = corrupt_reason(decode("k", b"{\"not\":\"ours\"}"));
        assert!(reason.contains("AGB1"), "{reason}");
        corrupt_reason(decode("k", b""));
    }

    #[test]
    fn damaged_frames_are_corrupt() {
        let stored = encode(&json_body(10_000)).unwrap();
        // Truncated.
        corrupt_reason(decode("k", &stored[..stored.len() - 5]));
        // A flipped byte in the compressed data: the checksum or the decoder catches it.
        let mut flipped = stored.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x55;
        corrupt_reason(decode("k", &flipped));
        // Trailing garbage after the frame.
        let mut trailing = stored.clone();
        trailing.extend_from_slice(b"garbage!");
        corrupt_reason(decode("k", &trailing));
        // The header alone.
        corrupt_reason(decode("k", &MAGIC));
    }

    #[test]
    fn decoding_is_bounded() {
        let body = vec![b'a'; 2 << 20];
        let stored = encode(&body).unwrap();
        assert!(stored.len() < 1024, "a zip bomb in miniature");
        let small = Codec::new(1 << 20);
        let reason = corrupt_reason(small.decode("k", &stored));
        assert!(reason.contains("limit of 1048576 bytes"), "{reason}");
        // Exactly at the limit is fine.
        assert_eq!(
            Codec::new(2 << 20).decode("k", &stored).unwrap().len(),
            2 << 20
        );
    }

    #[test]
    fn frames_without_a_declared_size_are_bounded_while_decoding() {
        // A streamed frame does not declare its size; the limit must still hold.
        let mut stored = MAGIC.to_vec();
        let mut encoder = zstd::stream::write::Encoder::new(&mut stored, LEVEL).unwrap();
        for _ in 0..64 {
            encoder.write_all(&[b'z'; 32 * 1024]).unwrap();
        }
        encoder.finish().unwrap();
        let reason = corrupt_reason(Codec::new(1 << 20).decode("k", &stored));
        assert!(reason.contains("more than the limit"), "{reason}");
        assert_eq!(decode("k", &stored).unwrap().len(), 2 << 20);
    }

    #[tokio::test]
    async fn async_variants_match() {
        let codec = Codec::default();
        for body in [json_body(100), json_body(1 << 20)] {
            let stored = codec
                .encode_async("test", Bytes::from(body.clone()))
                .await
                .unwrap();
            let back = codec.decode_async("test", "k", stored).await.unwrap();
            assert_eq!(back, body);
        }
    }
}
