//! Every Envoy configuration we ship or render is one Envoy accepts: `envoy --mode validate`
//! on the bootstrap template (one and three pollers, TLS), the proxy-mode template (plain,
//! a TLS listener, TLS to the Vault nodes), the native-redirect bench template
//! and the production-shaped TLS example, with real certificate files and the real .wasm.
//! scripts/run-envoy.sh renders the proxy template too (with and without `VAULT_CACERT`): its
//! rendering must validate and be, byte for byte, the harness's.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use host_test::shipped::filter_wasm;
use vault_redirect_e2e::envoy::{render, validate, EnvoyOptions, TlsFiles};
use vault_redirect_e2e::{target_dir, workspace_root};

/// `VAULT_REDIRECT_MODE=proxy scripts/run-envoy.sh 127.0.0.1:8210 18000 18001 --mode validate`
/// (with `VAULT_CACERT` when given): fails unless Envoy accepts the script's rendering, and
/// returns that rendering (Envoy names the file it validated).
fn run_envoy_validate(cacert: Option<&PathBuf>) -> Result<String> {
    let mut cmd = std::process::Command::new(workspace_root().join("scripts/run-envoy.sh"));
    cmd.args(["127.0.0.1:8210", "18000", "18001", "--mode", "validate"])
        .env("VAULT_REDIRECT_MODE", "proxy")
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("VAULT_CACERT")
        .env_remove("VAULT_REDIRECT_PLUGIN_CONFIG");
    if let Some(ca) = cacert {
        cmd.env("VAULT_CACERT", ca);
    }
    let out = cmd.output().context("running scripts/run-envoy.sh")?;
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        anyhow::bail!("scripts/run-envoy.sh --mode validate failed ({}):\n{text}", out.status);
    }
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("configuration '")?.strip_suffix("' OK"))
        .with_context(|| format!("Envoy named no validated configuration:\n{text}"))?;
    let rendered = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let _ = std::fs::remove_file(path);
    Ok(rendered)
}

fn tls_files(dir: &Path) -> Result<TlsFiles> {
    let cert = rcgen::generate_simple_self_signed(vec!["vault.example.com".to_string()])?;
    let (crt, key) = (dir.join("validate.crt"), dir.join("validate.key"));
    std::fs::write(&crt, cert.cert.pem())?;
    std::fs::write(&key, cert.key_pair.serialize_pem())?;
    Ok(TlsFiles { cert: crt, key })
}

#[test]
fn every_rendered_and_shipped_envoy_configuration_validates() -> Result<()> {
    let wasm = filter_wasm()?;
    let poller = "127.0.0.1:8210".parse()?;
    let (listen, admin) = ("127.0.0.1:18000".parse()?, "127.0.0.1:18001".parse()?);
    let dir: PathBuf = target_dir().join("e2e-logs");
    std::fs::create_dir_all(&dir)?;
    let tls = tls_files(&dir)?;
    let mut variants = vec![
        ("plain", EnvoyOptions::new(poller)),
        (
            "three-pollers",
            EnvoyOptions {
                extra_pollers: vec!["127.0.0.1:8211".parse()?, "127.0.0.1:8212".parse()?],
                ..EnvoyOptions::new(poller)
            },
        ),
        ("tls", EnvoyOptions::tls(poller, tls.clone())),
        ("proxy", EnvoyOptions::proxy(poller)),
        ("proxy-tls", EnvoyOptions { tls: Some(tls.clone()), ..EnvoyOptions::proxy(poller) }),
        ("proxy-upstream-tls", EnvoyOptions::proxy_tls(poller, tls.cert.clone())),
        (
            "native-redirect",
            EnvoyOptions {
                template: "envoy/bench-native-redirect.yaml.tmpl".into(),
                ..EnvoyOptions::new(poller)
            },
        ),
        // Proxy mode's bench baseline, and the access log the failover tests render.
        (
            "native-proxy",
            EnvoyOptions {
                template: "envoy/bench-native-proxy.yaml.tmpl".into(),
                ..EnvoyOptions::new(poller)
            },
        ),
        (
            "proxy-access-log",
            EnvoyOptions {
                access_log: Some(dir.join("validate-access.log")),
                ..EnvoyOptions::proxy(poller)
            },
        ),
    ];
    for (name, opts) in variants.drain(..) {
        let yaml = render(&opts, listen, admin, &wasm)?;
        assert_eq!(validate(name, &yaml)?, Ok(()), "{name}");
    }
    let example =
        std::fs::read_to_string(workspace_root().join("envoy/examples/vault-redirect-tls.yaml"))?
            .replace("/etc/envoy/tls/vault.example.com.crt", &tls.cert.display().to_string())
            .replace("/etc/envoy/tls/vault.example.com.key", &tls.key.display().to_string())
            .replace("/etc/envoy/vault_redirect_filter.wasm", &wasm.display().to_string());
    assert_eq!(
        validate("example-tls", &example)?,
        Ok(()),
        "envoy/examples/vault-redirect-tls.yaml"
    );
    // scripts/run-envoy.sh's rendering of the proxy template, plain and with VAULT_CACERT: it
    // validates, and it is the harness's (the same ports, poller, .wasm and CA file).
    let ca = std::fs::canonicalize(&tls.cert)?;
    for (name, cacert) in [("run-envoy-proxy", None), ("run-envoy-proxy-tls", Some(&ca))] {
        let shell = run_envoy_validate(cacert)?;
        let opts = EnvoyOptions { upstream_ca: cacert.cloned(), ..EnvoyOptions::proxy(poller) };
        let rust = render(&opts, listen, admin, &wasm)?;
        assert!(
            shell == rust,
            "{name}: scripts/run-envoy.sh rendered\n{shell}\nthe harness\n{rust}"
        );
        // The cluster's TLS lines are on exactly when a CA is given.
        assert_eq!(cacert.is_some(), shell.contains("\n    transport_socket:\n"), "{name}");
    }
    // The check can fail: a misspelt field is refused.
    let broken = example.replace("normalize_path: false", "normalise_path: false");
    let refused = validate("broken", &broken)?;
    assert!(refused.as_ref().is_err_and(|e| e.contains("normalise_path")), "{refused:?}");
    Ok(())
}
