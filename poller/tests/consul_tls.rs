//! https to Consul: `CONSUL_CACERT` trusts Consul's certificate, an untrusted one is refused
//! (and named as a transport error), `CONSUL_HTTP_SSL_VERIFY=false` skips the check, and a
//! client certificate and key are loaded for mutual TLS.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use vault_redirect_doubles::ConsulDouble;

struct Pki {
    dir: PathBuf,
    chain: String,
    key: String,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    /// A CA and a leaf for 127.0.0.1 signed by it, written to a fresh directory.
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("vrp-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("client.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("client-key.pem"), leaf_key.serialize_pem()).unwrap();
        Pki { dir, chain: leaf.pem(), key: leaf_key.serialize_pem() }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn consul_over_https_is_trusted_through_the_ca_file() {
    let pki = Pki::new("ok");
    let consul = ConsulDouble::start_tls(three_nodes(), &pki.chain, &pki.key).await.unwrap();
    assert!(consul.url().starts_with("https://"));
    let p = start(
        &consul.url(),
        &[
            "--consul-cacert",
            &pki.path("ca.pem"),
            "--consul-client-cert",
            &pki.path("client.pem"),
            "--consul-client-key",
            &pki.path("client-key.pem"),
        ],
    )
    .await;
    let doc = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    assert_eq!(doc["active"]["node"], "vault-a");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_bare_host_port_with_consul_http_ssl_uses_https() {
    let pki = Pki::new("ssl");
    let consul = ConsulDouble::start_tls(three_nodes(), &pki.chain, &pki.key).await.unwrap();
    let p = start(
        &consul.addr().to_string(),
        &["--consul-ssl", "--consul-cacert", &pki.path("ca.pem")],
    )
    .await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    p.stop().await.unwrap();
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_unless_verification_is_off() {
    let pki = Pki::new("untrusted");
    let consul = ConsulDouble::start_tls(three_nodes(), &pki.chain, &pki.key).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    active_until(&p, Duration::from_secs(5), |d| d["version"] != 0).await;
    let (status, h) = get_json(&p.url("/health")).await;
    assert_eq!(status, 503);
    assert!(h["problems"].to_string().contains("cannot reach Consul"), "{h}");
    p.stop().await.unwrap();

    let p = start(&consul.url(), &["--consul-ssl-verify=false"]).await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_key_that_does_not_parse_stops_start_up_naming_the_file() {
    let pki = Pki::new("badkey");
    std::fs::write(pki.dir.join("bad-key.pem"), "not a key").unwrap();
    let cfg = config(
        "https://127.0.0.1:1",
        &[
            "--consul-client-cert",
            &pki.path("client.pem"),
            "--consul-client-key",
            &pki.path("bad-key.pem"),
        ],
    );
    let err = vault_redirect_poller::Poller::bind(cfg).await.err().unwrap().to_string();
    assert!(err.contains("client.pem"), "{err}");
}
