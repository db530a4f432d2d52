//! The `aigw-mock` binary: startup line, serving, clean exit on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

#[test]
fn binary_prints_its_address_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigw-mock"))
        .args(["--addr", "127.0.0.1:0", "--no-record"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("startup line");
    let addr = line
        .strip_prefix("listening on 127.0.0.1:")
        .map(|port| format!("127.0.0.1:{}", port.trim_end()))
        .unwrap_or_else(|| panic!("unexpected startup line {line:?}"));

    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream
        .write_all(b"GET /v1/models HTTP/1.1\r\nhost: mock\r\nconnection: close\r\n\r\n")
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"gpt-4o-mini\""));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("binary exits");
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn binary_rejects_unknown_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_aigw-mock"))
        .arg("--frobnicate")
        .output()
        .expect("binary runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown argument \"--frobnicate\""),
        "{stderr}"
    );
}
