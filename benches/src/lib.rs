//! Support code for aigw's benchmarks.
//!
//! The criterion micro-benchmarks live in `benches/`; the end-to-end load bench is the
//! `loadbench` binary (`src/bin/loadbench.rs`, run by `make bench`). This library holds the
//! small, pure pieces the load bench needs so they can be unit-tested on their own:
//!
//! - [`stats`] — latency samples and nearest-rank percentiles;
//! - [`procfs`] — per-process CPU time and memory from Linux `/proc`, and the open-files limit.

pub mod env;
pub mod procfs;
pub mod servers;
pub mod stats;
