//! The provider catalogue: slugs, base URLs, and how an upstream URL is built.
//!
//! A base URL may contain two placeholders, filled per request:
//! - `{account_id}`: the account of the gateway path (Workers AI runs per account);
//! - `{path_segment}`: consumes the first segment of the upstream path (Azure OpenAI's resource
//!   name, which selects the host).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// How a provider's request and response bodies are shaped, for usage extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// OpenAI and the many OpenAI-compatible APIs (chat, completions, embeddings, responses).
    OpenAi,
    /// Anthropic messages.
    Anthropic,
    /// Cloudflare Workers AI `ai/run`.
    WorkersAi,
    /// Google AI Studio (Gemini) `generateContent`.
    GoogleAiStudio,
    /// Cohere chat (v1 and v2).
    Cohere,
    /// Bodies aigw does not interpret; usage is not extracted.
    Opaque,
}

/// A provider aigw can proxy to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// The slug in gateway paths (`openai`, `custom-foo`).
    pub slug: String,
    /// Base URL template the upstream path is appended to.
    pub base_url: String,
    /// Body format, for usage extraction.
    pub wire: WireFormat,
}

/// Built-in providers: slug, default base URL, wire format (DESIGN.md §2).
const BUILTIN: &[(&str, &str, WireFormat)] = &[
    ("openai", "https://api.openai.com/v1", WireFormat::OpenAi),
    (
        "anthropic",
        "https://api.anthropic.com",
        WireFormat::Anthropic,
    ),
    (
        "workers-ai",
        "https://api.cloudflare.com/client/v4/accounts/{account_id}/ai/run",
        WireFormat::WorkersAi,
    ),
    (
        "azure-openai",
        "https://{path_segment}.openai.azure.com/openai/deployments",
        WireFormat::OpenAi,
    ),
    (
        "google-ai-studio",
        "https://generativelanguage.googleapis.com",
        WireFormat::GoogleAiStudio,
    ),
    ("groq", "https://api.groq.com/openai/v1", WireFormat::OpenAi),
    ("mistral", "https://api.mistral.ai", WireFormat::OpenAi),
    ("cohere", "https://api.cohere.ai", WireFormat::Cohere),
    ("deepseek", "https://api.deepseek.com", WireFormat::OpenAi),
    ("grok", "https://api.x.ai", WireFormat::OpenAi),
    (
        "perplexity-ai",
        "https://api.perplexity.ai",
        WireFormat::OpenAi,
    ),
    (
        "openrouter",
        "https://openrouter.ai/api",
        WireFormat::OpenAi,
    ),
    ("cerebras", "https://api.cerebras.ai", WireFormat::OpenAi),
    (
        "huggingface",
        "https://api-inference.huggingface.co",
        WireFormat::OpenAi,
    ),
    ("replicate", "https://api.replicate.com", WireFormat::Opaque),
];

/// Prefix of user-defined provider slugs; they need a configured base URL.
pub const CUSTOM_PREFIX: &str = "custom-";

/// Why a provider override or an upstream target was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// A configured slug is neither built in nor `custom-*`.
    #[error("unknown provider `{0}` (built-in slugs: {list}, or custom-<name>)", list = builtin_slugs().collect::<Vec<_>>().join(", "))]
    UnknownSlug(String),
    /// A `custom-` slug has nothing after the prefix or contains characters outside `[a-z0-9-_]`.
    #[error("invalid custom provider slug `{0}`: use custom-<name> with [a-z0-9_-]")]
    BadCustomSlug(String),
    /// The base URL is not an absolute `http(s)://` URL with an ASCII host.
    #[error(
        "base_url `{url}` for provider `{slug}` must be an absolute http:// or https:// URL \
         (write an international host name in its punycode form, xn--…)"
    )]
    BadBaseUrl {
        /// Provider slug.
        slug: String,
        /// Offending URL.
        url: String,
    },
    /// The base URL needs `{path_segment}` but the request path has none.
    #[error("provider `{0}` needs a leading path segment (its base URL uses {{path_segment}})")]
    MissingPathSegment(String),
}

/// Slugs of the built-in providers, in catalogue order.
pub fn builtin_slugs() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(slug, _, _)| *slug)
}

/// Every provider the edge can route to, with configured base URLs applied.
#[derive(Debug, Clone)]
pub struct ProviderCatalog {
    providers: HashMap<String, Arc<Provider>>,
}

impl ProviderCatalog {
    /// The built-in catalogue with `overrides` (slug → base URL) applied. Overrides may name
    /// built-in slugs or add `custom-*` providers; anything else is an error.
    pub fn new<I, S>(overrides: I) -> Result<Self, CatalogError>
    where
        I: IntoIterator<Item = (S, S)>,
        S: Into<String>,
    {
        let mut providers: HashMap<String, Arc<Provider>> = BUILTIN
            .iter()
            .map(|(slug, base, wire)| {
                let provider = Provider {
                    slug: (*slug).to_owned(),
                    base_url: (*base).to_owned(),
                    wire: *wire,
                };
                ((*slug).to_owned(), Arc::new(provider))
            })
            .collect();
        for (slug, base_url) in overrides {
            let (slug, base_url) = (slug.into(), base_url.into());
            validate_base_url(&slug, &base_url)?;
            let wire = match providers.get(&slug) {
                Some(existing) => existing.wire,
                None => {
                    validate_custom_slug(&slug)?;
                    WireFormat::OpenAi
                }
            };
            let provider = Provider {
                slug: slug.clone(),
                base_url,
                wire,
            };
            providers.insert(slug, Arc::new(provider));
        }
        Ok(Self { providers })
    }

    /// The provider for `slug`, if routable.
    pub fn get(&self, slug: &str) -> Option<&Arc<Provider>> {
        self.providers.get(slug)
    }
}

fn validate_custom_slug(slug: &str) -> Result<(), CatalogError> {
    let Some(name) = slug.strip_prefix(CUSTOM_PREFIX) else {
        return Err(CatalogError::UnknownSlug(slug.to_owned()));
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(CatalogError::BadCustomSlug(slug.to_owned()))
    }
}

fn validate_base_url(slug: &str, base_url: &str) -> Result<(), CatalogError> {
    // The edge sends to what `http::Uri` parses, which takes no IDNA step: a host outside
    // ASCII would fail every request, so it fails here, at start, instead. The placeholders
    // are filled the way a request fills them.
    let filled = fill_placeholders(base_url, "account", "segment");
    let sendable = filled.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|host| !host.is_empty())
            && uri.query().is_none()
    });
    // `Uri` drops a fragment without a word; the request path would be cut there.
    if sendable && !base_url.contains('#') {
        Ok(())
    } else {
        Err(CatalogError::BadBaseUrl {
            slug: slug.to_owned(),
            url: base_url.to_owned(),
        })
    }
}

/// The `{account_id}` placeholder of a base URL.
const ACCOUNT_ID: &str = "{account_id}";
/// The `{path_segment}` placeholder of a base URL: the request path's first segment.
const PATH_SEGMENT: &str = "{path_segment}";

/// `base_url` with its placeholders filled; borrowed when it has none (most providers).
fn fill_placeholders<'a>(base_url: &'a str, account_id: &str, segment: &str) -> Cow<'a, str> {
    if base_url.contains('{') {
        Cow::Owned(
            base_url
                .replace(ACCOUNT_ID, account_id)
                .replace(PATH_SEGMENT, segment),
        )
    } else {
        Cow::Borrowed(base_url)
    }
}

/// Where one request goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// Full URL, query included.
    pub url: String,
    /// The path as recorded in the log (after any consumed segment, without the query).
    pub logged_path: String,
}

impl Provider {
    /// Build the upstream URL for `rest_path` (the path after the provider slug, starting with
    /// `/`, kept byte-for-byte) and the raw `query` string.
    pub fn target(
        &self,
        account_id: &str,
        rest_path: &str,
        query: Option<&str>,
    ) -> Result<UpstreamTarget, CatalogError> {
        let (segment, path) = if self.base_url.contains(PATH_SEGMENT) {
            let trimmed = rest_path.strip_prefix('/').unwrap_or(rest_path);
            let (segment, remainder) = match trimmed.find('/') {
                Some(i) => (&trimmed[..i], &trimmed[i..]),
                None => (trimmed, ""),
            };
            if segment.is_empty() {
                return Err(CatalogError::MissingPathSegment(self.slug.clone()));
            }
            (segment, remainder)
        } else {
            ("", rest_path)
        };
        let base = fill_placeholders(&self.base_url, account_id, segment);
        let mut url =
            String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        url.push_str(base.trim_end_matches('/'));
        url.push_str(path);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(q);
        }
        Ok(UpstreamTarget {
            url,
            logged_path: path.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> ProviderCatalog {
        ProviderCatalog::new([
            ("openai", "http://127.0.0.1:9/v1/"),
            ("custom-acme", "https://llm.acme.test/api"),
        ])
        .unwrap()
    }

    #[test]
    fn every_design_slug_is_built_in() {
        let cat = ProviderCatalog::new(Vec::<(String, String)>::new()).unwrap();
        for slug in [
            "openai",
            "anthropic",
            "workers-ai",
            "azure-openai",
            "google-ai-studio",
            "groq",
            "mistral",
            "cohere",
            "deepseek",
            "grok",
            "perplexity-ai",
            "openrouter",
            "cerebras",
            "huggingface",
            "replicate",
        ] {
            assert!(cat.get(slug).is_some(), "{slug} missing");
        }
        assert!(cat.get("custom-nope").is_none());
    }

    #[test]
    fn path_and_query_pass_through_unchanged() {
        let cat = catalog();
        let t = cat
            .get("openai")
            .unwrap()
            .target("acct", "/chat/completions%2Fx", Some("a=1&b=%20"))
            .unwrap();
        assert_eq!(
            t.url,
            "http://127.0.0.1:9/v1/chat/completions%2Fx?a=1&b=%20"
        );
        assert_eq!(t.logged_path, "/chat/completions%2Fx");
        let t = cat
            .get("custom-acme")
            .unwrap()
            .target("acct", "/v2/x", None)
            .unwrap();
        assert_eq!(t.url, "https://llm.acme.test/api/v2/x");
    }

    #[test]
    fn placeholders_are_filled() {
        let cat = catalog();
        let t = cat
            .get("workers-ai")
            .unwrap()
            .target("abc123", "/@cf/meta/llama-3.1-8b-instruct", None)
            .unwrap();
        assert_eq!(
            t.url,
            "https://api.cloudflare.com/client/v4/accounts/abc123/ai/run/@cf/meta/llama-3.1-8b-instruct"
        );
        let t = cat
            .get("azure-openai")
            .unwrap()
            .target(
                "a",
                "/myres/gpt4o/chat/completions",
                Some("api-version=2024-06-01"),
            )
            .unwrap();
        assert_eq!(
            t.url,
            "https://myres.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-06-01"
        );
        assert_eq!(t.logged_path, "/gpt4o/chat/completions");
        assert_eq!(
            cat.get("azure-openai").unwrap().target("a", "/", None),
            Err(CatalogError::MissingPathSegment("azure-openai".into()))
        );
    }

    #[test]
    fn bad_overrides_are_rejected_with_the_offending_value() {
        let err = ProviderCatalog::new([("nope", "http://x")]).unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
        let err = ProviderCatalog::new([("custom-", "http://x")]).unwrap_err();
        assert_eq!(err, CatalogError::BadCustomSlug("custom-".into()));
        let err = ProviderCatalog::new([("openai", "ftp://x")]).unwrap_err();
        assert!(err.to_string().contains("ftp://x"), "{err}");
        assert!(ProviderCatalog::new([("openai", "http:///v1")]).is_err());
        let err = ProviderCatalog::new([("openai", "https://bücher.example/v1")]).unwrap_err();
        assert!(err.to_string().contains("punycode"), "{err}");
        assert!(ProviderCatalog::new([("openai", "https://xn--bcher-kva.example/v1")]).is_ok());
        for unsendable in [
            "https://x/v1?key=1",
            "https://x/v1?",
            "https://x/v1#part",
            "https://x /v1",
            "https://",
            "x/v1",
        ] {
            assert!(
                ProviderCatalog::new([("openai", unsendable)]).is_err(),
                "{unsendable} was accepted"
            );
        }
        assert!(ProviderCatalog::new([("openai", "http://127.0.0.1:9/v1/")]).is_ok());
    }
}
