//! The order of listed logs, shared by the shard that sorts its rows and the router that
//! merges the sorted pages of a split gateway's sub-shards: both must agree exactly.

use std::cmp::Ordering;

use crate::shard::{LogRecord, OrderBy};

/// How `a` and `b` compare in a listing ordered by `order_by`: the field first, ties broken
/// by id (a ULID, so by creation time, then randomness); reversed unless `ascending`.
pub fn compare_logs(order_by: OrderBy, ascending: bool, a: &LogRecord, b: &LogRecord) -> Ordering {
    let by_field = match order_by {
        OrderBy::CreatedAt => Ordering::Equal,
        OrderBy::Provider => a.provider.cmp(&b.provider),
        OrderBy::Model => a.model.cmp(&b.model),
        OrderBy::ModelType => a.model_type.cmp(&b.model_type),
        OrderBy::Success => a.success.cmp(&b.success),
        OrderBy::Cached => a.cached.cmp(&b.cached),
        OrderBy::Cost => cmp_opt(a.cost, b.cost),
        OrderBy::TokensIn => a.tokens_in.cmp(&b.tokens_in),
        OrderBy::TokensOut => a.tokens_out.cmp(&b.tokens_out),
        OrderBy::Duration => a.duration_ms.cmp(&b.duration_ms),
        OrderBy::Feedback => a.feedback.cmp(&b.feedback),
    };
    let ordered = by_field.then_with(|| a.id.cmp(&b.id));
    if ascending {
        ordered
    } else {
        ordered.reverse()
    }
}

/// Absent sorts before any number; numbers by total order.
fn cmp_opt(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}
