//! What aigw knows about each LLM provider.
//!
//! This crate owns the provider catalogue ([`registry`]: slugs, default base URLs, how an upstream
//! URL is built from a gateway path), the per-wire-format extraction of token usage and model
//! names from request and response bodies ([`usage`]), and the built-in pricing table
//! ([`pricing`]). Everything here is pure: no sockets, no async runtime, no HTTP framework, so it
//! can be unit-tested and benchmarked in isolation and shared by the edge and offline tools.

pub mod pricing;
pub mod registry;
pub mod usage;

pub use pricing::{CustomCost, CustomCostError, Price, PricingTable};
pub use registry::{Provider, ProviderCatalog, UpstreamTarget, WireFormat};
pub use usage::{
    Usage, extract_tokens, extract_usage, extract_usage_tail, model_type, request_model,
};
