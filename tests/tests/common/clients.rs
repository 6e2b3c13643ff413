//! Real Vault clients, driven the same way by the redirect-mode and the proxy-mode scenarios:
//! Python `hvac` (requests underneath), the `bao` CLI (Vault's Go client, forked) and the Rust
//! `vaultrs` crate (reqwest underneath). Each writes a KV v2 secret under `secret/` and reads
//! it back through the address it is given, and says how many redirects it followed, so a
//! redirect-mode test can require the 307 and a proxy-mode test its absence.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use vault_redirect_e2e::openbao::OpenBaoCluster;

use super::curl;
use super::openbao::{assert_wrote_and_read_on, BaoStack, CLIENT_IP};

/// What one client did.
#[derive(Debug)]
pub struct Outcome {
    /// The KV v2 version the write created.
    pub version: u64,
    /// The secret's data as the client read it back.
    pub read: Value,
    /// `sys/leader` as the client read it, when the client was asked to.
    pub leader: Option<Value>,
    /// How many redirects the client followed; `None` when the client cannot tell.
    pub redirects: Option<usize>,
}

/// hvac writes `secret` at `secret/data/<path>`, reads it back and reads `sys/leader`, through
/// `addr`, with every connection from `source` when given (an adapter sets the source
/// address). Every answer requests receives, redirects included, is counted by a hook.
pub async fn hvac(
    addr: &str,
    token: &str,
    source: Option<IpAddr>,
    path: &str,
    secret: &Value,
) -> Result<Outcome> {
    let python = vault_redirect_e2e::workspace_root().join(".venv/bin/python");
    // requests follows a 307 keeping method, body and X-Vault-Token (across hosts it strips
    // only Authorization); trust_env=False keeps proxy variables away from loopback traffic.
    let script = r#"
import json, os, sys
import hvac, requests
from requests.adapters import HTTPAdapter

class FromAddress(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (os.environ["E2E_SOURCE_IP"], 0)
        return super().init_poolmanager(*args, **kwargs)

statuses = []
session = requests.Session()
session.trust_env = False
session.hooks["response"].append(lambda r, *args, **kwargs: statuses.append(r.status_code))
if os.environ.get("E2E_SOURCE_IP"):
    session.mount("http://", FromAddress())
    session.mount("https://", FromAddress())
client = hvac.Client(url=os.environ["E2E_VAULT_ADDR"], token=os.environ["E2E_VAULT_TOKEN"], session=session, timeout=20)
path, secret = os.environ["E2E_PATH"], json.loads(os.environ["E2E_SECRET"])
written = client.secrets.kv.v2.create_or_update_secret(path=path, secret=secret)
read = client.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)
leader = client.sys.read_leader_status()
json.dump({"written": written, "read": read, "leader": leader, "statuses": statuses}, sys.stdout)
"#;
    let mut cmd = tokio::process::Command::new(&python);
    cmd.args(["-c", script])
        .env("E2E_VAULT_ADDR", addr)
        .env("E2E_VAULT_TOKEN", token)
        .env("E2E_PATH", path)
        .env("E2E_SECRET", secret.to_string())
        .env("E2E_SOURCE_IP", source.map(|ip| ip.to_string()).unwrap_or_default())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .context("the hvac script timed out")?
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "the hvac script failed (scripts/setup.sh installs hvac into .venv): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let result: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("hvac printed {}", String::from_utf8_lossy(&out.stdout)))?;
    let statuses = result["statuses"].as_array().context("no statuses")?;
    Ok(Outcome {
        version: result["written"]["data"]["version"].as_u64().context("no version written")?,
        read: result["read"]["data"]["data"].clone(),
        leader: Some(result["leader"].clone()),
        redirects: Some(statuses.iter().filter(|s| s.as_u64().is_some_and(is_redirect)).count()),
    })
}

fn is_redirect(status: u64) -> bool {
    (300..400).contains(&status)
}

/// The bao CLI runs `kv put` of `pairs` at `secret/<path>` then `kv get`, through `addr`, with
/// a clean environment under `home`. The CLI follows one 307 itself, keeping token and body;
/// with `follow_redirects` false it is told not to (`BAO_DISABLE_REDIRECTS`), so a 307 fails
/// the write instead of being followed. Go's client has no source-address option: it
/// connects from the kernel's choice for a loopback peer, 127.0.0.1.
pub async fn bao_cli(
    home: &Path,
    addr: &str,
    token: &str,
    follow_redirects: bool,
    path: &str,
    pairs: &[(&str, &str)],
) -> Result<Outcome> {
    std::fs::create_dir_all(home)?;
    let bao = |args: &[String]| -> Result<tokio::process::Command> {
        let mut cmd = tokio::process::Command::new(vault_redirect_e2e::openbao::binary()?);
        cmd.args(args)
            .env_clear()
            .env("HOME", home)
            .env("BAO_ADDR", addr)
            .env("BAO_TOKEN", token)
            .kill_on_drop(true);
        if !follow_redirects {
            cmd.env("BAO_DISABLE_REDIRECTS", "true");
        }
        Ok(cmd)
    };
    let mut put: Vec<String> =
        ["kv", "put", "-mount=secret", "-format=json", path].map(str::to_string).to_vec();
    put.extend(pairs.iter().map(|(k, v)| format!("{k}={v}")));
    let written = run_json(bao(&put)?, "bao kv put").await?;
    let get = ["kv", "get", "-mount=secret", "-format=json", path].map(str::to_string);
    let read = run_json(bao(&get)?, "bao kv get").await?;
    Ok(Outcome {
        version: written["data"]["version"].as_u64().with_context(|| format!("{written}"))?,
        read: read["data"]["data"].clone(),
        leader: None,
        redirects: None,
    })
}

async fn run_json(mut cmd: tokio::process::Command, what: &str) -> Result<Value> {
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .with_context(|| format!("{what} timed out"))??;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{what} printed {}", String::from_utf8_lossy(&out.stdout)))
}

/// vaultrs writes `data` at `secret/data/<path>` and reads it back through `addr`, from
/// `source` when given. vaultrs builds its reqwest client itself and offers neither a source
/// address nor a redirect hook, so it gets the same client with both: reqwest's default
/// policy (up to ten redirects), each one counted. No roots: `addr` is plain http (vaultrs
/// does the same for http addresses).
pub async fn vaultrs(
    addr: &str,
    token: &str,
    source: Option<IpAddr>,
    path: &str,
    data: &Value,
) -> Result<Outcome> {
    // vaultrs is built without a rustls crypto provider (tests/Cargo.toml): install ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = vaultrs::client::VaultClientSettingsBuilder::default()
        .address(addr)
        .token(token)
        .timeout(Some(Duration::from_secs(20)))
        .build()?;
    let mut client = vaultrs::client::VaultClient::new(settings)?;
    let redirects = Arc::new(AtomicUsize::new(0));
    let counted = redirects.clone();
    let mut http = reqwest013::Client::builder()
        .timeout(Duration::from_secs(20))
        .tls_certs_only(Vec::new())
        .redirect(reqwest013::redirect::Policy::custom(move |attempt| {
            counted.fetch_add(1, Ordering::SeqCst);
            if attempt.previous().len() > 10 {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        }));
    if let Some(ip) = source {
        http = http.local_address(ip);
    }
    client.http.http = http.build()?;
    let meta = vaultrs::kv2::set(&client, "secret", path, data).await?;
    let read: Value = vaultrs::kv2::read(&client, "secret", path).await?;
    Ok(Outcome {
        version: meta.version,
        read,
        leader: None,
        redirects: Some(redirects.load(Ordering::SeqCst)),
    })
}

/// Through `stack`'s Envoy in proxy mode: curl (without `-L`), hvac, the bao CLI (told not to
/// follow redirects) and vaultrs each write a secret at `secret/<label>/<client>` and read it
/// back. Each exchange must land on `active` and nowhere else, logged there with the client's
/// own address ([`assert_wrote_and_read_on`]); and no client may have seen a 307: curl and
/// the CLI would have stopped at it, hvac and vaultrs count the redirects they follow (none),
/// and Envoy's redirect counter stays at 0 while its proxied counter covers every call.
pub async fn each_writes_and_reads_through_the_proxy(
    cluster: &OpenBaoCluster,
    stack: &BaoStack,
    active: &str,
    label: &str,
) -> Result<()> {
    let (addr, token) = (stack.envoy.url(""), cluster.root_token());
    let client_ip = CLIENT_IP.to_string();
    let secret = [("user", "app"), ("password", "p@ss w0rd/é")];
    let secret_json = json!({"user": "app", "password": "p@ss w0rd/é"});

    let url = stack.envoy.url(&format!("/v1/secret/data/{label}/curl"));
    let token_header = format!("X-Vault-Token: {token}");
    let body = json!({ "data": secret_json }).to_string();
    let from =
        ["--interface", &client_ip, "--header", &token_header, "--write-out", "\n%{http_code}"];
    let json_body = ["--header", "Content-Type: application/json", "--data", &body];
    let target = [url.as_str()];
    let write = [&from[..], &json_body[..], &target[..]].concat();
    let read = [&from[..], &target[..]].concat();
    for (what, args) in [("write", write), ("read", read)] {
        let (out, _) = curl(&args).await?;
        let (answer, status) = out.rsplit_once('\n').context("no status line")?;
        ensure!(status == "200", "curl's {what}: {status} {answer}");
        if what == "read" {
            let read: Value = serde_json::from_str(answer)?;
            ensure!(read["data"]["data"] == secret_json, "curl read {read}");
        }
    }

    let ip = Some(IpAddr::V4(CLIENT_IP));
    let hvac = hvac(&addr, token, ip, &format!("{label}/hvac"), &secret_json).await?;
    ensure!((hvac.version, &hvac.read) == (1, &secret_json), "hvac: {hvac:?}");
    ensure!(hvac.redirects == Some(0), "hvac followed redirects: {hvac:?}");
    // sys/leader went through Envoy too, to the active node itself.
    let leader = hvac.leader.clone().unwrap_or_default();
    ensure!(
        leader["is_self"] == true && leader["leader_address"] == cluster.api_addr(active)?.as_str(),
        "hvac's sys/leader: {leader}"
    );

    let home = cluster.dir().join("cli-home");
    let bao = bao_cli(&home, &addr, token, false, &format!("{label}/bao"), &secret).await?;
    ensure!((bao.version, &bao.read) == (1, &secret_json), "bao: {bao:?}");

    let vaultrs = vaultrs(&addr, token, ip, &format!("{label}/vaultrs"), &secret_json).await?;
    ensure!((vaultrs.version, &vaultrs.read) == (1, &secret_json), "vaultrs: {vaultrs:?}");
    ensure!(vaultrs.redirects == Some(0), "vaultrs followed redirects: {vaultrs:?}");

    // The Go client has no source-address option: it connects from 127.0.0.1, and for a peer
    // at exactly 127.0.0.1 Envoy's use_remote_address appends Envoy's own (non-loopback) host
    // address to X-Forwarded-For instead, so the CLI's address is not checked here.
    for (client, from) in [
        ("curl", Some(client_ip.as_str())),
        ("hvac", Some(&client_ip)),
        ("bao", None),
        ("vaultrs", Some(&client_ip)),
    ] {
        let path = format!("secret/data/{label}/{client}");
        assert_wrote_and_read_on(cluster, active, &path, from, &secret)
            .await
            .with_context(|| format!("{client} through the proxy"))?;
    }
    // curl 2, hvac 3, the CLI at least 2, vaultrs 2: counted on the filter's next tick.
    let proxied = stack.envoy.counter_at_least("wasmcustom.vault_redirect.proxied", 9).await?;
    ensure!(proxied >= 9, "Envoy counted {proxied} proxied requests");
    let redirects = stack.envoy.stat("wasmcustom.vault_redirect.redirects").await?.unwrap_or(0);
    ensure!(redirects == 0, "Envoy answered {redirects} requests with a 307");
    stack.assert_no_failures()
}
