//! Parameter parsing: the query string, path ids and JSON bodies, each failure naming what the
//! client sent.

use std::collections::HashMap;
use std::fmt::Display;
use std::ops::RangeInclusive;

use axum::extract::{FromRequestParts, Path};
use http::request::Parts;
use serde::de::DeserializeOwned;
use ulid::Ulid;

use crate::error::ApiError;

/// Default and largest page sizes (Cloudflare's).
pub(crate) const DEFAULT_PER_PAGE: u32 = 20;
/// Largest `per_page`.
pub(crate) const MAX_PER_PAGE: u32 = 50;

/// A value that can be read from one query parameter.
pub(crate) trait FromParam: Sized {
    /// Parse `text`, or say what is wrong with it.
    fn from_param(text: &str) -> Result<Self, String>;
}

impl FromParam for String {
    fn from_param(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

impl FromParam for bool {
    fn from_param(text: &str) -> Result<Self, String> {
        match text {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!("expected `true` or `false`, got `{other}`")),
        }
    }
}

impl FromParam for u32 {
    fn from_param(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|_| format!("expected a non-negative integer below 2^32, got `{text}`"))
    }
}

impl FromParam for f64 {
    fn from_param(text: &str) -> Result<Self, String> {
        text.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(|| format!("expected a number, got `{text}`"))
    }
}

/// The decoded query string, in order.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decode `a=1&b=2` (`+` and `%XX` decoded).
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        Self { pairs }
    }

    /// Every `(name, value)` pair, in order.
    pub(crate) fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The single value of `name`, parsed; an error names `name` if it is repeated or unparsable.
    pub(crate) fn one<T: FromParam>(&self, name: &str) -> Result<Option<T>, ApiError> {
        let mut values = self.pairs.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(ApiError::param(name, "given more than once"));
        }
        T::from_param(first)
            .map(Some)
            .map_err(|reason| ApiError::param(name, reason))
    }

    /// `name` parsed and checked against `range`, or `default` when absent.
    pub(crate) fn ranged<T>(
        &self,
        name: &str,
        default: T,
        range: RangeInclusive<T>,
    ) -> Result<T, ApiError>
    where
        T: FromParam + PartialOrd + Display + Copy,
    {
        let value = self.one(name)?.unwrap_or(default);
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ApiError::param(
                name,
                format!(
                    "must be between {} and {}, got {value}",
                    range.start(),
                    range.end()
                ),
            ))
        }
    }

    /// `page` (≥ 1) and `per_page` (1..=50, default 20). A page past the last one is not an
    /// error (it is empty), because the SDK's auto-pagination stops on the first empty page.
    pub(crate) fn pagination(&self) -> Result<(u32, u32), ApiError> {
        let per_page = self.ranged("per_page", DEFAULT_PER_PAGE, 1..=MAX_PER_PAGE)?;
        // The first row of the page, (page - 1) * per_page, must stay addressable in 32 bits.
        let max_page = u32::MAX / per_page;
        let page = self.ranged("page", 1, 1..=max_page)?;
        Ok((page, per_page))
    }

    /// Reject parameters other than `known` (and `filters.*`, checked by the filter parser),
    /// naming the first.
    pub(crate) fn deny_unknown(&self, known: &[&str]) -> Result<(), ApiError> {
        let unknown = self.pairs.iter().map(|(n, _)| n).find(|n| {
            !known.contains(&n.as_str()) && !n.starts_with(crate::filters::FILTERS_PREFIX)
        });
        match unknown {
            Some(name) => Err(ApiError::param(name.as_str(), "unknown parameter")),
            None => Ok(()),
        }
    }
}

/// Account, gateway and log ids from the route, validated.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `{account_id}`.
    pub account: String,
    gateway: Option<String>,
    log: Option<Ulid>,
}

impl Target {
    /// `{gateway_id}`; routes without it never call this.
    pub(crate) fn gateway(&self) -> Result<&str, ApiError> {
        self.gateway
            .as_deref()
            .ok_or_else(|| ApiError::Internal("route has no gateway id".into()))
    }

    /// `{id}` of a log; routes without it never call this.
    pub(crate) fn log(&self) -> Result<Ulid, ApiError> {
        self.log
            .ok_or_else(|| ApiError::Internal("route has no log id".into()))
    }
}

/// Longest account or gateway id.
const MAX_ID_LEN: usize = 64;

/// Account ids: what the edge accepts in `/v1/{account}/...`.
pub(crate) fn check_account_id(id: &str) -> Result<(), String> {
    let ok = (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(())
        .ok_or_else(|| format!("`{id}` must be 1 to 64 characters of A-Z, a-z, 0-9, `-` and `_`"))
}

/// Gateway ids: `^[a-z0-9_-]{1,64}$`.
pub(crate) fn check_gateway_id(id: &str) -> Result<(), String> {
    let ok = (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    ok.then_some(())
        .ok_or_else(|| format!("`{id}` must match ^[a-z0-9_-]{{1,64}}$"))
}

/// A log id: a ULID in its 26-character text form.
pub(crate) fn parse_log_id(id: &str) -> Result<Ulid, String> {
    Ulid::from_string(id).map_err(|_| format!("`{id}` is not a log id (a 26-character ULID)"))
}

impl<S: Send + Sync> FromRequestParts<S> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(mut ids) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::param("path", e.body_text()))?;
        let account = ids
            .remove("account_id")
            .ok_or_else(|| ApiError::Internal("route has no account id".into()))?;
        check_account_id(&account).map_err(|r| ApiError::param("account_id", r))?;
        let gateway = ids.remove("gateway_id");
        if let Some(g) = &gateway {
            check_gateway_id(g).map_err(|r| ApiError::param("gateway_id", r))?;
        }
        let log = ids
            .remove("id")
            .map(|id| parse_log_id(&id).map_err(|r| ApiError::param("id", r)))
            .transpose()?;
        Ok(Self {
            account,
            gateway,
            log,
        })
    }
}

/// Deserialize a JSON body; errors name the offending field (`cache_ttl`, `metadata.user`).
pub(crate) fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        ApiError::body(field, e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Params {
        Params::parse(Some(q))
    }

    fn named(err: ApiError) -> String {
        match err {
            ApiError::InvalidParam { name, .. } => name,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn pagination_defaults_and_ranges() {
        assert_eq!(params("").pagination().unwrap(), (1, 20));
        assert_eq!(params("page=3&per_page=50").pagination().unwrap(), (3, 50));
        assert_eq!(named(params("page=0").pagination().unwrap_err()), "page");
        assert_eq!(named(params("page=-1").pagination().unwrap_err()), "page");
        assert_eq!(named(params("page=x").pagination().unwrap_err()), "page");
        assert_eq!(
            named(params("per_page=51").pagination().unwrap_err()),
            "per_page"
        );
        assert_eq!(
            named(params("per_page=0").pagination().unwrap_err()),
            "per_page"
        );
        assert_eq!(
            named(params("page=1&page=2").pagination().unwrap_err()),
            "page"
        );
        let max = u32::MAX / 50;
        assert!(
            params(&format!("per_page=50&page={max}"))
                .pagination()
                .is_ok()
        );
        let over = max + 1;
        assert_eq!(
            named(
                params(&format!("per_page=50&page={over}"))
                    .pagination()
                    .unwrap_err()
            ),
            "page"
        );
    }

    #[test]
    fn unknown_parameters_are_named() {
        let p = params("limit=1&filters.key=model&filters.value=x&model=y");
        assert_eq!(
            named(p.deny_unknown(&["limit", "filters"]).unwrap_err()),
            "model"
        );
        assert!(
            params("filters.key=a&limit=2")
                .deny_unknown(&["limit", "filters"])
                .is_ok()
        );
        assert_eq!(
            named(params("filtersx=1").deny_unknown(&["filters"]).unwrap_err()),
            "filtersx"
        );
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_gateway_id("my_gw-1").is_ok());
        assert!(check_gateway_id("My").is_err());
        assert!(check_gateway_id("").is_err());
        assert!(check_gateway_id(&"a".repeat(65)).is_err());
        assert!(check_account_id("Acc_1").is_ok());
        assert!(check_account_id("a.b").is_err());
        assert!(parse_log_id("01HZX3Q7Z9T8Y6V5W4R3E2D1C0").is_ok());
        assert!(parse_log_id("nope").is_err());
    }

    #[test]
    fn body_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        struct B {
            #[allow(dead_code)]
            n: u32,
        }
        match json_body::<B>(br#"{"n": -1}"#).unwrap_err() {
            ApiError::InvalidBody { field, .. } => assert_eq!(field, "n"),
            other => panic!("{other:?}"),
        }
        match json_body::<B>(b"{}").unwrap_err() {
            ApiError::InvalidBody { field, reason } => {
                assert_eq!(field, "");
                assert!(reason.contains("missing field `n`"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
