//! Support code for aigw's benchmarks.
//!
//! The criterion micro-benchmarks live in `benches/`; the end-to-end load bench is the
//! `loadbench` binary (`src/bin/loadbench.rs`, run by `make bench`). This library holds the
//! small, pure pieces the load bench needs so they can be unit-tested on their own:
//!
//! - [`stats`] — latency samples and nearest-rank percentiles;
//! - [`procfs`] — per-process CPU time and memory from Linux `/proc`, and the open-files limit;
//! - [`servers`] — the binaries under test started as child processes;
//! - [`main_with`] — a bench binary's `main` on a multi-threaded runtime.

pub mod env;
pub mod procfs;
pub mod servers;
pub mod stats;

/// Runs `run` on a multi-threaded Tokio runtime as the `main` of bench `name`: success, or
/// the error (with its causes) on stderr and a failing exit code.
pub fn main_with<F>(name: &str, run: impl FnOnce() -> F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run()))
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
