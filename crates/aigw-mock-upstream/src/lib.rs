//! A mock LLM upstream for aigw's integration tests, SDK conformance tests and
//! load benchmark.
//!
//! This crate owns a small, fast HTTP/1.1 + HTTP/2 server (plain, with h2c, or HTTPS with
//! a certificate authority made at start and ALPN, see [`MockOptions::tls`]) that speaks the
//! wire formats of the providers aigw fronts — OpenAI (chat completions, legacy
//! completions, embeddings, Responses API, models), Anthropic Messages,
//! Cloudflare Workers AI, Google AI Studio (Gemini) and Cohere v2 — closely
//! enough that the official Python SDKs parse its answers. Replies and token
//! usage are deterministic: prompt tokens are the whitespace-separated words of
//! the request's text content, completion tokens the words of the reply.
//!
//! Behaviour is steered per request by `x-mock-*` headers, so tests can pass
//! them through the gateway:
//!
//! | header | effect |
//! | --- | --- |
//! | `x-mock-reply: TEXT` | reply text (default `Hello from the mock upstream.`) |
//! | `x-mock-chunks: N` | reply is the `N` words `tok0 … tok{N-1}` (wins over `x-mock-reply`) |
//! | `x-mock-status: CODE` | answer with that 4xx/5xx status and a provider-shaped error body |
//! | `x-mock-retry-after: V` | with `x-mock-status`, also send `retry-after: V` |
//! | `x-mock-fail-first: N` + `x-mock-fail-key: K` | only the first N requests with key K fail (with `x-mock-status`, else 503); later ones succeed |
//! | `x-mock-delay-ms: N` | wait `N` ms before sending response headers |
//! | `x-mock-chunk-delay-ms: N` | wait `N` ms between streamed chunks |
//! | `x-mock-reset: before-headers` | close the connection without any response |
//! | `x-mock-reset: mid-stream` | send headers and half the body, then abort the connection |
//! | `x-mock-echo-headers: 1` | add `"mock_seen_headers": {name: value}` to JSON answers |
//!
//! A chat request that offers tools (`tools` for OpenAI, Anthropic, Cohere and Workers AI,
//! `tools[].functionDeclarations` for Google) is answered with a call to the first tool with
//! the arguments `{"location":"Paris"}`, JSON or streamed, in the provider's wire format.
//!
//! Every request (except the control endpoint itself) is recorded in a ring
//! buffer of the last 1024, readable in-process through
//! [`MockServer::requests`] and over HTTP at `GET /__mock/requests`
//! (`DELETE` clears it).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let server = aigw_mock_upstream::spawn(
//!     "127.0.0.1:0".parse().expect("valid address"),
//!     aigw_mock_upstream::MockOptions::default(),
//! )
//! .await?;
//! println!("mock at {}", server.base_url());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod anthropic;
mod body;
mod cohere;
mod faults;
mod google;
mod openai;
mod record;
mod respond;
mod server;
mod sse;
mod tls;
mod tokens;
mod tools;
mod workers_ai;

pub use record::SeenRequest;
pub use server::{MockOptions, MockServer, spawn};
