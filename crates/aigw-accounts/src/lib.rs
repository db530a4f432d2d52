//! The account manager's replicated state.
//!
//! This crate owns the gateways of every account and their settings: the commands that change
//! them (replicated through the account-manager Raft group), their layout in a sled tree, and an
//! in-memory mirror that edges consult on the request path without any I/O. It must not know
//! about consensus or networking — the node wires its commands through Raft and serves them over
//! gRPC — and it never stores logs.

mod app;
pub mod command;
mod registry;
mod service;

pub use app::AccountsApp;
pub use registry::{DEFAULT_GATEWAY, GatewayRegistry, RegistryError, default_settings};
pub use service::GatewaysService;
