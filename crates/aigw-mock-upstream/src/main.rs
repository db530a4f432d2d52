//! `aigw-mock`: runs the mock LLM upstream as a standalone process.
//!
//! Prints exactly one line, `listening on HOST:PORT`, once bound (so scripts
//! can read the port), then serves until SIGINT or SIGTERM. With `--tls FILE`
//! it serves HTTPS and writes the CA certificate clients must trust to `FILE`
//! before that line.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use aigw_mock_upstream::{MockOptions, spawn};

const USAGE: &str = "usage: aigw-mock [--addr HOST:PORT] [--no-record] [--tls CA_FILE]

  --addr HOST:PORT  address to listen on (default 127.0.0.1:0, a free port)
  --no-record       do not record requests (for benchmarks)
  --tls CA_FILE     serve HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with a certificate signed by
                    a CA made at start; its certificate (PEM) is written to CA_FILE
  -h, --help        show this help";

/// Parsed command line.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    addr: SocketAddr,
    record_requests: bool,
    /// Serve HTTPS, writing the CA certificate here.
    tls_ca_out: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Serve(Args),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut parsed = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        record_requests: true,
        tls_ca_out: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        match flag.as_str() {
            "--addr" => {
                let value = inline_value
                    .or_else(|| args.next())
                    .ok_or("--addr needs a value such as 127.0.0.1:8080")?;
                parsed.addr = value
                    .parse()
                    .map_err(|err| format!("invalid --addr {value:?}: {err}"))?;
            }
            "--no-record" if inline_value.is_none() => parsed.record_requests = false,
            "--tls" => {
                let value = inline_value
                    .or_else(|| args.next())
                    .ok_or("--tls needs the file to write the CA certificate to")?;
                parsed.tls_ca_out = Some(PathBuf::from(value));
            }
            "-h" | "--help" => return Ok(Command::Help),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(Command::Serve(parsed))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Serve(args)) => args,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("aigw-mock: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("aigw-mock: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> io::Result<()> {
    // Install the handlers before announcing the port, so a signal sent right
    // after the announcement is never missed.
    let stop = stop_signal()?;
    let options = MockOptions {
        record_requests: args.record_requests,
        tls: args.tls_ca_out.is_some(),
        ..MockOptions::default()
    };
    let server = spawn(args.addr, options).await?;
    if let (Some(path), Some(pem)) = (&args.tls_ca_out, server.ca_certificate_pem()) {
        std::fs::write(path, pem)?;
    }
    {
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "listening on {}", server.addr())?;
        stdout.flush()?;
    }
    stop.await;
    server.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
#[cfg(unix)]
fn stop_signal() -> io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn stop_signal() -> io::Result<impl Future<Output = ()>> {
    Ok(async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            eprintln!("aigw-mock: cannot wait for Ctrl-C: {err}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn defaults_to_loopback_port_zero_with_recording() {
        assert_eq!(
            parse(&[]),
            Ok(Command::Serve(Args {
                addr: "127.0.0.1:0".parse().expect("valid"),
                record_requests: true,
                tls_ca_out: None,
            }))
        );
    }

    #[test]
    fn parses_addr_and_no_record() {
        let expected = Command::Serve(Args {
            addr: "127.0.0.1:9000".parse().expect("valid"),
            record_requests: false,
            tls_ca_out: Some(PathBuf::from("/tmp/ca.pem")),
        });
        assert_eq!(
            parse(&[
                "--addr",
                "127.0.0.1:9000",
                "--no-record",
                "--tls",
                "/tmp/ca.pem"
            ]),
            Ok(expected)
        );
        let Ok(Command::Serve(args)) = parse(&["--addr=[::1]:0"]) else {
            panic!("--addr=VALUE should parse");
        };
        assert_eq!(args.addr, "[::1]:0".parse().expect("valid"));
        assert_eq!(parse(&["-h"]), Ok(Command::Help));
    }

    #[test]
    fn rejects_unknown_and_malformed_flags() {
        let err = parse(&["--bogus"]).expect_err("unknown flag");
        assert!(err.contains("--bogus"), "{err}");
        assert!(parse(&["--addr"]).is_err());
        assert!(parse(&["--addr", "localhost"]).is_err());
        assert!(parse(&["--no-record=1"]).is_err());
        assert!(parse(&["--tls"]).is_err());
    }
}
