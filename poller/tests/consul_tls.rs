//! https to Consul: `CONSUL_CACERT` trusts Consul's certificate, an untrusted one is refused
//! (and named as a transport error), `CONSUL_HTTP_SSL_VERIFY=false` skips the check, and a
//! client certificate and key are loaded for mutual TLS.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use vault_redirect_doubles::{ConsulDouble, Pki, PkiSpec};

/// A CA and a leaf for 127.0.0.1 signed by it; the leaf doubles as the client certificate.
fn pki(name: &str) -> Pki {
    Pki::new(name, None, &PkiSpec::leaf_for(&["127.0.0.1"])).unwrap()
}

#[tokio::test]
async fn consul_over_https_is_trusted_through_the_ca_file() {
    let pki = pki("ok");
    let consul = ConsulDouble::start_tls(three_nodes(), &pki.chain, &pki.key).await.unwrap();
    assert!(consul.url().starts_with("https://"));
    let p = start(
        &consul.url(),
        &[
            "--consul-cacert",
            &pki.path_str("ca.pem"),
            "--consul-client-cert",
            &pki.path_str("cert.pem"),
            "--consul-client-key",
            &pki.path_str("key.pem"),
        ],
    )
    .await;
    let doc = active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    assert_eq!(doc["active"]["node"], "vault-a");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_bare_host_port_with_consul_http_ssl_uses_https() {
    let pki = pki("ssl");
    let consul = ConsulDouble::start_tls(three_nodes(), &pki.chain, &pki.key).await.unwrap();
    let p = start(
        &consul.addr().to_string(),
        &["--consul-ssl", "--consul-cacert", &pki.path_str("ca.pem")],
    )
    .await;
    active_until(&p, Duration::from_secs(5), |d| active_node(d).is_some()).await;
    p.stop().await.unwrap();
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_unless_verification_is_off() {
    let pki = pki("untrusted");
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
    let pki = pki("badkey");
    std::fs::write(pki.path("bad-key.pem"), "not a key").unwrap();
    let cfg = config(
        "https://127.0.0.1:1",
        &[
            "--consul-client-cert",
            &pki.path_str("cert.pem"),
            "--consul-client-key",
            &pki.path_str("bad-key.pem"),
        ],
    );
    let err = vault_redirect_poller::Poller::bind(cfg).await.err().unwrap().to_string();
    assert!(err.contains("cert.pem"), "{err}");
}
