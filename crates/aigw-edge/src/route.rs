//! Parsing `/v1/{account}/{gateway}/{provider}/{path...}`.

use crate::error::EdgeError;

/// The gateway coordinates of a provider request, borrowed from the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayPath<'a> {
    /// Account id.
    pub account: &'a str,
    /// Gateway id.
    pub gateway: &'a str,
    /// Provider slug.
    pub provider: &'a str,
    /// The rest of the path, starting with `/`, byte-for-byte as received.
    pub rest: &'a str,
}

/// Longest account or gateway id accepted.
const MAX_ID_LEN: usize = 64;

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Split a request path into its gateway coordinates.
pub fn parse_gateway_path(path: &str) -> Result<GatewayPath<'_>, EdgeError> {
    let malformed = |why: &str| {
        EdgeError::MalformedPath(format!(
            "{why} (expected /v1/{{account_id}}/{{gateway_id}}/{{provider}}/{{path}})"
        ))
    };
    let rest = path
        .strip_prefix("/v1/")
        .ok_or_else(|| malformed("path must start with /v1/"))?;
    let mut parts = rest.splitn(4, '/');
    let account = parts.next().unwrap_or_default();
    let gateway = parts.next().unwrap_or_default();
    let provider = parts.next().unwrap_or_default();
    let upstream = parts.next();
    if !valid_id(account) {
        return Err(malformed(&format!("invalid account id `{account}`")));
    }
    if !valid_id(gateway) {
        return Err(malformed(&format!("invalid gateway id `{gateway}`")));
    }
    if provider.is_empty() {
        return Err(malformed("missing provider"));
    }
    let Some(upstream) = upstream.filter(|p| !p.is_empty()) else {
        return Err(malformed(&format!(
            "missing upstream path after provider `{provider}`"
        )));
    };
    // `upstream` starts right after the provider's slash; keep that slash.
    let rest_start = path.len() - upstream.len() - 1;
    Ok(GatewayPath {
        account,
        gateway,
        provider,
        rest: &path[rest_start..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_coordinates_and_keeps_the_rest_verbatim() {
        let p = parse_gateway_path("/v1/acct-1/default/openai/chat/completions%2F").unwrap();
        assert_eq!(
            p,
            GatewayPath {
                account: "acct-1",
                gateway: "default",
                provider: "openai",
                rest: "/chat/completions%2F"
            }
        );
        let p = parse_gateway_path("/v1/a/g/workers-ai/@cf/meta/llama").unwrap();
        assert_eq!(p.rest, "/@cf/meta/llama");
    }

    #[test]
    fn rejects_malformed_paths_with_a_reason() {
        for (path, needle) in [
            ("/v2/a/g/openai/x", "must start with /v1/"),
            ("/v1/a", "invalid gateway id ``"),
            ("/v1/a/g", "missing provider"),
            ("/v1/a/g/openai", "missing upstream path"),
            ("/v1/a/g/openai/", "missing upstream path"),
            ("/v1/a b/g/openai/x", "invalid account id"),
            ("/v1/a/g%20/openai/x", "invalid gateway id"),
        ] {
            let err = parse_gateway_path(path).unwrap_err().to_string();
            assert!(err.contains(needle), "{path}: {err}");
        }
    }
}
