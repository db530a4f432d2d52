//! Starting the binaries under test: `aigw-mock` and `aigw serve` as child processes on free
//! loopback ports, killed when dropped.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Longest aigw may take to answer `/healthz` after start.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process that is killed (and reaped) when dropped — on success, error or panic.
pub struct ChildGuard {
    name: &'static str,
    child: Child,
    /// Where its output goes.
    log: PathBuf,
}

impl ChildGuard {
    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error (with the tail of its output) if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self
            .child
            .try_wait()
            .with_context(|| format!("cannot check on {}", self.name))?
        {
            bail!(
                "{} exited unexpectedly ({status}); the end of its output:\n{}",
                self.name,
                tail_of(&self.log, 20)
            );
        }
        Ok(())
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn stop(&mut self) {
        // Already gone is fine; nothing else can be done about a failure here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `aigw serve` (logging on) on free ports with its own data directory
/// `<dir>/aigw-<generation>`, proxying OpenAI to the mock.
pub fn start_aigw(
    bin: &Path,
    dir: &Path,
    generation: u32,
    mock_addr: SocketAddr,
) -> Result<(ChildGuard, SocketAddr)> {
    start_aigw_with(bin, dir, generation, mock_addr, &[])
}

/// [`start_aigw`] with more environment variables for aigw (`AIGW_ADMIN_TOKEN`, …), set
/// after (so over) the ones it sets itself.
pub fn start_aigw_with(
    bin: &Path,
    dir: &Path,
    generation: u32,
    mock_addr: SocketAddr,
    env: &[(&str, &str)],
) -> Result<(ChildGuard, SocketAddr)> {
    let aigw_addr = free_port()?;
    let grpc_addr = free_port()?;
    let log = dir.join(format!("aigw-{generation}.log"));
    let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out
        .try_clone()
        .context("cannot duplicate the aigw log handle")?;
    let child = Command::new(bin)
        .arg("serve")
        // The bench's own `AIGW_*_BIN` choices are not aigw settings: aigw would refuse them
        // as unknown config keys.
        .env_remove("AIGW_BIN")
        .env_remove("AIGW_MOCK_BIN")
        .env("AIGW_HTTP_ADDR", aigw_addr.to_string())
        .env("AIGW_GRPC_ADDR", grpc_addr.to_string())
        .env("AIGW_DATA_DIR", dir.join(format!("aigw-{generation}")))
        .env(
            "AIGW_PROVIDERS__OPENAI__BASE_URL",
            format!("http://{mock_addr}/v1"),
        )
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok((
        ChildGuard {
            name: "aigw",
            child,
            log,
        },
        aigw_addr,
    ))
}

/// `target/release` of this workspace (`$CARGO_TARGET_DIR/release` when that is set).
pub fn release_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    target.join("release")
}

/// The binaries under test, `(aigw, aigw-mock)`: `AIGW_BIN` and `AIGW_MOCK_BIN`, by default
/// in [`release_dir`]; an error if either is missing.
pub fn binaries_under_test() -> Result<(PathBuf, PathBuf)> {
    let [aigw, mock] = [("AIGW_BIN", "aigw"), ("AIGW_MOCK_BIN", "aigw-mock")]
        .map(|(var, name)| crate::env::env_or(var, release_dir().join(name)));
    let (aigw, mock): (PathBuf, PathBuf) = (aigw?, mock?);
    if let Some(missing) = [&aigw, &mock].into_iter().find(|bin| !bin.exists()) {
        bail!(
            "{} is missing (cargo build --release --bin aigw --bin aigw-mock)",
            missing.display()
        );
    }
    Ok((aigw, mock))
}

/// Starts `aigw-mock` (plain HTTP/1.1 and h2c) on a free port and reads the port from its one
/// line of output.
pub fn start_mock(bin: &Path, dir: &Path) -> Result<(ChildGuard, SocketAddr)> {
    start_mock_with(bin, dir, None)
}

/// [`start_mock`] serving HTTPS (HTTP/2 or HTTP/1.1 by ALPN, as real providers do), with the
/// certificate of the CA that signed its certificate written to `<dir>/mock-ca.pem`.
pub fn start_tls_mock(bin: &Path, dir: &Path) -> Result<(ChildGuard, SocketAddr, PathBuf)> {
    let ca_file = dir.join("mock-ca.pem");
    let (guard, addr) = start_mock_with(bin, dir, Some(&ca_file))?;
    Ok((guard, addr, ca_file))
}

fn start_mock_with(
    bin: &Path,
    dir: &Path,
    tls_ca_out: Option<&Path>,
) -> Result<(ChildGuard, SocketAddr)> {
    let log = dir.join(if tls_ca_out.is_some() {
        "mock-tls.log"
    } else {
        "mock.log"
    });
    let err = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut command = Command::new(bin);
    command.args(["--addr", "127.0.0.1:0", "--no-record"]);
    if let Some(ca) = tls_ca_out {
        command.arg("--tls").arg(ca);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child
        .stdout
        .take()
        .context("no stdout pipe for aigw-mock")?;
    let mut guard = ChildGuard {
        name: "aigw-mock",
        child,
        log,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let first = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send(first);
        // Keep draining until the mock exits, so it never writes into a closed pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => return Err(e).context("cannot read aigw-mock's output"),
        Err(_) => {
            guard.ensure_running()?;
            bail!("aigw-mock printed nothing within {STARTUP_TIMEOUT:?}");
        }
    };
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse().ok());
    match addr {
        Some(addr) => Ok((guard, addr)),
        None => {
            guard.ensure_running()?;
            bail!("unexpected first line from aigw-mock: {line:?}")
        }
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_port() -> Result<SocketAddr> {
    let listener = StdTcpListener::bind("127.0.0.1:0").context("cannot bind a free port")?;
    listener.local_addr().context("cannot read a bound address")
}

/// The last `lines` lines of a file (for error messages).
pub fn tail_of(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            if tail.is_empty() {
                "(no output)".to_owned()
            } else {
                tail
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
