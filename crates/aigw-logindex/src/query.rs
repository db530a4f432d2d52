//! Compiling a [`LogQuery`] into conditions, and evaluating them on rows.

use std::cmp::Ordering;

use aigw_proto::shard::{
    Filter, FilterOperator, FilterValue, LogQuery, LogRecord, OrderBy, filter_value, metadata_entry,
};
use ulid::Ulid;

use crate::keys::{Field, first_id_at};

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A filter is not usable; `key` names it.
    #[error("invalid filter on `{key}`: {reason}")]
    InvalidFilter {
        /// The filter key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The order is not supported.
    #[error("unsupported order_by value {0}")]
    InvalidOrder(i32),
    /// A cursor on a listing not ordered by creation time.
    #[error("a cursor needs the listing ordered by created_at")]
    CursorNeedsCreationOrder,
}

/// A filterable field of a log row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Id,
    CreatedAt,
    RequestContentType,
    ResponseContentType,
    Success,
    Cached,
    Provider,
    Model,
    ModelType,
    Cost,
    Tokens,
    TokensIn,
    TokensOut,
    Duration,
    Feedback,
    EventId,
    RequestType,
    MetadataKey,
    MetadataValue,
    StatusCode,
    Authentication,
    Path,
    Score,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Bool,
    Number,
}

impl Column {
    fn parse(key: &str) -> Option<Self> {
        Some(match key {
            "id" => Self::Id,
            "created_at" => Self::CreatedAt,
            "request_content_type" => Self::RequestContentType,
            "response_content_type" => Self::ResponseContentType,
            "success" => Self::Success,
            "cached" => Self::Cached,
            "provider" => Self::Provider,
            "model" => Self::Model,
            "model_type" => Self::ModelType,
            "cost" => Self::Cost,
            "tokens" => Self::Tokens,
            "tokens_in" => Self::TokensIn,
            "tokens_out" => Self::TokensOut,
            "duration" => Self::Duration,
            "feedback" => Self::Feedback,
            "event_id" => Self::EventId,
            "request_type" => Self::RequestType,
            "metadata.key" => Self::MetadataKey,
            "metadata.value" => Self::MetadataValue,
            "status_code" => Self::StatusCode,
            "authentication" => Self::Authentication,
            "path" => Self::Path,
            "score" => Self::Score,
            _ => return None,
        })
    }

    fn kind(self) -> Kind {
        match self {
            Self::Success | Self::Cached | Self::Authentication => Kind::Bool,
            Self::CreatedAt
            | Self::Cost
            | Self::Tokens
            | Self::TokensIn
            | Self::TokensOut
            | Self::Duration
            | Self::Feedback
            | Self::StatusCode
            | Self::Score => Kind::Number,
            _ => Kind::Text,
        }
    }

    fn text_values(self, row: &LogRecord) -> Vec<String> {
        let opt = |v: &Option<String>| v.iter().cloned().collect();
        match self {
            Self::Id => {
                vec![Ulid::from_bytes(row.id.as_ref().try_into().unwrap_or([0; 16])).to_string()]
            }
            Self::RequestContentType => opt(&row.request_content_type),
            Self::ResponseContentType => opt(&row.response_content_type),
            Self::Provider => vec![row.provider.clone()],
            Self::Model => vec![row.model.clone()],
            Self::ModelType => vec![row.model_type.clone()],
            Self::EventId => opt(&row.event_id),
            Self::RequestType => vec![row.request_type.clone()],
            Self::Path => vec![row.path.clone()],
            Self::MetadataKey => row.metadata.iter().map(|m| m.key.clone()).collect(),
            Self::MetadataValue => row.metadata.iter().filter_map(metadata_text).collect(),
            _ => Vec::new(),
        }
    }

    fn bool_value(self, row: &LogRecord) -> bool {
        match self {
            Self::Success => row.success,
            Self::Cached => row.cached,
            Self::Authentication => row.authentication,
            _ => false,
        }
    }

    fn number_value(self, row: &LogRecord) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        let n = |v: u64| v as f64;
        match self {
            Self::CreatedAt => Some(row.created_at_ms as f64),
            Self::Cost => row.cost,
            Self::Tokens => match (row.tokens_in, row.tokens_out) {
                (None, None) => None,
                (i, o) => Some(n(i.unwrap_or(0) + o.unwrap_or(0))),
            },
            Self::TokensIn => row.tokens_in.map(n),
            Self::TokensOut => row.tokens_out.map(n),
            Self::Duration => Some(n(row.duration_ms)),
            Self::Feedback => row.feedback.map(f64::from),
            Self::StatusCode => Some(f64::from(row.status_code)),
            Self::Score => row.score,
            _ => None,
        }
    }
}

/// A metadata value as the text it is indexed and searched by.
pub(crate) fn metadata_text(entry: &aigw_proto::shard::MetadataEntry) -> Option<String> {
    match &entry.value {
        Some(metadata_entry::Value::Text(s)) => Some(s.clone()),
        Some(metadata_entry::Value::Number(n)) => Some(n.clone()),
        Some(metadata_entry::Value::Flag(b)) => Some(b.to_string()),
        None => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Bool(bool),
    Number(f64),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Neq,
    Contains,
    Lt,
    Gt,
}

/// One compiled filter: the row matches when the column matches any value (NEQ: none).
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    column: Column,
    op: Op,
    values: Vec<Value>,
}

/// An index the planner can drive a scan from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexScan {
    /// Indexed field.
    pub field: Field,
    /// Values to union (each an index prefix).
    pub values: Vec<Vec<u8>>,
    /// Lower is preferred (more selective).
    pub rank: u8,
}

/// A query ready to run against one gateway.
#[derive(Debug, Clone)]
pub struct CompiledQuery {
    pub(crate) account_id: String,
    pub(crate) gateway_id: String,
    pub(crate) conditions: Vec<Condition>,
    pub(crate) search: Option<String>,
    pub(crate) order_by: OrderBy,
    pub(crate) ascending: bool,
    /// Inclusive id bounds implied by `created_at` filters.
    pub(crate) id_range: (Ulid, Ulid),
}

fn invalid(key: &str, reason: impl Into<String>) -> QueryError {
    QueryError::InvalidFilter {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn convert_value(key: &str, kind: Kind, value: &FilterValue) -> Result<Value, QueryError> {
    use filter_value::Kind as V;
    let Some(v) = &value.kind else {
        return Err(invalid(key, "empty value"));
    };
    Ok(match (kind, v) {
        (_, V::Null(_)) => Value::Null,
        (Kind::Text, V::Text(s)) => Value::Text(s.clone()),
        (Kind::Text, V::Number(n)) => Value::Text(n.to_string()),
        (Kind::Text, V::Flag(b)) => Value::Text(b.to_string()),
        (Kind::Bool, V::Flag(b)) => Value::Bool(*b),
        (Kind::Bool, V::Text(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(invalid(key, format!("expected true or false, got `{s}`"))),
        },
        (Kind::Number, V::Number(n)) if n.is_finite() => Value::Number(*n),
        (Kind::Number, V::Text(s)) => match s.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Value::Number(n),
            _ => return Err(invalid(key, format!("expected a number, got `{s}`"))),
        },
        (Kind::Bool, V::Number(_)) => {
            return Err(invalid(key, "expected true or false, got a number"));
        }
        (Kind::Number, _) => return Err(invalid(key, "expected a number")),
    })
}

fn compile_filter(filter: &Filter) -> Result<Condition, QueryError> {
    let key = filter.key.as_str();
    let column = Column::parse(key).ok_or_else(|| invalid(key, "unknown filter key"))?;
    let op = match FilterOperator::try_from(filter.operator) {
        Ok(FilterOperator::Eq) => Op::Eq,
        Ok(FilterOperator::Neq) => Op::Neq,
        Ok(FilterOperator::Contains) => Op::Contains,
        Ok(FilterOperator::Lt) => Op::Lt,
        Ok(FilterOperator::Gt) => Op::Gt,
        Err(_) => {
            return Err(invalid(
                key,
                format!("unknown operator {}", filter.operator),
            ));
        }
    };
    let kind = column.kind();
    match (kind, op) {
        (Kind::Text, Op::Lt | Op::Gt) => return Err(invalid(key, "lt and gt need a numeric key")),
        (Kind::Bool, Op::Lt | Op::Gt | Op::Contains) => {
            return Err(invalid(key, "only eq and neq apply to a boolean key"));
        }
        (Kind::Number, Op::Contains) => return Err(invalid(key, "contains needs a text key")),
        _ => {}
    }
    if filter.values.is_empty() {
        return Err(invalid(key, "at least one value is required"));
    }
    let values = filter
        .values
        .iter()
        .map(|v| convert_value(key, kind, v))
        .collect::<Result<Vec<_>, _>>()?;
    if matches!(op, Op::Lt | Op::Gt | Op::Contains) && values.contains(&Value::Null) {
        return Err(invalid(key, "null only applies to eq and neq"));
    }
    Ok(Condition { column, op, values })
}

impl CompiledQuery {
    /// Validate and compile `query`.
    pub fn compile(query: &LogQuery) -> Result<Self, QueryError> {
        let conditions = query
            .filters
            .iter()
            .map(compile_filter)
            .collect::<Result<Vec<_>, _>>()?;
        let order_by = OrderBy::try_from(query.order_by)
            .map_err(|_| QueryError::InvalidOrder(query.order_by))?;
        let mut lo = Ulid::nil().0;
        let mut hi = u128::MAX;
        for c in conditions.iter().filter(|c| c.column == Column::CreatedAt) {
            let [Value::Number(t)] = c.values.as_slice() else {
                continue;
            };
            let t = t.max(0.0).floor();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let ms = t as u64;
            match c.op {
                Op::Gt => lo = lo.max(first_id_at(ms + 1).0),
                Op::Lt => hi = hi.min(first_id_at(ms).0.saturating_sub(1)),
                Op::Eq => {
                    lo = lo.max(first_id_at(ms).0);
                    hi = hi.min(first_id_at(ms + 1).0.saturating_sub(1));
                }
                _ => {}
            }
        }
        Ok(Self {
            account_id: query.account_id.clone(),
            gateway_id: query.gateway_id.clone(),
            conditions,
            search: query
                .search
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_lowercase),
            order_by,
            ascending: query.ascending,
            id_range: (Ulid(lo), Ulid(hi)),
        })
    }

    /// The account the query reads.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The gateway the query reads.
    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    /// Whether the id range is empty (contradictory time filters).
    pub(crate) fn empty_range(&self) -> bool {
        self.id_range.0 > self.id_range.1
    }

    /// Whether the range covers all time.
    pub(crate) fn full_range(&self) -> bool {
        self.id_range.0.0 == 0 && self.id_range.1.0 == u128::MAX
    }

    /// Whether `row` passes every condition and the search.
    pub(crate) fn matches(&self, row: &LogRecord) -> bool {
        row.account_id == self.account_id
            && row.gateway_id == self.gateway_id
            && self.conditions.iter().all(|c| c.matches(row))
            && self
                .search
                .as_deref()
                .is_none_or(|s| search_matches(row, s))
    }

    /// The most selective index that can drive a newest-first scan, if any.
    pub(crate) fn driving_index(&self) -> Option<IndexScan> {
        self.conditions
            .iter()
            .filter_map(Condition::index_scan)
            .min_by_key(|s| s.rank)
    }

    /// When the total is a single counter: the counted field and value.
    pub(crate) fn counter_shortcut(&self) -> Option<(Field, Vec<u8>)> {
        if self.search.is_some() || !self.full_range() {
            return None;
        }
        match self.conditions.as_slice() {
            [] => Some((Field::All, Vec::new())),
            [c] if c.op == Op::Eq && c.values.len() == 1 => {
                let value = &c.values[0];
                match (c.column, value) {
                    (Column::Provider, Value::Text(s)) => {
                        Some((Field::Provider, s.as_bytes().to_vec()))
                    }
                    (Column::Model, Value::Text(s)) => Some((Field::Model, s.as_bytes().to_vec())),
                    (Column::Success, Value::Bool(b)) => Some((Field::Success, vec![u8::from(*b)])),
                    (Column::Cached, Value::Bool(b)) => Some((Field::Cached, vec![u8::from(*b)])),
                    (Column::Feedback, Value::Number(n)) => {
                        feedback_byte(*n).map(|b| (Field::Feedback, vec![b]))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Compare two rows by the requested order (ties broken by id, newest first).
    pub(crate) fn compare(&self, a: &LogRecord, b: &LogRecord) -> Ordering {
        aigw_proto::compare_logs(self.order_by, self.ascending, a, b)
    }

    /// Narrows the query to the rows after `id` in its order (a cursor); only creation order
    /// has one.
    pub fn after(&mut self, id: Ulid) -> Result<(), QueryError> {
        if self.order_by != OrderBy::CreatedAt {
            return Err(QueryError::CursorNeedsCreationOrder);
        }
        let (lo, hi) = &mut self.id_range;
        if self.ascending {
            *lo = (*lo).max(Ulid(id.0.saturating_add(1)));
        } else {
            *hi = (*hi).min(Ulid(id.0.saturating_sub(1)));
        }
        Ok(())
    }
}

/// The index byte of a feedback value, if it is -1, 0 or 1.
pub(crate) fn feedback_byte(n: f64) -> Option<u8> {
    match n {
        -1.0 => Some(0),
        0.0 => Some(1),
        1.0 => Some(2),
        _ => None,
    }
}

fn search_matches(row: &LogRecord, needle: &str) -> bool {
    let hit = |s: &str| s.to_lowercase().contains(needle);
    hit(&row.model)
        || hit(&row.provider)
        || row.event_id.as_deref().is_some_and(hit)
        || row
            .metadata
            .iter()
            .any(|m| hit(&m.key) || metadata_text(m).as_deref().is_some_and(hit))
}

impl Condition {
    fn matches(&self, row: &LogRecord) -> bool {
        let any = match self.column.kind() {
            Kind::Text => {
                let actual = self.column.text_values(row);
                self.values.iter().any(|v| match v {
                    Value::Null => actual.is_empty(),
                    Value::Text(want) => match self.op {
                        Op::Contains => {
                            let want = want.to_lowercase();
                            actual.iter().any(|a| a.to_lowercase().contains(&want))
                        }
                        _ => actual.iter().any(|a| a == want),
                    },
                    _ => false,
                })
            }
            Kind::Bool => {
                let actual = self.column.bool_value(row);
                self.values.contains(&Value::Bool(actual))
            }
            Kind::Number => {
                let actual = self.column.number_value(row);
                self.values.iter().any(|v| match (v, actual) {
                    (Value::Null, a) => a.is_none(),
                    (Value::Number(want), Some(a)) => match self.op {
                        Op::Lt => a < *want,
                        Op::Gt => a > *want,
                        _ => (a - want).abs() < f64::EPSILON * a.abs().max(1.0),
                    },
                    _ => false,
                })
            }
        };
        if self.op == Op::Neq { !any } else { any }
    }

    fn index_scan(&self) -> Option<IndexScan> {
        if self.op != Op::Eq {
            return None;
        }
        let (field, rank) = match self.column {
            Column::EventId => (Field::EventId, 0),
            Column::MetadataValue => (Field::MetaValue, 1),
            Column::MetadataKey => (Field::MetaKey, 2),
            Column::Feedback => (Field::Feedback, 3),
            Column::Success => (Field::Success, 4),
            Column::Cached => (Field::Cached, 5),
            Column::Model => (Field::Model, 6),
            Column::Provider => (Field::Provider, 7),
            _ => return None,
        };
        let values = self
            .values
            .iter()
            .map(|v| match (field, v) {
                (Field::Success, Value::Bool(false)) => Some(vec![0]),
                (Field::Cached, Value::Bool(true)) => Some(vec![1]),
                (Field::Feedback, Value::Number(n)) => feedback_byte(*n).map(|b| vec![b]),
                (
                    Field::EventId
                    | Field::MetaKey
                    | Field::MetaValue
                    | Field::Model
                    | Field::Provider,
                    Value::Text(s),
                ) => Some(s.as_bytes().to_vec()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(IndexScan {
            field,
            values,
            rank,
        })
    }
}
