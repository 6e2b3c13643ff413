//! Standalone redirect mode over TLS (`--redirect-tls-cert`, `--redirect-tls-key`, the
//! equivalent of vault-redirector's `-c`/`-k`): 307s over HTTP/1.1 and h2 (ALPN) to a client
//! that trusts only the CA, the health path over TLS, plain HTTP refused on the TLS port,
//! `--redirect-scheme` independent of it, and start-up refusing bad files, naming them.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use reqwest::Version;
use tokio::io::AsyncReadExt;
use vault_redirect_doubles::{ConsulDouble, Pki, PkiSpec};
use vault_redirect_poller::Poller;

const BIN: &str = env!("CARGO_BIN_EXE_vault-redirect-poller");

/// A root CA, an intermediate and a leaf for 127.0.0.1 (doubles' test PKI): `chain.pem` is
/// leaf then intermediate (as vault-redirector takes it), `key.pem` the leaf's key,
/// `other-key.pem` a key of nobody's, `ca.pem` the root, the only thing clients trust.
fn pki(name: &str) -> Pki {
    Pki::new(name, None, &PkiSpec::leaf_for(&["127.0.0.1"]).with_intermediate()).unwrap()
}

/// `--redirect-listen 127.0.0.1:0` with this PKI's chain and key, then `more`.
fn tls_flags(pki: &Pki, more: &[&str]) -> Vec<String> {
    let mut all = vec![
        "--redirect-listen".to_string(),
        "127.0.0.1:0".into(),
        "--redirect-tls-cert".into(),
        pki.path_str("chain.pem"),
        "--redirect-tls-key".into(),
        pki.path_str("key.pem"),
    ];
    all.extend(more.iter().map(|s| s.to_string()));
    all
}

/// A client trusting only the root CA, never following redirects.
fn trusting_client(pki: &Pki, version: Option<Version>) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    let b = match version {
        Some(Version::HTTP_11) => b.http1_only(),
        _ => b,
    };
    b.build().unwrap()
}

async fn start_tls(consul: &ConsulDouble, pki: &Pki, more: &[&str]) -> Running {
    let flags = tls_flags(pki, more);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let p = start(&consul.url(), &flags).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    p
}

fn https(p: &Running, path: &str) -> String {
    format!("https://{}{}", p.redirect.unwrap(), path)
}

/// Why `Poller::bind` refuses these flags.
async fn refused(consul: &ConsulDouble, args: &[String]) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match Poller::bind(config(&consul.url(), &args)).await {
        Ok(_) => panic!("start-up accepted {args:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn redirects_over_https_and_http_1_1_carry_the_active_nodes_location() {
    let pki = pki("h1");
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start_tls(&consul, &pki, &[]).await;
    let r = trusting_client(&pki, Some(Version::HTTP_11))
        .put(https(&p, "/v1/secret/data/a%20b?version=2"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), Version::HTTP_11);
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["location"], "http://127.0.0.2:8200/v1/secret/data/a%20b?version=2");
    assert_eq!(r.headers()["cache-control"], "no-store");

    consul.set_active("vault-c");
    active_until(&p, Duration::from_secs(5), |d| active_node(d) == Some("vault-c")).await;
    let r = trusting_client(&pki, Some(Version::HTTP_11))
        .get(https(&p, "/v1/sys/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "http://127.0.0.4:8200/v1/sys/health");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_offering_h2_by_alpn_gets_its_redirects_over_h2() {
    let pki = pki("h2");
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start_tls(&consul, &pki, &[]).await;
    let client = trusting_client(&pki, None);
    // h2 carries :scheme and :authority beside :path; only :path may reach the Location.
    for path in ["/v1/sys/health", "/v1/kv/x?list=true", "/"] {
        let r = client.get(https(&p, path)).send().await.unwrap();
        assert_eq!(r.version(), Version::HTTP_2, "{path}");
        assert_eq!(r.status(), 307, "{path}");
        assert_eq!(r.headers()["location"], format!("http://127.0.0.2:8200{path}"));
    }
    p.stop().await.unwrap();
}

#[tokio::test]
async fn vault_redirector_health_is_answered_over_tls_and_the_state_api_stays_plain_http() {
    let pki = pki("health");
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start_tls(&consul, &pki, &[]).await;
    for version in [Some(Version::HTTP_11), None] {
        let r = trusting_client(&pki, version)
            .get(https(&p, "/vault-redirector-health"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["healthy"], true, "{body}");
        assert_eq!(body["active_vault"], "127.0.0.2:8200", "{body}");
    }
    let (status, doc) = get_json(&p.url("/v1/active")).await;
    assert_eq!((status, active_node(&doc)), (200, Some("vault-a")));
    p.stop().await.unwrap();
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_answer_it_could_follow() {
    let pki = pki("plain");
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start_tls(&consul, &pki, &[]).await;
    let plain = client().get(format!("http://{}/v1/sys/health", p.redirect.unwrap())).send().await;
    assert!(plain.is_err(), "plain HTTP was answered: {:?}", plain.map(|r| r.status()));
    // The listener is still good for TLS clients afterwards.
    let r = trusting_client(&pki, None).get(https(&p, "/v1/x")).send().await.unwrap();
    assert_eq!(r.status(), 307);
    p.stop().await.unwrap();
}

#[tokio::test]
async fn redirect_scheme_is_the_locations_scheme_whatever_the_listener_speaks() {
    let pki = pki("scheme");
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p =
        start_tls(&consul, &pki, &["--redirect-scheme", "https", "--redirect-port", "8443"]).await;
    let r = trusting_client(&pki, None).get(https(&p, "/v1/x")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "https://127.0.0.2:8443/v1/x");
    p.stop().await.unwrap();

    // And the reverse: a plain listener sending https Locations (TLS terminated elsewhere).
    let p =
        start(&consul.url(), &["--redirect-listen", "127.0.0.1:0", "--redirect-scheme", "https"])
            .await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    let r = client().get(format!("http://{}/v1/x", p.redirect.unwrap())).send().await.unwrap();
    assert_eq!(r.headers()["location"], "https://127.0.0.2:8200/v1/x");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn stopping_does_not_wait_for_idle_keep_alives_or_silent_handshakes() {
    let pki = pki("stop");
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start_tls(&consul, &pki, &[]).await;
    let addr = p.redirect.unwrap();
    // A TCP client that never starts its handshake, and kept-alive h1 and h2 connections.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (h1, h2) = (trusting_client(&pki, Some(Version::HTTP_11)), trusting_client(&pki, None));
    assert_eq!(h1.get(https(&p, "/a")).send().await.unwrap().status(), 307);
    assert_eq!(h2.get(https(&p, "/b")).send().await.unwrap().status(), 307);
    let asked = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), p.stop())
        .await
        .expect("stop waited on idle clients")
        .unwrap();
    assert!(asked.elapsed() < Duration::from_secs(3), "stop took {:?}", asked.elapsed());
    // The silent client was let go, not left open.
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(2), silent.read(&mut buf))
        .await
        .expect("silent client still open");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

#[tokio::test]
async fn start_up_refuses_missing_files_naming_the_path() {
    let pki = pki("missing");
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let missing = pki.path_str("nope-cert.pem");
    let mut args = tls_flags(&pki, &[]);
    args[3] = missing.clone();
    let err = refused(&consul, &args).await;
    assert!(err.contains("redirect TLS certificate") && err.contains(&missing), "{err}");

    let missing = pki.path_str("nope-key.pem");
    let mut args = tls_flags(&pki, &[]);
    args[5] = missing.clone();
    let err = refused(&consul, &args).await;
    assert!(err.contains("redirect TLS key") && err.contains(&missing), "{err}");
}

#[tokio::test]
async fn start_up_refuses_a_key_that_does_not_match_the_certificate_or_files_that_are_not_pem() {
    let pki = pki("mismatch");
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let mut args = tls_flags(&pki, &[]);
    args[5] = pki.path_str("other-key.pem");
    let err = refused(&consul, &args).await;
    assert!(err.contains("other-key.pem") && err.contains("does not match"), "{err}");

    // The key where the certificate belongs, and the certificate where the key belongs.
    let mut args = tls_flags(&pki, &[]);
    args.swap(3, 5);
    let err = refused(&consul, &args).await;
    assert!(err.contains("redirect TLS certificate") && err.contains("key.pem"), "{err}");
    let mut args = tls_flags(&pki, &[]);
    args[5] = pki.path_str("chain.pem");
    let err = refused(&consul, &args).await;
    assert!(err.contains("redirect TLS key") && err.contains("chain.pem"), "{err}");
}

#[tokio::test]
async fn start_up_refuses_one_flag_without_the_other_or_tls_without_a_redirect_listener() {
    let pki = pki("pair");
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let cert_only =
        ["--redirect-listen", "127.0.0.1:0", "--redirect-tls-cert", &pki.path_str("chain.pem")]
            .map(String::from);
    let err = refused(&consul, &cert_only).await;
    assert!(err.contains("only --redirect-tls-cert was given"), "{err}");
    let key_only =
        ["--redirect-listen", "127.0.0.1:0", "--redirect-tls-key", &pki.path_str("key.pem")]
            .map(String::from);
    let err = refused(&consul, &key_only).await;
    assert!(err.contains("only --redirect-tls-key was given"), "{err}");
    let no_listener = tls_flags(&pki, &[]).split_off(2);
    let err = refused(&consul, &no_listener).await;
    assert!(err.contains("need --redirect-listen"), "{err}");
}

/// The binary, killed on drop.
struct Binary(Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_takes_the_files_from_its_environment_twins_and_refuses_bad_ones() {
    let pki = pki("bin");
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let spawn = |key: &str| {
        Command::new(BIN)
            .args([
                "--consul-addr",
                &consul.url(),
                "--listen",
                "127.0.0.1:0",
                "--redirect-listen",
                "127.0.0.1:0",
            ])
            .env_remove("RUST_LOG")
            .env("VAULT_REDIRECT_TLS_CERT", pki.path_str("chain.pem"))
            .env("VAULT_REDIRECT_TLS_KEY", pki.path_str(key))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    let mut child = Binary(spawn("key.pem"));
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line
                .rsplit("redirects listening on ")
                .next()
                .filter(|_| line.contains("redirects listening on "))
            {
                let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
            }
        }
    });
    let addr =
        rx.recv_timeout(Duration::from_secs(10)).expect("the binary logs its redirect address");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r =
            trusting_client(&pki, None).get(format!("https://{addr}/v1/x")).send().await.unwrap();
        if r.status() == 307 {
            assert_eq!(r.headers()["location"], "http://127.0.0.2:8200/v1/x");
            break;
        }
        assert!(Instant::now() < deadline, "no 307 from the binary: {}", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(child);

    let mut bad = Binary(spawn("other-key.pem"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = bad.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the binary started with a key that does not match");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(bad.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("other-key.pem") && stderr.contains("does not match"), "{stderr}");
}
