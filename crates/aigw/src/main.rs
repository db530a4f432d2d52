//! `aigw`: the one binary of the AI gateway.
//!
//! `aigw serve` runs every role in one process on embedded defaults. This crate only wires
//! configuration, telemetry and the role crates together; the behaviour lives in those crates.

mod allinone;
mod directory;

use std::path::PathBuf;

use aigw_config::{Config, Overrides};
use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// A self-hosted AI gateway.
#[derive(Debug, Parser)]
#[command(name = "aigw", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (all roles in one process).
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file; every key can also be set with an AIGW_* variable.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Overrides `http_addr`.
    #[arg(long)]
    http_addr: Option<String>,
    /// Overrides `grpc_addr`.
    #[arg(long)]
    grpc_addr: Option<String>,
    /// Overrides `data_dir`.
    #[arg(long)]
    data_dir: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn")),
        )
        .init();
    match cli.command {
        Command::Serve(args) => {
            let config = load_config(&args)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the Tokio runtime")?
                .block_on(serve(config))
        }
    }
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut overrides = Overrides::from_env(std::env::vars());
    for (key, flag, value) in [
        ("http_addr", "--http-addr", &args.http_addr),
        ("grpc_addr", "--grpc-addr", &args.grpc_addr),
        ("data_dir", "--data-dir", &args.data_dir),
    ] {
        if let Some(value) = value {
            overrides.push(key, value.clone(), flag);
        }
    }
    Ok(aigw_config::load(args.config.as_deref(), &overrides)?)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    allinone::serve(config, shutdown_signal()).await?;
    tracing::info!("aigw stopped; queued logs flushed");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing open requests");
}
