//! An incremental server-sent-events reader: bytes in, whole events out, whatever the chunking.

/// One event: its `event:` name, if any, and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub(crate) name: Option<String>,
    pub(crate) data: String,
}

/// Reads events from a byte stream fed in arbitrary pieces (an event, a line or a UTF-8
/// character may be split across pieces).
#[derive(Debug, Default)]
pub(crate) struct SseReader {
    pending: Vec<u8>,
    name: Option<String>,
    data: Option<String>,
}

impl SseReader {
    /// Takes in `bytes`; returns the events they complete.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(newline) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + newline;
            let line = self.pending[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&self.pending[start..end]);
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.line(&line, &mut events);
        }
        self.pending.drain(..start);
        events
    }

    /// The stream ended: returns the last event if it was not terminated by a blank line.
    pub(crate) fn finish(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            let line =
                String::from_utf8_lossy(rest.strip_suffix(b"\r").unwrap_or(&rest)).into_owned();
            self.line(&line, &mut events);
        }
        self.line("", &mut events);
        events
    }

    fn line(&mut self, line: &str, events: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let name = self.name.take();
            if let Some(data) = self.data.take() {
                events.push(SseEvent { name, data });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_at_once(input: &[u8]) -> Vec<SseEvent> {
        let mut r = SseReader::default();
        let mut events = r.feed(input);
        events.extend(r.finish());
        events
    }

    #[test]
    fn events_survive_any_split() {
        let input = "event: a\ndata: {\"x\":\"é\"}\n\n: comment\r\ndata: 1\r\ndata: 2\r\n\r\ndata: [DONE]\n\n".as_bytes();
        let expected = vec![
            SseEvent {
                name: Some("a".into()),
                data: "{\"x\":\"é\"}".into(),
            },
            SseEvent {
                name: None,
                data: "1\n2".into(),
            },
            SseEvent {
                name: None,
                data: "[DONE]".into(),
            },
        ];
        assert_eq!(all_at_once(input), expected);
        for split in 0..input.len() {
            let mut r = SseReader::default();
            let mut events = r.feed(&input[..split]);
            events.extend(r.feed(&input[split..]));
            events.extend(r.finish());
            assert_eq!(events, expected, "split at {split}");
        }
        let mut r = SseReader::default();
        let mut events = Vec::new();
        for b in input {
            events.extend(r.feed(std::slice::from_ref(b)));
        }
        assert_eq!(events, expected, "byte by byte");
    }

    #[test]
    fn an_unterminated_last_event_is_delivered_at_the_end() {
        assert_eq!(
            all_at_once(b"data: last"),
            [SseEvent {
                name: None,
                data: "last".into()
            }]
        );
        assert_eq!(all_at_once(b"event: ping\n\n"), []);
    }
}
