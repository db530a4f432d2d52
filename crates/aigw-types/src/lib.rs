//! Shared vocabulary of aigw.
//!
//! This crate owns the plain data types that every other crate speaks: the [`LogRecord`] that
//! describes one proxied request, the [`Metadata`] attached to it, and the [`ErrorEnvelope`] that
//! the gateway returns when it (rather than an upstream provider) rejects a request. It must stay
//! free of I/O, async runtimes and framework types so that the edge, the store and the tools can
//! all depend on it cheaply.

mod error;
mod log;

pub use error::{ErrorCode, ErrorEnvelope, ErrorItem};
pub use log::{LogRecord, Metadata, MetadataValue, RequestOutcome, unix_now_ms};
