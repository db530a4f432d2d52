//! Deterministic token accounting and the reply text.
//!
//! A "token" is a whitespace-separated word. Prompt tokens are counted while
//! deserializing the request ([`Words`]), without building a JSON tree.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use http::HeaderMap;
use http::header::HeaderName;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The reply used when no `x-mock-reply` / `x-mock-chunks` header is given.
pub(crate) const DEFAULT_REPLY: &str = "Hello from the mock upstream.";

/// Largest accepted `x-mock-chunks` value.
const MAX_CHUNKS: u32 = 100_000;

const X_MOCK_REPLY: HeaderName = HeaderName::from_static("x-mock-reply");
const X_MOCK_CHUNKS: HeaderName = HeaderName::from_static("x-mock-chunks");

/// Number of whitespace-separated words in `text`.
pub(crate) fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The number of words in a piece of request text content.
///
/// Deserializes from a string (its words), an array (the sum of its
/// elements), an object (the sum over its `text`, `content` and `parts`
/// members, so OpenAI/Anthropic/Cohere messages and content parts as well as
/// Gemini contents are covered), a number (one token, as in token-id prompts)
/// and anything else (zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Words(pub(crate) u64);

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WordsVisitor)
    }
}

struct WordsVisitor;

/// Object members whose values hold text content.
#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Key {
    Text,
    Content,
    Parts,
    #[serde(other)]
    Other,
}

impl<'de> Visitor<'de> for WordsVisitor {
    type Value = Words;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("text content")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Words, E> {
        Ok(Words(count_words(v)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Words, E> {
        Ok(Words(0))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Words, E> {
        Ok(Words(1))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Words, E> {
        Ok(Words(1))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Words, E> {
        Ok(Words(1))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Words, E> {
        Ok(Words(0))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Words, A::Error> {
        let mut total = 0;
        while let Some(Words(n)) = seq.next_element()? {
            total += n;
        }
        Ok(Words(total))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Words, A::Error> {
        let mut total = 0;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Text | Key::Content | Key::Parts => total += map.next_value::<Words>()?.0,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Words(total))
    }
}

/// The assistant reply for one request, chosen by the `x-mock-reply` and
/// `x-mock-chunks` headers.
#[derive(Debug)]
pub(crate) struct Reply<'a> {
    text: Cow<'a, str>,
    words: u64,
}

impl<'a> Reply<'a> {
    /// Picks the reply from the request headers; errors name a bad header.
    pub(crate) fn from_headers(headers: &'a HeaderMap) -> Result<Self, String> {
        let text = if let Some(value) = headers.get(X_MOCK_CHUNKS) {
            let n: u32 = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|n| *n <= MAX_CHUNKS)
                .ok_or_else(|| format!("x-mock-chunks must be an integer in 0..={MAX_CHUNKS}"))?;
            let mut text = String::with_capacity(n as usize * 7);
            for i in 0..n {
                let sep = if i > 0 { " " } else { "" };
                write!(text, "{sep}tok{i}").expect("writing to a String cannot fail");
            }
            Cow::Owned(text)
        } else if let Some(value) = headers.get(X_MOCK_REPLY) {
            String::from_utf8_lossy(value.as_bytes())
        } else {
            Cow::Borrowed(DEFAULT_REPLY)
        };
        let words = count_words(&text);
        Ok(Self { text, words })
    }

    /// The whole reply text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The number of completion tokens (words) in the reply.
    pub(crate) fn tokens(&self) -> u64 {
        self.words
    }

    /// The reply split into one piece per word, each after the first keeping
    /// the whitespace before it, so the pieces concatenate to the reply.
    pub(crate) fn pieces(&self) -> impl Iterator<Item = &str> {
        let mut rest = self.text.trim_start();
        std::iter::from_fn(move || {
            let word_start = rest.len() - rest.trim_start().len();
            if word_start == rest.len() {
                return None;
            }
            let word_len = rest[word_start..]
                .find(char::is_whitespace)
                .unwrap_or(rest.len() - word_start);
            let (piece, tail) = rest.split_at(word_start + word_len);
            rest = tail;
            Some(piece)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn words(json: &str) -> u64 {
        serde_json::from_str::<Words>(json).expect("valid json").0
    }

    #[test]
    fn counts_words_in_strings_parts_and_messages() {
        assert_eq!(words(r#""one two  three""#), 3);
        assert_eq!(words("null"), 0);
        assert_eq!(
            words(
                r#"[{"role":"system","content":"be brief"},
                    {"role":"user","content":[{"type":"text","text":"hi there you"},
                                              {"type":"image_url","image_url":{"url":"x y z"}}]},
                    {"role":"assistant","content":null,"tool_calls":[{"id":"a b"}]}]"#
            ),
            5
        );
        assert_eq!(
            words(r#"[{"role":"user","parts":[{"text":"gemini says hi"}]}]"#),
            3
        );
        assert_eq!(words("[[1, 2, 3], [4]]"), 4);
    }

    #[test]
    fn reply_defaults_and_overrides() {
        let mut headers = HeaderMap::new();
        let reply = Reply::from_headers(&headers).expect("default");
        assert_eq!(reply.text(), DEFAULT_REPLY);
        assert_eq!(reply.tokens(), 5);

        headers.insert(X_MOCK_REPLY, HeaderValue::from_static("custom reply"));
        assert_eq!(
            Reply::from_headers(&headers).expect("reply").text(),
            "custom reply"
        );

        headers.insert(X_MOCK_CHUNKS, HeaderValue::from_static("3"));
        let reply = Reply::from_headers(&headers).expect("chunks");
        assert_eq!(reply.text(), "tok0 tok1 tok2");
        assert_eq!(reply.tokens(), 3);

        headers.insert(X_MOCK_CHUNKS, HeaderValue::from_static("many"));
        assert!(Reply::from_headers(&headers).is_err());
    }

    #[test]
    fn pieces_concatenate_to_the_reply() {
        let mut headers = HeaderMap::new();
        headers.insert(X_MOCK_REPLY, HeaderValue::from_static("  a bc\tdef  "));
        let reply = Reply::from_headers(&headers).expect("reply");
        let pieces: Vec<&str> = reply.pieces().collect();
        assert_eq!(pieces, ["a", " bc", "\tdef"]);
        assert_eq!(reply.tokens(), 3);

        headers.insert(X_MOCK_CHUNKS, HeaderValue::from_static("0"));
        let empty = Reply::from_headers(&headers).expect("reply");
        assert_eq!(empty.pieces().count(), 0);
    }
}
