//! Built-in pricing table and `cf-aig-custom-cost`.
//!
//! The table is `pricing.toml` at the root of this crate, compiled into the binary and parsed on
//! first use. See `docs/pricing.md` for the matching rules and how to update it.

use foldhash::HashMap;
use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The embedded table.
const BUILTIN_TOML: &str = include_str!("../pricing.toml");

/// Providers whose models may be priced with another provider's rows when they have none of
/// their own: Azure OpenAI serves OpenAI's models.
const SAME_MODELS_AS: &[(&str, &str)] = &[("azure-openai", "openai")];

/// OpenRouter model ids are `vendor/model`; the vendor's own rows price them.
const OPENROUTER_VENDORS: &[(&str, &str)] = &[
    ("openai", "openai"),
    ("anthropic", "anthropic"),
    ("google", "google-ai-studio"),
    ("mistralai", "mistral"),
    ("deepseek", "deepseek"),
    ("cohere", "cohere"),
];

/// USD per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// USD per input token.
    pub input_per_token: f64,
    /// USD per output token.
    pub output_per_token: f64,
}

impl Price {
    /// The cost in USD of `tokens_in` input and `tokens_out` output tokens; a missing side counts
    /// as 0 tokens, and the cost is `None` only when both are missing.
    pub fn cost(&self, tokens_in: Option<u64>, tokens_out: Option<u64>) -> Option<f64> {
        if tokens_in.is_none() && tokens_out.is_none() {
            return None;
        }
        let tokens_in = tokens_in.unwrap_or(0) as f64;
        let tokens_out = tokens_out.unwrap_or(0) as f64;
        Some(tokens_in * self.input_per_token + tokens_out * self.output_per_token)
    }
}

/// Prices per (provider, model).
///
/// Lookups are by provider slug (hash map), then by exact model id (hash map), then a scan of
/// that provider's rows, longest model id first; see [`PricingTable::lookup`].
#[derive(Debug, Default)]
pub struct PricingTable {
    providers: HashMap<Box<str>, Models>,
}

/// One provider's rows.
#[derive(Debug, Default)]
struct Models {
    /// Longest model id first.
    rows: Vec<Row>,
    /// Every row's price by its (lower-case) model id: most requests name a priced model
    /// exactly, and every log is priced, so they are found without a scan.
    exact: HashMap<Box<str>, Price>,
}

#[derive(Debug)]
struct Row {
    /// Lower case.
    model: Box<str>,
    price: Price,
}

/// Why a pricing table was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pricing table: {0}")]
pub struct PricingError(pub String);

/// `pricing.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[serde(default)]
    price: Vec<RowFile>,
}

/// One `[[price]]` of `pricing.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RowFile {
    provider: String,
    model: String,
    input_usd_per_mtok: f64,
    output_usd_per_mtok: f64,
}

impl PricingTable {
    /// The table compiled into the binary (`pricing.toml`), parsed on first use.
    pub fn builtin() -> &'static PricingTable {
        static TABLE: OnceLock<PricingTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            PricingTable::from_toml(BUILTIN_TOML)
                .expect("the embedded pricing.toml is valid (checked by the builtin_table_* tests)")
        })
    }

    /// Parse a table in the `pricing.toml` format: `[[price]]` rows of `provider`, `model`,
    /// `input_usd_per_mtok` and `output_usd_per_mtok` (USD per million tokens). Rejects unknown
    /// keys, empty or blank provider/model, negative or non-finite prices, and duplicate
    /// (provider, model) rows (model ids compare case-insensitively).
    pub fn from_toml(text: &str) -> Result<Self, PricingError> {
        let file: TableFile = toml::from_str(text).map_err(|e| PricingError(e.to_string()))?;
        let mut providers: HashMap<Box<str>, Models> = HashMap::default();
        for (i, row) in file.price.into_iter().enumerate() {
            let n = i + 1;
            let provider = row.provider.trim();
            let model = row.model.trim().to_ascii_lowercase();
            if provider.is_empty() || model.is_empty() {
                return Err(PricingError(format!(
                    "row {n}: provider and model must not be empty"
                )));
            }
            for (name, value) in [
                ("input_usd_per_mtok", row.input_usd_per_mtok),
                ("output_usd_per_mtok", row.output_usd_per_mtok),
            ] {
                if !value.is_finite() || value < 0.0 {
                    return Err(PricingError(format!(
                        "row {n} ({provider} {model}): {name} must be a non-negative number, got {value}"
                    )));
                }
            }
            let models = providers.entry(provider.into()).or_default();
            let price = Price {
                input_per_token: row.input_usd_per_mtok / 1e6,
                output_per_token: row.output_usd_per_mtok / 1e6,
            };
            if models.exact.insert(model.as_str().into(), price).is_some() {
                return Err(PricingError(format!(
                    "row {n}: duplicate price for {provider} {model}"
                )));
            }
            models.rows.push(Row {
                model: model.into(),
                price,
            });
        }
        for models in providers.values_mut() {
            // Longest first, so the first match of a scan is the longest (an exact match, if any).
            models.rows.sort_by(|a, b| {
                b.model
                    .len()
                    .cmp(&a.model.len())
                    .then_with(|| a.model.cmp(&b.model))
            });
        }
        Ok(Self { providers })
    }

    /// The price of `model` at `provider`, if known.
    ///
    /// Model ids compare ASCII case-insensitively. The exact row wins; otherwise the longest row
    /// whose model id is a prefix of `model` followed by `-`, `:` or `@` (`gpt-4o-2024-08-06` →
    /// `gpt-4o`, `gpt-4o-mini-2024-07-18` → `gpt-4o-mini`; `gpt-4.1` never matches `gpt-4`).
    ///
    /// Fallbacks when the provider has no matching row of its own: `azure-openai` uses the
    /// `openai` rows; `openrouter` ids `vendor/model` use the vendor's rows (`openai/gpt-4o` →
    /// `openai` `gpt-4o`; `anthropic/claude-3.5-sonnet` → `anthropic` `claude-3-5-sonnet`, as
    /// OpenRouter writes Claude versions with dots), and its `:free` variants cost 0.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<Price> {
        if let Some(price) = self.find(provider, model) {
            return Some(price);
        }
        if let Some((_, other)) = SAME_MODELS_AS.iter().find(|(p, _)| *p == provider) {
            return self.find(other, model);
        }
        if provider == "openrouter" {
            return self.openrouter(model);
        }
        None
    }

    /// The cost in USD of a request, if the model is priced and a token count is known
    /// (see [`Price::cost`]).
    pub fn cost(
        &self,
        provider: &str,
        model: &str,
        tokens_in: Option<u64>,
        tokens_out: Option<u64>,
    ) -> Option<f64> {
        self.lookup(provider, model)?.cost(tokens_in, tokens_out)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.providers.values().map(|m| m.rows.len()).sum()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    fn find(&self, provider: &str, model: &str) -> Option<Price> {
        let model = model.trim();
        let models = self.providers.get(provider)?;
        // Ids are stored in lower case; a model named in upper case is left to the scan.
        if let Some(price) = models.exact.get(model) {
            return Some(*price);
        }
        models
            .rows
            .iter()
            .find(|row| prices(row.model.as_bytes(), model.as_bytes()))
            .map(|row| row.price)
    }

    fn openrouter(&self, model: &str) -> Option<Price> {
        let model = model.trim();
        if model.ends_with(":free") {
            return Some(Price {
                input_per_token: 0.0,
                output_per_token: 0.0,
            });
        }
        let Some((vendor, name)) = model.split_once('/') else {
            return self.find("openai", model);
        };
        let (_, provider) = OPENROUTER_VENDORS
            .iter()
            .find(|(v, _)| v.eq_ignore_ascii_case(vendor))?;
        if *provider == "anthropic" && name.contains('.') {
            return self.find(provider, &name.replace('.', "-"));
        }
        self.find(provider, name)
    }
}

/// Whether the row for model id `row` (lower case) prices `model`: equal, or a prefix of it
/// followed by a version separator.
fn prices(row: &[u8], model: &[u8]) -> bool {
    match (model.get(..row.len()), model.get(row.len())) {
        (Some(head), next) => {
            head.eq_ignore_ascii_case(row) && matches!(next, None | Some(b'-' | b':' | b'@'))
        }
        (None, _) => false,
    }
}

/// A parsed `cf-aig-custom-cost` header.
///
/// The value is a JSON object, either `{"per_token_in": 0.000001, "per_token_out": 0.000002}`
/// (USD per token, both required) or `{"total_cost": 0.05}` (USD for the whole request). Numbers
/// must be finite and non-negative; other keys, duplicate keys and mixing the two forms are
/// rejected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CustomCost {
    /// Per-token prices overriding the table.
    PerToken(Price),
    /// A fixed total for the request.
    Total(f64),
}

/// Why a `cf-aig-custom-cost` header was rejected.
#[derive(Debug, thiserror::Error)]
#[error("invalid cf-aig-custom-cost: {0}")]
pub struct CustomCostError(pub String);

impl CustomCost {
    /// Parse the header value (see [`CustomCost`] for the format). The error says what was
    /// wrong, e.g. `per_token_in must be a non-negative number`.
    pub fn parse(value: &str) -> Result<Self, CustomCostError> {
        let fail = |msg: String| Err(CustomCostError(msg));
        let value = value.trim();
        if value.is_empty() {
            return fail(
                "empty value; expected {\"per_token_in\": <usd>, \"per_token_out\": <usd>} or {\"total_cost\": <usd>}"
                    .into(),
            );
        }
        let entries = match serde_json::from_str::<TopLevel>(value) {
            Err(e) => return fail(format!("not valid JSON ({e})")),
            Ok(TopLevel::Other(kind)) => {
                return fail(format!("expected a JSON object, got {kind}"));
            }
            Ok(TopLevel::Object(entries)) => entries,
        };
        let (mut per_in, mut per_out, mut total) = (None, None, None);
        for (key, value) in entries {
            let slot = match key.as_str() {
                "per_token_in" => &mut per_in,
                "per_token_out" => &mut per_out,
                "total_cost" => &mut total,
                _ => {
                    return fail(format!(
                        "unknown key {key:?} (expected per_token_in and per_token_out, or total_cost)"
                    ));
                }
            };
            if slot.is_some() {
                return fail(format!("duplicate key {key}"));
            }
            match value.as_f64() {
                // `+ 0.0` turns -0 into 0.
                Some(n) if n.is_finite() && n >= 0.0 => *slot = Some(n + 0.0),
                _ => return fail(format!("{key} must be a non-negative number")),
            }
        }
        match (per_in, per_out, total) {
            (None, None, Some(total)) => Ok(CustomCost::Total(total)),
            (Some(input_per_token), Some(output_per_token), None) => {
                Ok(CustomCost::PerToken(Price {
                    input_per_token,
                    output_per_token,
                }))
            }
            (_, _, Some(_)) => {
                fail("total_cost cannot be combined with per_token_in/per_token_out".into())
            }
            (Some(_), None, None) => fail("per_token_out is required with per_token_in".into()),
            (None, Some(_), None) => fail("per_token_in is required with per_token_out".into()),
            (None, None, None) => {
                fail("expected per_token_in and per_token_out, or total_cost".into())
            }
        }
    }

    /// The cost in USD of a request with the given token counts: the total as given, or the
    /// per-token prices applied as in [`Price::cost`] (`None` when both counts are missing).
    pub fn cost(&self, tokens_in: Option<u64>, tokens_out: Option<u64>) -> Option<f64> {
        match self {
            CustomCost::PerToken(price) => price.cost(tokens_in, tokens_out),
            CustomCost::Total(total) => Some(*total),
        }
    }
}

/// A header value's JSON: an object's entries in order (duplicates kept), or the kind of
/// non-object it was.
enum TopLevel {
    Object(Vec<(String, serde_json::Value)>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("null"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a boolean"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a string"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TopLevel::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(TopLevel::Object(entries))
            }
        }
        deserializer.deserialize_any(TopVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
    }

    fn per_mtok(provider: &str, model: &str) -> Option<(f64, f64)> {
        PricingTable::builtin()
            .lookup(provider, model)
            .map(|p| (p.input_per_token * 1e6, p.output_per_token * 1e6))
    }

    fn assert_per_mtok(provider: &str, model: &str, want: (f64, f64)) {
        let got =
            per_mtok(provider, model).unwrap_or_else(|| panic!("{provider} {model}: no price"));
        assert!(
            close(got.0, want.0) && close(got.1, want.1),
            "{provider} {model}: {got:?} != {want:?}"
        );
    }

    #[test]
    fn builtin_table_parses_and_is_sane() {
        let table = PricingTable::from_toml(BUILTIN_TOML).expect("embedded pricing.toml");
        assert!(table.len() >= 24, "{} rows", table.len());
        let file: TableFile = toml::from_str(BUILTIN_TOML).unwrap();
        assert_eq!(file.price.len(), table.len());
        for row in &file.price {
            for v in [row.input_usd_per_mtok, row.output_usd_per_mtok] {
                assert!(
                    v.is_finite() && v >= 0.0,
                    "{} {}: {v}",
                    row.provider,
                    row.model
                );
            }
            // Sanity: no list price here is above $100 per million tokens.
            assert!(row.input_usd_per_mtok <= 100.0 && row.output_usd_per_mtok <= 100.0);
            assert_eq!(
                row.model,
                row.model.to_ascii_lowercase(),
                "model ids are lower case"
            );
            // Every row prices itself.
            assert!(table.lookup(&row.provider, &row.model).is_some());
        }
        for provider in [
            "openai",
            "anthropic",
            "groq",
            "mistral",
            "google-ai-studio",
            "deepseek",
            "cohere",
            "workers-ai",
        ] {
            assert!(
                table.providers.contains_key(provider),
                "{provider} has no rows"
            );
        }
        assert_eq!(PricingTable::builtin().len(), table.len());
        assert!(!PricingTable::builtin().is_empty());
    }

    #[test]
    fn builtin_table_covers_the_main_models() {
        for (provider, model) in [
            ("openai", "gpt-4o"),
            ("openai", "gpt-4o-mini"),
            ("openai", "gpt-4.1"),
            ("openai", "gpt-4.1-mini"),
            ("openai", "gpt-4.1-nano"),
            ("openai", "o3"),
            ("openai", "o4-mini"),
            ("openai", "gpt-3.5-turbo"),
            ("openai", "text-embedding-3-small"),
            ("openai", "text-embedding-3-large"),
            ("openai", "text-embedding-ada-002"),
            ("anthropic", "claude-3-5-sonnet"),
            ("anthropic", "claude-3-5-haiku"),
            ("anthropic", "claude-3-7-sonnet"),
            ("anthropic", "claude-sonnet-4"),
            ("anthropic", "claude-opus-4"),
            ("anthropic", "claude-3-haiku"),
            ("anthropic", "claude-3-opus"),
            ("google-ai-studio", "gemini-1.5-flash"),
            ("google-ai-studio", "gemini-1.5-pro"),
            ("google-ai-studio", "gemini-2.0-flash"),
            ("google-ai-studio", "gemini-2.5-flash"),
            ("google-ai-studio", "gemini-2.5-pro"),
            ("workers-ai", "@cf/meta/llama-3.1-8b-instruct"),
        ] {
            assert!(
                PricingTable::builtin().lookup(provider, model).is_some(),
                "{provider} {model}"
            );
        }
    }

    #[test]
    fn exact_and_prefix_lookup() {
        assert_per_mtok("openai", "gpt-4o", (2.5, 10.0));
        assert_per_mtok("openai", "gpt-4o-mini", (0.15, 0.6));
        assert_per_mtok("openai", "gpt-4o-mini-2024-07-18", (0.15, 0.6));
        assert_per_mtok("openai", "gpt-4o-2024-08-06", (2.5, 10.0));
        assert_per_mtok("openai", "GPT-4o-Mini", (0.15, 0.6));
        assert_per_mtok("openai", "gpt-4.1-mini-2025-04-14", (0.4, 1.6));
        assert_per_mtok("openai", "gpt-4.1-2025-04-14", (2.0, 8.0));
        assert_per_mtok("openai", "gpt-4-turbo-2024-04-09", (10.0, 30.0));
        assert_per_mtok("openai", "gpt-4-0613", (30.0, 60.0));
        assert_per_mtok("openai", "o3-mini-2025-01-31", (1.1, 4.4));
        assert_per_mtok("openai", "o3-2025-04-16", (2.0, 8.0));
        assert_per_mtok("anthropic", "claude-3-5-sonnet-20241022", (3.0, 15.0));
        assert_per_mtok("anthropic", "claude-3-5-haiku-latest", (0.8, 4.0));
        assert_per_mtok("anthropic", "claude-opus-4-1-20250805", (15.0, 75.0));
        assert_per_mtok("anthropic", "claude-3-5-sonnet@20240620", (3.0, 15.0));
        assert_per_mtok("google-ai-studio", "gemini-1.5-flash-002", (0.075, 0.3));
        assert_per_mtok(
            "google-ai-studio",
            "gemini-1.5-flash-8b-001",
            (0.0375, 0.15),
        );
        assert_per_mtok(
            "google-ai-studio",
            "gemini-2.5-flash-preview-05-20",
            (0.3, 2.5),
        );
        assert_per_mtok(
            "google-ai-studio",
            "gemini-2.0-flash-lite-001",
            (0.075, 0.3),
        );
        assert_per_mtok("mistral", "mistral-large-latest", (2.0, 6.0));
        assert_per_mtok("cohere", "command-r-plus-08-2024", (2.5, 10.0));
        assert_per_mtok("cohere", "command-r-08-2024", (0.15, 0.6));
        assert_per_mtok("cohere", "command-r7b-12-2024", (0.0375, 0.15));
        assert_per_mtok(
            "workers-ai",
            "@cf/meta/llama-3.1-8b-instruct",
            (0.282, 0.827),
        );
        assert_per_mtok(
            "workers-ai",
            "@cf/meta/llama-3.1-8b-instruct-fp8-fast",
            (0.045, 0.384),
        );
        assert_per_mtok("deepseek", " deepseek-chat ", (0.27, 1.1));
    }

    #[test]
    fn prefix_needs_a_boundary() {
        // Not at a separator: `gpt-4` must not price `gpt-4.5-preview` or `gpt-4x`.
        assert_eq!(per_mtok("openai", "gpt-4x"), None);
        assert_eq!(per_mtok("openai", "gpt-4.5-preview"), None);
        assert_eq!(per_mtok("openai", "o3x"), None);
        assert_eq!(per_mtok("openai", "gpt"), None);
        assert_eq!(per_mtok("openai", ""), None);
        assert_eq!(per_mtok("openai", "-"), None);
        assert!(prices(b"a", b"a-b"));
        assert!(prices(b"a", b"a:b"));
        assert!(prices(b"a", b"A@b"));
        assert!(!prices(b"a", b"a.b"));
        assert!(!prices(b"a", b"ab"));
        assert!(!prices(b"ab", b"a"));
        // Multi-byte input never splits a char badly (bytes compare; no panic).
        assert_eq!(per_mtok("openai", "gpt-4o\u{e9}"), None);
        assert_eq!(
            per_mtok("openai", "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}"),
            None
        );
    }

    #[test]
    fn longest_prefix_wins_regardless_of_file_order() {
        let table = PricingTable::from_toml(
            r#"
            [[price]]
            provider = "p"
            model = "m"
            input_usd_per_mtok = 1.0
            output_usd_per_mtok = 1.0
            [[price]]
            provider = "p"
            model = "m-mini"
            input_usd_per_mtok = 2.0
            output_usd_per_mtok = 2.0
            [[price]]
            provider = "p"
            model = "m-mini-x"
            input_usd_per_mtok = 3.0
            output_usd_per_mtok = 3.0
            "#,
        )
        .unwrap();
        let input = |m: &str| table.lookup("p", m).map(|p| p.input_per_token * 1e6);
        assert_eq!(input("m"), Some(1.0));
        assert_eq!(input("m-2024"), Some(1.0));
        assert_eq!(input("m-mini"), Some(2.0));
        assert_eq!(input("m-mini-2024"), Some(2.0));
        assert_eq!(input("m-mini-x-1"), Some(3.0));
        assert_eq!(input("m-minix"), Some(1.0));
        assert_eq!(table.lookup("q", "m"), None);
    }

    #[test]
    fn unknown_provider_or_model() {
        assert_eq!(per_mtok("nope", "gpt-4o"), None);
        assert_eq!(per_mtok("openai", "claude-3-5-sonnet"), None);
        assert_eq!(per_mtok("groq", "gpt-4o"), None);
        assert_eq!(per_mtok("custom-acme", "gpt-4o"), None);
    }

    #[test]
    fn azure_falls_back_to_openai() {
        assert_per_mtok("azure-openai", "gpt-4o", (2.5, 10.0));
        assert_per_mtok("azure-openai", "gpt-4o-mini-2024-07-18", (0.15, 0.6));
        assert_eq!(per_mtok("azure-openai", "my-deployment"), None);
    }

    #[test]
    fn openrouter_uses_the_vendor_rows() {
        assert_per_mtok("openrouter", "openai/gpt-4o", (2.5, 10.0));
        assert_per_mtok("openrouter", "openai/gpt-4o-mini", (0.15, 0.6));
        assert_per_mtok("openrouter", "gpt-4o-mini", (0.15, 0.6));
        assert_per_mtok("openrouter", "anthropic/claude-3.5-sonnet", (3.0, 15.0));
        assert_per_mtok(
            "openrouter",
            "anthropic/claude-3.7-sonnet:thinking",
            (3.0, 15.0),
        );
        assert_per_mtok("openrouter", "anthropic/claude-sonnet-4", (3.0, 15.0));
        assert_per_mtok("openrouter", "google/gemini-2.5-pro", (1.25, 10.0));
        assert_per_mtok("openrouter", "mistralai/mistral-large", (2.0, 6.0));
        assert_per_mtok("openrouter", "deepseek/deepseek-chat:free", (0.0, 0.0));
        assert_eq!(
            per_mtok("openrouter", "meta-llama/llama-3.1-8b-instruct"),
            None
        );
        assert_eq!(per_mtok("openrouter", "openai/"), None);
        assert_eq!(per_mtok("openrouter", "/gpt-4o"), None);
    }

    #[test]
    fn price_cost_math() {
        let p = Price {
            input_per_token: 0.15 / 1e6,
            output_per_token: 0.60 / 1e6,
        };
        assert_eq!(p.cost(None, None), None);
        assert!(close(
            p.cost(Some(1_000_000), Some(1_000_000)).unwrap(),
            0.75
        ));
        assert!(close(p.cost(Some(1_000_000), None).unwrap(), 0.15));
        assert!(close(p.cost(None, Some(1_000_000)).unwrap(), 0.60));
        assert_eq!(p.cost(Some(0), Some(0)), Some(0.0));
        assert!(p.cost(Some(u64::MAX), Some(u64::MAX)).unwrap().is_finite());
        let t = PricingTable::builtin();
        assert!(close(
            t.cost("openai", "gpt-4o-2024-08-06", Some(1000), Some(500))
                .unwrap(),
            0.0075
        ));
        assert_eq!(t.cost("openai", "gpt-4o", None, None), None);
        assert_eq!(t.cost("openai", "unknown-model", Some(1), Some(1)), None);
        let embed = t
            .cost("openai", "text-embedding-3-small", Some(1_000_000), None)
            .unwrap();
        assert!(close(embed, 0.02));
    }

    #[test]
    fn bad_tables_are_rejected() {
        let row = |provider: &str, model: &str, input: &str, output: &str| {
            format!(
                "[[price]]\nprovider = \"{provider}\"\nmodel = \"{model}\"\ninput_usd_per_mtok = {input}\noutput_usd_per_mtok = {output}\n"
            )
        };
        for (text, needle) in [
            (
                row("p", "m", "-1.0", "1.0"),
                "input_usd_per_mtok must be a non-negative number",
            ),
            (
                row("p", "m", "1.0", "nan"),
                "output_usd_per_mtok must be a non-negative number",
            ),
            (row("p", "m", "inf", "1.0"), "input_usd_per_mtok"),
            (row("p", " ", "1.0", "1.0"), "must not be empty"),
            (row("", "m", "1.0", "1.0"), "must not be empty"),
            (
                row("p", "m", "1.0", "1.0") + &row("p", "M", "2.0", "2.0"),
                "duplicate price for p m",
            ),
            (row("p", "m", "\"1\"", "1.0"), "invalid type"),
            (
                row("p", "m", "1.0", "1.0") + "currency = \"EUR\"\n",
                "unknown field",
            ),
            ("[[price]]\nprovider = \"p\"\n".to_owned(), "missing field"),
            ("not toml at all [".to_owned(), ""),
        ] {
            let err = PricingTable::from_toml(&text).unwrap_err();
            assert!(
                err.to_string().contains(needle),
                "{err} (wanted {needle:?})"
            );
            assert!(err.to_string().starts_with("invalid pricing table: "));
        }
        assert!(PricingTable::from_toml("").unwrap().is_empty());
        // Integers are fine.
        assert!(PricingTable::from_toml(&row("p", "m", "1", "0")).is_ok());
    }

    // --- cf-aig-custom-cost -------------------------------------------------------------------

    #[test]
    fn custom_cost_per_token() {
        let c =
            CustomCost::parse(r#"{"per_token_in": 0.000001, "per_token_out": 0.000002}"#).unwrap();
        assert_eq!(
            c,
            CustomCost::PerToken(Price {
                input_per_token: 0.000001,
                output_per_token: 0.000002
            })
        );
        assert!(close(c.cost(Some(1000), Some(500)).unwrap(), 0.002));
        assert!(close(c.cost(Some(1000), None).unwrap(), 0.001));
        assert_eq!(c.cost(None, None), None);
        let c = CustomCost::parse(" {\"per_token_out\":0,\"per_token_in\":1e-6} ").unwrap();
        assert!(close(c.cost(Some(3), Some(7)).unwrap(), 3e-6));
    }

    #[test]
    fn custom_cost_total() {
        let c = CustomCost::parse(r#"{"total_cost": 0.05}"#).unwrap();
        assert_eq!(c, CustomCost::Total(0.05));
        assert_eq!(c.cost(None, None), Some(0.05));
        assert_eq!(c.cost(Some(10), Some(10)), Some(0.05));
        assert_eq!(
            CustomCost::parse(r#"{"total_cost": 0}"#).unwrap(),
            CustomCost::Total(0.0)
        );
        let neg_zero = CustomCost::parse(r#"{"total_cost": -0.0}"#)
            .unwrap()
            .cost(None, None)
            .unwrap();
        assert!(neg_zero.is_sign_positive());
    }

    #[test]
    fn custom_cost_errors_say_what_was_wrong() {
        for (value, needle) in [
            ("", "empty value"),
            ("   ", "empty value"),
            ("0.05", "expected a JSON object, got a number"),
            ("\"x\"", "expected a JSON object, got a string"),
            ("[1]", "expected a JSON object, got an array"),
            ("null", "expected a JSON object, got null"),
            ("true", "expected a JSON object, got a boolean"),
            ("{", "not valid JSON"),
            ("per_token_in=1", "not valid JSON"),
            (r#"{"total_cost": 1} x"#, "not valid JSON"),
            (r#"{"total_cost": 1e999}"#, "not valid JSON"),
            (
                "{}",
                "expected per_token_in and per_token_out, or total_cost",
            ),
            (
                r#"{"per_token_in": 1}"#,
                "per_token_out is required with per_token_in",
            ),
            (
                r#"{"per_token_out": 1}"#,
                "per_token_in is required with per_token_out",
            ),
            (
                r#"{"total_cost": 1, "per_token_in": 1}"#,
                "total_cost cannot be combined",
            ),
            (
                r#"{"per_token_in": 1, "per_token_out": 1, "total_cost": 1}"#,
                "total_cost cannot be combined",
            ),
            (
                r#"{"per_token_in": -1, "per_token_out": 1}"#,
                "per_token_in must be a non-negative number",
            ),
            (
                r#"{"per_token_in": 1, "per_token_out": "2"}"#,
                "per_token_out must be a non-negative number",
            ),
            (
                r#"{"total_cost": null}"#,
                "total_cost must be a non-negative number",
            ),
            (
                r#"{"total_cost": {"usd": 1}}"#,
                "total_cost must be a non-negative number",
            ),
            (
                r#"{"total_cost": -0.5}"#,
                "total_cost must be a non-negative number",
            ),
            (
                r#"{"total_cost": 1, "currency": "usd"}"#,
                "unknown key \"currency\"",
            ),
            (
                r#"{"total_cost": 1, "total_cost": 2}"#,
                "duplicate key total_cost",
            ),
        ] {
            let err = CustomCost::parse(value).unwrap_err().to_string();
            assert!(err.starts_with("invalid cf-aig-custom-cost: "), "{err}");
            assert!(err.contains(needle), "{value:?}: {err} (wanted {needle:?})");
        }
    }
}
