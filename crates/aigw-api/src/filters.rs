//! Log selection: `filters`, the flat legacy parameters, `search` and ordering, translated into
//! the shard's [`Filter`]s and [`OrderBy`].
//!
//! # How `filters` arrives
//!
//! The Python SDK encodes `filters=[{"key": "model", "operator": "eq", "value": ["a"]}, ...]`
//! with dotted names and repeated values, and httpx then lists all pairs of one name together:
//! `filters.key=model&filters.key=cost&filters.operator=eq&filters.operator=gt&filters.value=a&filters.value=0.5`.
//! The i-th key pairs with the i-th operator; the values can be shared out only when there is
//! one per filter (or a single filter), otherwise the request is refused as ambiguous (a `None`
//! value is dropped by the encoder and cannot be sent this way). Interleaved pairs
//! (`key op value value key op value`, as other encoders send them) are grouped by position.
//! A single `filters=<JSON array of {key, operator, value}>` parameter is accepted as well;
//! there values keep their JSON types and `null` is allowed with `eq` / `neq`.

use aigw_proto::shard::{Filter, FilterOperator, FilterValue, OrderBy, filter_value::Kind as Fv};
use serde_json::Value;

use crate::error::ApiError;
use crate::params::{FromParam, Params, parse_log_id};
use crate::timefmt::parse_ms;

/// Names starting with this belong to the SDK encoding of `filters`.
pub(crate) const FILTERS_PREFIX: &str = "filters.";
const FILTERS: &str = "filters";

/// What a filter key holds, which decides its operators and how values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A log id: ULID text.
    Id,
    /// Free text.
    Text,
    /// A metadata value: text, number or boolean.
    MetaValue,
    /// `true` / `false`.
    Bool,
    /// A whole number (counts, milliseconds, status codes).
    Int,
    /// A real number (USD).
    Float,
    /// -1, 0 or 1.
    Feedback,
    /// A date-time: RFC 3339 text (or epoch milliseconds in JSON), sent as epoch milliseconds.
    Time,
}

impl Kind {
    fn operators(self) -> &'static [FilterOperator] {
        use FilterOperator::*;
        match self {
            Kind::Id | Kind::Bool => &[Eq, Neq],
            Kind::Text | Kind::MetaValue => &[Eq, Neq, Contains],
            Kind::Int | Kind::Float | Kind::Feedback | Kind::Time => &[Eq, Neq, Lt, Gt],
        }
    }
}

/// Every filter key the shard evaluates, with its kind: the SDK's list minus the three below,
/// plus `status_code`.
const KEYS: &[(&str, Kind)] = &[
    ("id", Kind::Id),
    ("created_at", Kind::Time),
    ("request_content_type", Kind::Text),
    ("response_content_type", Kind::Text),
    ("request_type", Kind::Text),
    ("success", Kind::Bool),
    ("cached", Kind::Bool),
    ("provider", Kind::Text),
    ("model", Kind::Text),
    ("model_type", Kind::Text),
    ("cost", Kind::Float),
    ("tokens", Kind::Int),
    ("tokens_in", Kind::Int),
    ("tokens_out", Kind::Int),
    ("duration", Kind::Int),
    ("feedback", Kind::Feedback),
    ("event_id", Kind::Text),
    ("metadata.key", Kind::Text),
    ("metadata.value", Kind::MetaValue),
    ("authentication", Kind::Bool),
    ("user_agent", Kind::Text),
    ("status_code", Kind::Int),
];

/// Keys the SDK offers for features aigw does not have, so no log records them.
const NOT_RECORDED: &[&str] = &["wholesale", "compatibilityMode", "dlp_action"];

fn key_kind(key: &str) -> Result<Kind, String> {
    if let Some((_, kind)) = KEYS.iter().find(|(k, _)| *k == key) {
        return Ok(*kind);
    }
    if NOT_RECORDED.contains(&key) {
        return Err(format!("`{key}` is not recorded by aigw"));
    }
    let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    Err(format!("unknown key `{key}` (known: {})", known.join(", ")))
}

fn operator_name(op: FilterOperator) -> &'static str {
    match op {
        FilterOperator::Eq => "eq",
        FilterOperator::Neq => "neq",
        FilterOperator::Contains => "contains",
        FilterOperator::Lt => "lt",
        FilterOperator::Gt => "gt",
    }
}

fn parse_operator(text: &str) -> Result<FilterOperator, String> {
    use FilterOperator::*;
    [Eq, Neq, Contains, Lt, Gt]
        .into_iter()
        .find(|op| operator_name(*op) == text)
        .ok_or_else(|| format!("unknown operator `{text}` (use eq, neq, contains, lt or gt)"))
}

/// Read one value for a key of `kind` used with `op`. Query-string values arrive as JSON strings.
fn typed_value(kind: Kind, op: FilterOperator, raw: &Value) -> Result<FilterValue, String> {
    let kind_value = match (kind, raw) {
        (_, Value::Null) if matches!(op, FilterOperator::Eq | FilterOperator::Neq) => {
            Fv::Null(true)
        }
        (_, Value::Null) => {
            return Err(format!("null cannot be used with `{}`", operator_name(op)));
        }
        (Kind::Id, Value::String(s)) => Fv::Text(parse_log_id(s)?.to_string()),
        (Kind::Text | Kind::MetaValue, Value::String(s)) => Fv::Text(s.clone()),
        (Kind::MetaValue, Value::Bool(b)) | (Kind::Bool, Value::Bool(b)) => Fv::Flag(*b),
        (Kind::Bool, Value::String(s)) => Fv::Flag(bool::from_param(s)?),
        (Kind::Time, Value::String(s)) => Fv::Number(parse_ms(s)? as f64),
        (Kind::MetaValue | Kind::Int | Kind::Float | Kind::Feedback | Kind::Time, v) => {
            let n = match v {
                Value::Number(n) => n.as_f64().filter(|n| n.is_finite()),
                Value::String(s) => f64::from_param(s).ok(),
                _ => None,
            }
            .ok_or_else(|| format!("expected a number, got {v}"))?;
            if kind == Kind::Feedback && ![-1.0, 0.0, 1.0].contains(&n) {
                return Err(format!("feedback is -1, 0 or 1, got {n}"));
            }
            Fv::Number(n)
        }
        (_, v) => return Err(format!("expected {}, got {v}", expected(kind))),
    };
    Ok(FilterValue {
        kind: Some(kind_value),
    })
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Id => "a log id",
        Kind::Text => "a string",
        Kind::Bool => "true or false",
        _ => "a number",
    }
}

/// One filter as the client wrote it, before validation.
#[derive(Debug, Default)]
struct RawFilter {
    key: Option<String>,
    operator: Option<String>,
    values: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Key,
    Operator,
    Value,
}

/// Group the dotted `filters.key` / `filters.operator` / `filters.value` pairs into filters.
fn group_dotted(params: &Params) -> Result<Vec<RawFilter>, ApiError> {
    let mut seq = Vec::new();
    for (name, value) in params.pairs() {
        let Some(sub) = name.strip_prefix(FILTERS_PREFIX) else {
            continue;
        };
        let field = match sub {
            "key" => Field::Key,
            "operator" => Field::Operator,
            "value" => Field::Value,
            _ => {
                return Err(ApiError::param(
                    name.as_str(),
                    "unknown filter field (use filters.key, filters.operator, filters.value)",
                ));
            }
        };
        seq.push((field, value.as_str()));
    }
    if seq.is_empty() {
        Ok(Vec::new())
    } else if each_field_in_one_run(&seq) {
        by_column(&seq)
    } else {
        by_position(&seq)
    }
}

/// Whether all pairs of each field are adjacent (`key key op op value value`), as httpx, and so
/// the Python SDK, sends them.
fn each_field_in_one_run(seq: &[(Field, &str)]) -> bool {
    let mut runs: Vec<Field> = Vec::new();
    for (field, _) in seq {
        if runs.last() != Some(field) {
            if runs.contains(field) {
                return false;
            }
            runs.push(*field);
        }
    }
    true
}

/// Columns: the i-th key goes with the i-th operator; values can only be shared out when there
/// is one per filter, or one filter.
fn by_column(seq: &[(Field, &str)]) -> Result<Vec<RawFilter>, ApiError> {
    let column = |f: Field| -> Vec<&str> {
        seq.iter()
            .filter(|(g, _)| *g == f)
            .map(|(_, v)| *v)
            .collect()
    };
    let (keys, operators, values) = (
        column(Field::Key),
        column(Field::Operator),
        column(Field::Value),
    );
    let n = keys.len();
    if n == 0 {
        return Err(ApiError::param("filters.key", "missing"));
    }
    if operators.len() != n {
        return Err(ApiError::param(
            "filters.operator",
            format!(
                "{} given for {n} filters.key; each filter needs one",
                operators.len()
            ),
        ));
    }
    let json = |v: &&str| Value::String((*v).to_owned());
    let values: Vec<Vec<Value>> = if values.len() == n {
        values.iter().map(|v| vec![json(v)]).collect()
    } else if n == 1 {
        vec![values.iter().map(json).collect()]
    } else {
        return Err(ApiError::param(
            "filters.value",
            format!(
                "{} values for {n} filters: with the values of all filters listed together \
                 (as the SDK's query encoding sends them) each filter may have only one value; \
                 send several values in a single filter, or filters=<JSON array>",
                values.len()
            ),
        ));
    };
    Ok(keys
        .into_iter()
        .zip(operators)
        .zip(values)
        .map(|((key, operator), values)| RawFilter {
            key: Some(key.to_owned()),
            operator: Some(operator.to_owned()),
            values,
        })
        .collect())
}

/// Interleaved filters (`key op value value key op value`, in any consistent field order): the
/// field the first filter starts with starts every filter; values follow their filter.
fn by_position(seq: &[(Field, &str)]) -> Result<Vec<RawFilter>, ApiError> {
    let mut groups: Vec<RawFilter> = Vec::new();
    let leader = seq[0].0;
    let mut previous = None;
    for &(field, value) in seq {
        let continues_values = field == Field::Value && previous == Some(Field::Value);
        if groups.is_empty() || (field == leader && !continues_values) {
            groups.push(RawFilter::default());
        }
        previous = Some(field);
        let index = groups.len() - 1;
        let group = &mut groups[index];
        let (slot, sub) = match field {
            Field::Key => (&mut group.key, "key"),
            Field::Operator => (&mut group.operator, "operator"),
            Field::Value => {
                group.values.push(Value::String(value.to_owned()));
                continue;
            }
        };
        if slot.replace(value.to_owned()).is_some() {
            return Err(ApiError::param(
                format!("filters[{index}].{sub}"),
                "given twice; list key, operator and value in the same order in every filter",
            ));
        }
    }
    Ok(groups)
}

/// `filters=[{"key": ..., "operator": ..., "value": [...]}]`.
fn from_json(text: &str) -> Result<Vec<RawFilter>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct JsonFilter {
        key: String,
        operator: String,
        value: Vec<Value>,
    }
    let filters: Vec<JsonFilter> = serde_json::from_str(text).map_err(|e| {
        ApiError::param(
            FILTERS,
            format!("expected a JSON array of {{key, operator, value}}: {e}"),
        )
    })?;
    Ok(filters
        .into_iter()
        .map(|f| RawFilter {
            key: Some(f.key),
            operator: Some(f.operator),
            values: f.value,
        })
        .collect())
}

/// Validate one raw filter; errors name `filters[i].key|operator|value`.
fn build(index: usize, raw: RawFilter) -> Result<Filter, ApiError> {
    let name = |field: &str| format!("filters[{index}].{field}");
    let key = raw
        .key
        .ok_or_else(|| ApiError::param(name("key"), "missing"))?;
    let kind = key_kind(&key).map_err(|r| ApiError::param(name("key"), r))?;
    let op_text = raw
        .operator
        .ok_or_else(|| ApiError::param(name("operator"), "missing"))?;
    let op = parse_operator(&op_text).map_err(|r| ApiError::param(name("operator"), r))?;
    if !kind.operators().contains(&op) {
        let allowed: Vec<&str> = kind.operators().iter().map(|o| operator_name(*o)).collect();
        return Err(ApiError::param(
            name("operator"),
            format!(
                "`{op_text}` does not apply to `{key}` (use {})",
                allowed.join(", ")
            ),
        ));
    }
    if raw.values.is_empty() {
        return Err(ApiError::param(
            name("value"),
            "at least one value is required",
        ));
    }
    let values = raw
        .values
        .iter()
        .map(|v| typed_value(kind, op, v))
        .collect::<Result<_, _>>()
        .map_err(|r| ApiError::param(name("value"), r))?;
    Ok(Filter {
        key,
        operator: op.into(),
        values,
    })
}

/// The `filters` parameter, in either encoding.
pub(crate) fn filters(params: &Params) -> Result<Vec<Filter>, ApiError> {
    let json: Option<String> = params.one(FILTERS)?;
    let dotted = params
        .pairs()
        .iter()
        .any(|(n, _)| n.starts_with(FILTERS_PREFIX));
    let raw = match json {
        Some(_) if dotted => {
            return Err(ApiError::param(
                FILTERS,
                "use either filters=<JSON> or filters.key/operator/value, not both",
            ));
        }
        Some(text) => from_json(&text)?,
        None => group_dotted(params)?,
    };
    raw.into_iter()
        .enumerate()
        .map(|(i, f)| build(i, f))
        .collect()
}

/// How a flat parameter becomes a filter.
#[derive(Debug, Clone, Copy)]
enum Flat {
    /// `key eq value`.
    Eq,
    /// `key >= value` (inclusive).
    Min,
    /// `key <= value` (inclusive).
    Max,
}

/// The flat parameters the SDK still offers, in the order their filters are emitted.
const FLAT: &[(&str, &str, Flat)] = &[
    ("cached", "cached", Flat::Eq),
    ("success", "success", Flat::Eq),
    ("feedback", "feedback", Flat::Eq),
    ("provider", "provider", Flat::Eq),
    ("model", "model", Flat::Eq),
    ("model_type", "model_type", Flat::Eq),
    ("request_content_type", "request_content_type", Flat::Eq),
    ("response_content_type", "response_content_type", Flat::Eq),
    ("start_date", "created_at", Flat::Min),
    ("end_date", "created_at", Flat::Max),
    ("min_cost", "cost", Flat::Min),
    ("max_cost", "cost", Flat::Max),
    ("min_duration", "duration", Flat::Min),
    ("max_duration", "duration", Flat::Max),
    ("min_tokens_in", "tokens_in", Flat::Min),
    ("max_tokens_in", "tokens_in", Flat::Max),
    ("min_tokens_out", "tokens_out", Flat::Min),
    ("max_tokens_out", "tokens_out", Flat::Max),
    ("min_total_tokens", "tokens", Flat::Min),
    ("max_total_tokens", "tokens", Flat::Max),
];

/// Filters from the flat parameters (`model=`, `min_cost=`, `start_date=`, ...).
///
/// Bounds are inclusive; the shard only has strict `lt` / `gt`, so a bound on a whole-number
/// key moves by one (`min_tokens_in=10` → `tokens_in gt 9`) and one on `cost` moves to the
/// adjacent double, which selects exactly the same rows.
pub(crate) fn flat_filters(params: &Params) -> Result<Vec<Filter>, ApiError> {
    let mut out = Vec::new();
    for &(param, key, mode) in FLAT {
        let Some(text) = params.one::<String>(param)? else {
            continue;
        };
        let kind = key_kind(key).map_err(|r| ApiError::param(param, r))?;
        let value = typed_value(kind, FilterOperator::Eq, &Value::String(text))
            .map_err(|r| ApiError::param(param, r))?;
        let (operator, value) = match (mode, &value.kind) {
            (Flat::Eq, _) => (FilterOperator::Eq, value),
            (mode, Some(Fv::Number(n))) => inclusive_bound(kind, mode, *n),
            _ => return Err(ApiError::param(param, "expected a number")),
        };
        out.push(Filter {
            key: key.to_owned(),
            operator: operator.into(),
            values: vec![value],
        });
    }
    Ok(out)
}

fn inclusive_bound(kind: Kind, mode: Flat, n: f64) -> (FilterOperator, FilterValue) {
    let (op, bound) = match (kind, mode) {
        (Kind::Float, Flat::Max) => (FilterOperator::Lt, next_up(n)),
        (Kind::Float, _) => (FilterOperator::Gt, -next_up(-n)),
        (_, Flat::Max) => (FilterOperator::Lt, n.floor() + 1.0),
        _ => (FilterOperator::Gt, n.ceil() - 1.0),
    };
    (
        op,
        FilterValue {
            kind: Some(Fv::Number(bound)),
        },
    )
}

/// The smallest double greater than `x` (`f64::next_up`, which is newer than our MSRV).
fn next_up(x: f64) -> f64 {
    if x.is_nan() || x == f64::INFINITY {
        x
    } else if x == 0.0 {
        f64::from_bits(1)
    } else if x > 0.0 {
        f64::from_bits(x.to_bits() + 1)
    } else {
        f64::from_bits(x.to_bits() - 1)
    }
}

impl FromParam for OrderBy {
    fn from_param(text: &str) -> Result<Self, String> {
        use OrderBy::*;
        let all = [
            ("created_at", CreatedAt),
            ("provider", Provider),
            ("model", Model),
            ("model_type", ModelType),
            ("success", Success),
            ("cached", Cached),
            ("cost", Cost),
            ("tokens_in", TokensIn),
            ("tokens_out", TokensOut),
            ("duration", Duration),
            ("feedback", Feedback),
        ];
        all.iter()
            .find(|(n, _)| *n == text)
            .map(|(_, o)| *o)
            .ok_or_else(|| {
                let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
                format!("unknown column `{text}` (use {})", names.join(", "))
            })
    }
}

/// `asc` / `desc`, read as "ascending?".
struct Ascending(bool);

impl FromParam for Ascending {
    fn from_param(text: &str) -> Result<Self, String> {
        match text {
            "asc" => Ok(Self(true)),
            "desc" => Ok(Self(false)),
            other => Err(format!("expected `asc` or `desc`, got `{other}`")),
        }
    }
}

/// `order_by` (default `created_at`) and `order_by_direction` (default `desc`; the legacy
/// `direction` is the same parameter and must agree with it when both are given).
pub(crate) fn order(params: &Params) -> Result<(OrderBy, bool), ApiError> {
    let order_by = params.one("order_by")?.unwrap_or(OrderBy::CreatedAt);
    let direction = params.one::<Ascending>("order_by_direction")?.map(|a| a.0);
    let legacy = params.one::<Ascending>("direction")?.map(|a| a.0);
    let ascending = match (direction, legacy) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::param(
                "direction",
                "contradicts `order_by_direction`",
            ));
        }
        (a, b) => a.or(b).unwrap_or(false),
    };
    Ok((order_by, ascending))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> FilterValue {
        FilterValue {
            kind: Some(Fv::Text(s.into())),
        }
    }

    fn num(n: f64) -> FilterValue {
        FilterValue {
            kind: Some(Fv::Number(n)),
        }
    }

    fn filter(key: &str, op: FilterOperator, values: Vec<FilterValue>) -> Filter {
        Filter {
            key: key.into(),
            operator: op.into(),
            values,
        }
    }

    fn parse(q: &str) -> Result<Vec<Filter>, ApiError> {
        filters(&Params::parse(Some(q)))
    }

    fn err_name(q: &str) -> String {
        match parse(q).unwrap_err() {
            ApiError::InvalidParam { name, .. } => name,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_the_sdk_encoding_and_interleaved_pairs() {
        let one_each = vec![
            filter("model", FilterOperator::Eq, vec![text("a")]),
            filter("cost", FilterOperator::Gt, vec![num(0.5)]),
        ];
        // What the Python SDK sends (httpx groups repeated names).
        let sdk = "filters.key=model&filters.key=cost&filters.operator=eq&filters.operator=gt\
                   &filters.value=a&filters.value=0.5";
        assert_eq!(parse(sdk).unwrap(), one_each);
        let single = "filters.key=model&filters.operator=eq&filters.value=a&filters.value=b";
        assert_eq!(
            parse(single).unwrap(),
            vec![filter(
                "model",
                FilterOperator::Eq,
                vec![text("a"), text("b")]
            )]
        );
        let expected = vec![
            filter("model", FilterOperator::Eq, vec![text("a"), text("b")]),
            filter("cost", FilterOperator::Gt, vec![num(0.5)]),
        ];
        let key_first = "filters.key=model&filters.operator=eq&filters.value=a&filters.value=b\
                         &filters.key=cost&filters.operator=gt&filters.value=0.5";
        assert_eq!(parse(key_first).unwrap(), expected);
        let value_first = "filters.value=a&filters.value=b&filters.key=model&filters.operator=eq\
                           &filters.value=0.5&filters.key=cost&filters.operator=gt";
        assert_eq!(parse(value_first).unwrap(), expected);
        let json = r#"filters=[{"key":"model","operator":"eq","value":["a","b"]},{"key":"cost","operator":"gt","value":[0.5]}]"#;
        assert_eq!(parse(json).unwrap(), expected);
    }

    #[test]
    fn json_keeps_types_and_nulls() {
        let q = r#"filters=[{"key":"metadata.value","operator":"eq","value":[1,true,"x",null]}]"#;
        let got = parse(q).unwrap();
        let kinds: Vec<_> = got[0]
            .values
            .iter()
            .map(|v| v.kind.clone().unwrap())
            .collect();
        assert_eq!(
            kinds,
            vec![
                Fv::Number(1.0),
                Fv::Flag(true),
                Fv::Text("x".into()),
                Fv::Null(true)
            ]
        );
        assert_eq!(
            err_name(r#"filters=[{"key":"cost","operator":"gt","value":[null]}]"#),
            "filters[0].value"
        );
    }

    #[test]
    fn values_are_typed_by_key() {
        let got = parse(
            "filters.key=created_at&filters.operator=gt&filters.value=2024-05-01T12:00:00Z\
             &filters.key=success&filters.operator=eq&filters.value=false\
             &filters.key=id&filters.operator=eq&filters.value=01hzx3q7z9t8y6v5w4r3e2d1c0",
        )
        .unwrap();
        assert_eq!(got[0].values, vec![num(1_714_564_800_000.0)]);
        assert_eq!(
            got[1].values,
            vec![FilterValue {
                kind: Some(Fv::Flag(false))
            }]
        );
        assert_eq!(got[2].values, vec![text("01HZX3Q7Z9T8Y6V5W4R3E2D1C0")]);
    }

    #[test]
    fn bad_filters_name_the_part() {
        let cases = [
            (
                "filters.key=nope&filters.operator=eq&filters.value=x",
                "filters[0].key",
            ),
            (
                "filters.key=wholesale&filters.operator=eq&filters.value=x",
                "filters[0].key",
            ),
            (
                "filters.key=model&filters.operator=lt&filters.value=x",
                "filters[0].operator",
            ),
            (
                "filters.key=model&filters.operator=like&filters.value=x",
                "filters[0].operator",
            ),
            (
                "filters.key=cost&filters.operator=gt&filters.value=abc",
                "filters[0].value",
            ),
            (
                "filters.key=success&filters.operator=eq&filters.value=yes",
                "filters[0].value",
            ),
            (
                "filters.key=feedback&filters.operator=eq&filters.value=2",
                "filters[0].value",
            ),
            (
                "filters.key=created_at&filters.operator=gt&filters.value=soon",
                "filters[0].value",
            ),
            (
                "filters.key=id&filters.operator=eq&filters.value=x",
                "filters[0].value",
            ),
            ("filters.key=model&filters.operator=eq", "filters[0].value"),
            ("filters.key=model&filters.value=x", "filters.operator"),
            ("filters.operator=eq&filters.value=x", "filters.key"),
            (
                "filters.key=model&filters.key=cost&filters.operator=eq&filters.operator=gt\
                 &filters.value=a&filters.value=b&filters.value=1",
                "filters.value",
            ),
            (
                "filters.key=model&filters.key=cost&filters.operator=eq&filters.value=a&filters.value=1",
                "filters.operator",
            ),
            (
                "filters.key=model&filters.operator=eq&filters.value=x&filters.key=cost&filters.value=1",
                "filters[1].operator",
            ),
            (
                "filters.key=model&filters.operator=eq&filters.operator=neq",
                "filters.operator",
            ),
            (
                "filters.key=a&filters.operator=eq&filters.operator=eq&filters.value=x&filters.key=b",
                "filters[0].operator",
            ),
            ("filters.kee=model", "filters.kee"),
            ("filters=[1]", "filters"),
            ("filters=[]&filters.key=model", "filters"),
        ];
        for (q, name) in cases {
            assert_eq!(err_name(q), name, "{q}");
        }
    }

    #[test]
    fn flat_parameters_become_inclusive_filters() {
        let p = Params::parse(Some(
            "model=gpt&cached=true&min_tokens_in=10&max_tokens_in=20.5&max_cost=0.5&min_cost=0.25\
             &start_date=2024-05-01T12:00:00Z&end_date=2024-05-01T12:00:00.500Z",
        ));
        let got = flat_filters(&p).unwrap();
        let flag = FilterValue {
            kind: Some(Fv::Flag(true)),
        };
        assert_eq!(
            got,
            vec![
                filter("cached", FilterOperator::Eq, vec![flag]),
                filter("model", FilterOperator::Eq, vec![text("gpt")]),
                filter(
                    "created_at",
                    FilterOperator::Gt,
                    vec![num(1_714_564_799_999.0)]
                ),
                filter(
                    "created_at",
                    FilterOperator::Lt,
                    vec![num(1_714_564_800_501.0)]
                ),
                filter(
                    "cost",
                    FilterOperator::Gt,
                    vec![num(f64::from_bits(0.25f64.to_bits() - 1))]
                ),
                filter(
                    "cost",
                    FilterOperator::Lt,
                    vec![num(f64::from_bits(0.5f64.to_bits() + 1))]
                ),
                filter("tokens_in", FilterOperator::Gt, vec![num(9.0)]),
                filter("tokens_in", FilterOperator::Lt, vec![num(21.0)]),
            ]
        );
        for (q, name) in [
            ("max_cost=x", "max_cost"),
            ("start_date=2024-99-01", "start_date"),
            ("cached=1", "cached"),
            ("feedback=5", "feedback"),
            ("model=a&model=b", "model"),
        ] {
            match flat_filters(&Params::parse(Some(q))).unwrap_err() {
                ApiError::InvalidParam { name: n, .. } => assert_eq!(n, name, "{q}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn next_up_steps_one_ulp() {
        assert_eq!(next_up(0.0), f64::from_bits(1));
        assert_eq!(next_up(-0.0), f64::from_bits(1));
        assert_eq!(next_up(1.0), 1.0 + f64::EPSILON);
        assert_eq!(next_up(-1.0), -1.0 + f64::EPSILON / 2.0);
        assert_eq!(next_up(f64::MAX), f64::INFINITY);
        assert_eq!(next_up(f64::INFINITY), f64::INFINITY);
        assert!(next_up(0.1) > 0.1 && next_up(0.1) - 0.1 < 1e-16);
    }

    #[test]
    fn order_and_direction() {
        let o = |q: &str| order(&Params::parse(Some(q)));
        assert_eq!(o("").unwrap(), (OrderBy::CreatedAt, false));
        assert_eq!(
            o("order_by=cost&direction=asc").unwrap(),
            (OrderBy::Cost, true)
        );
        assert_eq!(
            o("order_by=model&order_by_direction=asc&direction=asc").unwrap(),
            (OrderBy::Model, true)
        );
        assert!(
            matches!(o("order_by=x"), Err(ApiError::InvalidParam { name, .. }) if name == "order_by")
        );
        assert!(
            matches!(o("order_by_direction=up"), Err(ApiError::InvalidParam { name, .. }) if name == "order_by_direction")
        );
        assert!(
            matches!(o("order_by_direction=asc&direction=desc"), Err(ApiError::InvalidParam { name, .. }) if name == "direction")
        );
    }
}
