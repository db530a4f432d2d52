//! A response body copied as it is relayed, without the slack of a doubling buffer.

use bytes::{Bytes, BytesMut};

/// Capacity of the first block: enough for a small JSON response in one.
const FIRST_BLOCK: usize = 1024;
/// Smallest later block; later blocks are also at least a quarter of what is held, so a
/// large body takes few blocks and the slack stays under a fifth of it.
const MIN_BLOCK: usize = 2048;

/// A body captured chunk by chunk into blocks, joined once when the exchange is over.
///
/// A buffer that doubles as it grows holds up to twice what it has taken, and a stream's
/// capture lives as long as the stream: with a thousand streams open that slack was the
/// largest part of logging's memory. Blocks are filled in turn instead (each copy is needed
/// anyway: a received chunk is a view into the connection's read buffer, which it would pin).
#[derive(Debug, Default)]
pub struct CapturedBody {
    full: Vec<Bytes>,
    current: BytesMut,
    len: usize,
}

impl CapturedBody {
    /// Bytes captured.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append a copy of `data`.
    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.current.len() == self.current.capacity() {
                let capacity = if self.len == 0 {
                    data.len().max(FIRST_BLOCK)
                } else {
                    (self.len / 4).max(MIN_BLOCK)
                };
                let full = std::mem::replace(&mut self.current, BytesMut::with_capacity(capacity));
                if !full.is_empty() {
                    self.full.push(full.freeze());
                }
            }
            let n = (self.current.capacity() - self.current.len()).min(data.len());
            self.current.extend_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
        }
    }

    /// The whole body, contiguous.
    pub fn join(self) -> Bytes {
        if self.full.is_empty() {
            return self.current.freeze();
        }
        let mut out = BytesMut::with_capacity(self.len);
        for block in &self.full {
            out.extend_from_slice(block);
        }
        out.extend_from_slice(&self.current);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_joined_in_order_with_little_slack() {
        let mut body = CapturedBody::default();
        let mut expected = Vec::new();
        for n in 0..500u32 {
            let chunk = format!("data: {{\"n\":{n}}}\n\n").repeat(1 + (n % 7) as usize);
            body.push(chunk.as_bytes());
            expected.extend_from_slice(chunk.as_bytes());
        }
        assert_eq!(body.len(), expected.len());
        let held: usize = body.full.iter().map(Bytes::len).sum::<usize>() + body.current.capacity();
        assert!(
            held <= expected.len() + expected.len() / 4 + MIN_BLOCK,
            "held {held} for {}",
            expected.len()
        );
        assert_eq!(body.join(), expected);
    }

    #[test]
    fn a_small_body_is_one_block() {
        let mut body = CapturedBody::default();
        assert!(body.is_empty());
        body.push(b"{\"ok\":true}");
        body.push(b"");
        assert_eq!(body.full.len(), 0);
        assert_eq!(body.join(), "{\"ok\":true}");
        assert_eq!(CapturedBody::default().join(), "");
    }
}
