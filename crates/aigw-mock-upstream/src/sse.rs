//! Building streamed bodies: server-sent events, or a JSON array of chunks.

use bytes::Bytes;
use serde::Serialize;

/// How the streamed chunks are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `text/event-stream`: `event: NAME\n` (optional), `data: JSON\n\n`.
    Sse,
    /// `application/json`: `[JSON,\r\nJSON…]`, as Gemini streams without `alt=sse`.
    JsonArray,
}

/// Writes every chunk of a streamed response into one buffer, remembering
/// chunk boundaries so the body can be sent chunk by chunk without copying.
pub(crate) struct StreamWriter {
    framing: Framing,
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl StreamWriter {
    /// A writer expecting about `chunks` chunks.
    pub(crate) fn new(framing: Framing, chunks: usize) -> Self {
        Self {
            framing,
            buf: Vec::with_capacity(chunks * 192),
            ends: Vec::with_capacity(chunks + 1),
        }
    }

    /// The framing this writer produces.
    pub(crate) fn framing(&self) -> Framing {
        self.framing
    }

    /// Appends one chunk carrying `data`, with an SSE `event:` line when
    /// `event` is given.
    pub(crate) fn event<T: Serialize>(&mut self, event: Option<&str>, data: &T) {
        match self.framing {
            Framing::Sse => {
                if let Some(name) = event {
                    self.buf.extend_from_slice(b"event: ");
                    self.buf.extend_from_slice(name.as_bytes());
                    self.buf.push(b'\n');
                }
                self.buf.extend_from_slice(b"data: ");
                write_json(&mut self.buf, data);
                self.buf.extend_from_slice(b"\n\n");
            }
            Framing::JsonArray => {
                self.buf
                    .extend_from_slice(if self.ends.is_empty() { b"[" } else { b",\r\n" });
                write_json(&mut self.buf, data);
            }
        }
        self.ends.push(self.buf.len());
    }

    /// Appends an unnamed data chunk.
    pub(crate) fn data<T: Serialize>(&mut self, data: &T) {
        self.event(None, data);
    }

    /// Appends the OpenAI-style terminator `data: [DONE]`.
    pub(crate) fn done(&mut self) {
        self.buf.extend_from_slice(b"data: [DONE]\n\n");
        self.ends.push(self.buf.len());
    }

    /// The chunks written so far (closing the array for [`Framing::JsonArray`]).
    pub(crate) fn finish(mut self) -> Vec<Bytes> {
        if self.framing == Framing::JsonArray {
            self.buf
                .extend_from_slice(if self.ends.is_empty() { b"[]" } else { b"]" });
            self.ends.push(self.buf.len());
        }
        let all = Bytes::from(self.buf);
        let mut chunks = Vec::with_capacity(self.ends.len());
        let mut start = 0;
        for end in self.ends {
            chunks.push(all.slice(start..end));
            start = end;
        }
        chunks
    }
}

/// Serializes `value` as JSON onto `buf`.
pub(crate) fn write_json<T: Serialize>(buf: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(buf, value)
        .expect("mock response types always serialize (string keys, no failing impls)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_chunks_are_split_per_event() {
        let mut w = StreamWriter::new(Framing::Sse, 3);
        w.event(Some("ping"), &serde_json::json!({"type": "ping"}));
        w.data(&1);
        w.done();
        let chunks = w.finish();
        assert_eq!(
            chunks,
            [
                "event: ping\ndata: {\"type\":\"ping\"}\n\n",
                "data: 1\n\n",
                "data: [DONE]\n\n"
            ]
        );
    }

    #[test]
    fn json_array_framing_forms_one_array() {
        let mut w = StreamWriter::new(Framing::JsonArray, 2);
        w.data(&1);
        w.data(&2);
        let joined: Vec<u8> = w.finish().concat();
        let parsed: Vec<u32> = serde_json::from_slice(&joined).expect("a JSON array");
        assert_eq!(parsed, [1, 2]);
        let empty = StreamWriter::new(Framing::JsonArray, 0).finish().concat();
        assert_eq!(empty, b"[]");
    }
}
