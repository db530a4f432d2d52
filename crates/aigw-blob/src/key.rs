//! Which object keys are accepted.
//!
//! One rule set for every store, so a key that works on S3 also works on the filesystem and
//! cannot escape the store's root: 1 to [`MAX_KEY_LEN`] characters of `[A-Za-z0-9/_.-]`, split by
//! `/` into segments of at most [`MAX_SEGMENT_LEN`] characters that are neither empty (so no
//! leading, trailing or doubled `/`) nor `.` or `..`.

use crate::BlobError;

/// The longest accepted key, in bytes (all accepted characters are ASCII).
pub const MAX_KEY_LEN: usize = 512;

/// The longest accepted segment between two `/`: the usual file-name limit.
pub const MAX_SEGMENT_LEN: usize = 255;

/// Checks `key` against the rules above; anything else is [`BlobError::InvalidKey`].
pub fn validate_key(key: &str) -> Result<(), BlobError> {
    let chars_ok = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'.' | b'-'));
    let segments_ok = key
        .split('/')
        .all(|segment| segment.len() <= MAX_SEGMENT_LEN && !matches!(segment, "" | "." | ".."));
    if !key.is_empty() && key.len() <= MAX_KEY_LEN && chars_ok && segments_ok {
        return Ok(());
    }
    let key = match key.char_indices().nth(MAX_KEY_LEN) {
        Some((cut, _)) => format!("{}…", &key[..cut]),
        None => key.to_owned(),
    };
    Err(BlobError::InvalidKey { key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for key in [
            "a",
            "acct/gw/01HZX3/request",
            "a.b_c-D/9",
            ".hidden/x",
            "x/...",
            &["s".repeat(MAX_SEGMENT_LEN), "s".repeat(MAX_SEGMENT_LEN)].join("/"),
        ] {
            assert!(validate_key(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let too_long = ["s"; MAX_KEY_LEN / 2 + 1].join("/");
        let long_segment = "s".repeat(MAX_SEGMENT_LEN + 1);
        for key in [
            "",
            "/abs",
            "trailing/",
            "a//b",
            "..",
            "a/../b",
            "a/./b",
            ".",
            "with space",
            "back\\slash",
            "nul\0",
            "ünï",
            "a:b",
            "q?x",
            &too_long,
            &long_segment,
        ] {
            match validate_key(key) {
                Err(BlobError::InvalidKey { .. }) => {}
                other => panic!("{key:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn long_keys_are_cut_in_the_error() {
        let key = "é".repeat(10_000);
        let err = validate_key(&key).unwrap_err();
        let BlobError::InvalidKey { key: shown } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(shown.chars().count(), MAX_KEY_LEN + 1);
        assert!(shown.ends_with('…'));
        assert!(err.to_string().starts_with("invalid blob key `éé"));
    }

    #[test]
    fn error_escapes_control_characters() {
        let err = validate_key("a\nb").unwrap_err();
        assert!(err.to_string().contains("`a\\nb`"), "{err}");
    }
}
