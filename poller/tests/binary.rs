//! The real binary: start-up output, `--help`, start-up validation, SIGUSR1/SIGUSR2 log
//! toggles and graceful SIGTERM with an open long-poll. Every child is killed on drop.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use vault_redirect_doubles::ConsulDouble;

const BIN: &str = env!("CARGO_BIN_EXE_vault-redirect-poller");

/// A running binary whose stderr lines are collected as they come.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("CONSUL_HTTP_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, lines }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    async fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(Instant::now() < deadline, "no line with {needle:?} in:\n{}", self.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn listening(&self) -> SocketAddr {
        let line = self.wait_for_line("listening on ").await;
        line.rsplit("listening on ").next().unwrap().trim().parse().unwrap()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "still running after {within:?}:\n{}", self.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sigterm_answers_open_long_polls_and_exits_zero() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let mut p =
        Proc::spawn(&["--consul-addr", &consul.addr().to_string(), "--listen", "127.0.0.1:0"]);
    let addr = p.listening().await;
    let (_, doc) = get_json(&format!("http://{addr}/v1/active")).await;
    let version = doc["version"].as_u64().unwrap();
    let url = format!("http://{addr}/v1/active?index={}&wait=5m", version.max(1) + 1_000_000_000);
    let waiter = tokio::spawn(async move { client().get(url).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());

    let sent = Instant::now();
    p.signal("-TERM");
    let answer =
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(answer.status(), 200, "the waiter gets the current document");
    assert_eq!(p.exit_code(Duration::from_secs(5)).await, Some(0));
    assert!(sent.elapsed() < Duration::from_secs(5));
    assert!(p.text().contains("SIGTERM"), "{}", p.text());
}

#[tokio::test]
async fn sigusr2_silences_the_log_and_sigusr1_brings_it_back() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = Proc::spawn(&["--consul-addr", &consul.url(), "--listen", "127.0.0.1:0"]);
    p.listening().await;
    p.wait_for_line("active Vault node is now vault-a").await;

    p.signal("-USR2");
    p.wait_for_line("logging disabled by SIGUSR2").await;
    consul.set_active("vault-b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!p.text().contains("now vault-b"), "logged while disabled:\n{}", p.text());

    p.signal("-USR1");
    p.wait_for_line("logging enabled by SIGUSR1").await;
    consul.set_active("vault-c");
    p.wait_for_line("active Vault node is now vault-c").await;
}

#[tokio::test]
async fn log_disable_starts_silent_until_sigusr1() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p =
        Proc::spawn(&["--consul-addr", &consul.url(), "--listen", "127.0.0.1:0", "--log-disable"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.signal("-USR1");
    p.wait_for_line("logging enabled by SIGUSR1").await;
    consul.set_active("vault-b");
    p.wait_for_line("active Vault node is now vault-b").await;
    // Nothing from before SIGUSR1 was logged, the first choice included.
    assert!(!p.text().contains("now vault-a"), "{}", p.text());
}

#[test]
fn help_explains_every_flag_and_its_environment_twin() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for env in [
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_SSL",
        "CONSUL_HTTP_SSL_VERIFY",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_TOKEN_FILE",
        "CONSUL_CACERT",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        "VAULT_REDIRECT_CONSUL_DC",
        "VAULT_REDIRECT_SERVICE",
        "VAULT_REDIRECT_ACTIVE_TAG",
        "VAULT_REDIRECT_CONSUL_STALE",
        "VAULT_REDIRECT_CONSUL_WAIT",
        "VAULT_REDIRECT_CONSUL_TIMEOUT",
        "VAULT_REDIRECT_BACKOFF_MAX",
        "VAULT_REDIRECT_MAX_STALE",
        "VAULT_REDIRECT_LISTEN",
        "VAULT_REDIRECT_REDIRECT_LISTEN",
        "VAULT_REDIRECT_SCHEME",
        "VAULT_REDIRECT_HOST",
        "VAULT_REDIRECT_PORT",
        "RUST_LOG",
        "VAULT_REDIRECT_LOG_DISABLE",
    ] {
        assert!(help.contains(&format!("[env: {env}")), "--help lacks {env}:\n{help}");
    }
}

#[test]
fn a_bad_value_stops_start_up_with_a_message_naming_it() {
    for (args, needle) in [
        (vec!["--consul-addr", "ftp://consul:8500"], "ftp://consul:8500"),
        (vec!["--max-stale", "forever"], "forever"),
        (vec!["--consul-cacert", "/nonexistent/ca.pem"], "/nonexistent/ca.pem"),
        (vec!["--listen", "127.0.0.1:99999"], "127.0.0.1:99999"),
    ] {
        let out = Command::new(BIN).args(&args).arg("--listen=127.0.0.1:0").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn the_token_from_the_environment_is_never_printed() {
    let out = Command::new(BIN)
        .env("CONSUL_HTTP_TOKEN", "super-secret-value")
        .args(["--consul-addr", "ftp://bad", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let all =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains("super-secret-value"), "{all}");
    let help = Command::new(BIN)
        .env("CONSUL_HTTP_TOKEN", "super-secret-value")
        .arg("--help")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("super-secret-value"));
}
