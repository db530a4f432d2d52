//! A real S3-compatible server for the tests: `moto_server` as a child process.
//!
//! The binary comes from `MOTO_SERVER_BIN` (the Makefile points it at the project venv), else
//! `<workspace>/.venv/bin/moto_server`, else `moto_server` on `PATH`. Without one, tests skip
//! loudly, or fail when `S3_TESTS_REQUIRED=1` (as `make test` sets).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aigw_blob_s3::{S3BlobStore, S3Settings};

/// A running `moto_server`, killed when dropped.
pub struct Moto {
    child: Child,
    endpoint: String,
    log: tempfile::NamedTempFile,
}

impl Moto {
    /// Starts a server on a free port and waits until it answers HTTP. `None` means "skip":
    /// no binary was found and S3 tests are not required.
    pub fn start() -> Option<Moto> {
        let required = std::env::var("S3_TESTS_REQUIRED").is_ok_and(|v| v == "1");
        let Some(bin) = locate() else {
            assert!(
                !required,
                "S3_TESTS_REQUIRED=1 but moto_server was not found (looked at $MOTO_SERVER_BIN, \
                 {}, and PATH); run `make venv`",
                venv_bin().display()
            );
            eprintln!(
                "\n!!!!!!!! skipping S3 tests: moto_server not found (run `make venv`) !!!!!!!!\n"
            );
            return None;
        };
        let mut last_log = String::new();
        // A port picked free can be taken before moto binds it; try a few.
        for _ in 0..3 {
            match Self::spawn(&bin) {
                Ok(moto) => return Some(moto),
                Err(log) => last_log = log,
            }
        }
        panic!("moto_server ({}) did not start:\n{last_log}", bin.display());
    }

    fn spawn(bin: &Path) -> Result<Moto, String> {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("temp file for the moto log");
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.reopen().expect("moto log")))
            .stderr(Stdio::from(log.reopen().expect("moto log")))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = moto.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", moto.log_text()));
            }
            if answers_http(port) {
                return Ok(moto);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "no answer on port {port} within 30s:\n{}",
            moto.log_text()
        ))
    }

    /// Settings for `bucket` on this server, with static test credentials.
    pub fn settings(&self, bucket: &str, prefix: &str) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint.clone()),
            bucket: bucket.to_owned(),
            region: "us-east-1".to_owned(),
            path_style: true,
            access_key_id: Some("testing-key-id".to_owned()),
            secret_access_key: Some("testing-secret".to_owned()),
            prefix: prefix.to_owned(),
        }
    }

    /// A store on a new bucket named `bucket`, with `prefix`.
    pub async fn store(&self, bucket: &str, prefix: &str) -> S3BlobStore {
        let store = S3BlobStore::new(self.settings(bucket, prefix))
            .await
            .expect("S3 store");
        store.ensure_bucket().await.expect("create the bucket");
        store
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server")
}

fn locate() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("MOTO_SERVER_BIN") {
        let explicit = PathBuf::from(explicit);
        if explicit.is_file() {
            return Some(explicit);
        }
        eprintln!("MOTO_SERVER_BIN={} does not exist", explicit.display());
    }
    let venv = venv_bin();
    if venv.is_file() {
        return Some(venv);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("moto_server"))
        .find(|candidate| candidate.is_file())
}

/// A port nothing listens on (right now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn answers_http(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 8];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}
