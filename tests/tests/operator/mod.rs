//! Helpers for the operator scenarios (`operator_*.rs`): a headless Chromium driven through
//! chromedriver's WebDriver API, promtool, and reading metric names out of PromQL, the alert
//! rules and the Grafana dashboard.
//!
//! Every process started here stops when its handle drops, whatever the test's outcome; a
//! missing tool is an error saying how to install it, never a skip.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use vault_redirect_e2e::proc::Proc;
use vault_redirect_e2e::{free_addr, wait_for, workspace_root};

/// A tool from Debian's packages on PATH, or an error naming the package and scripts/setup.sh.
pub fn tool(name: &str, package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("`{name}` is not installed: run scripts/setup.sh (it installs Debian's `{package}` package)")
}

/// Runs `promtool args` in `dir`, feeding `stdin`; returns (success, stdout + stderr).
pub fn promtool(dir: &Path, args: &[&str], stdin: Option<&str>) -> Result<(bool, String)> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let bin = tool("promtool", "prometheus")?;
    let mut child = Command::new(&bin)
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// `deploy/prometheus` in the workspace.
pub fn prometheus_dir() -> PathBuf {
    workspace_root().join("deploy/prometheus")
}

/// The Grafana dashboard, parsed.
pub fn dashboard() -> Result<Value> {
    let path = workspace_root().join("deploy/grafana/vault-redirect.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The alerts of a Prometheus rule file as (name, expr), read from the YAML the way this
/// project writes it: `- alert: Name` followed by `expr:` inline or as a `|` / `>` block.
/// (The tests compare the count with what `promtool check rules` finds, so a rule this reader
/// missed fails them.)
pub fn alert_exprs(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut name: Option<String> = None;
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        let indent = lines[i].len() - t.len();
        if let Some(n) = t.strip_prefix("- alert:") {
            name = Some(n.trim().trim_matches('"').to_string());
        } else if let (Some(rest), Some(n)) = (t.strip_prefix("expr:"), name.as_ref()) {
            let rest = rest.trim();
            let expr = if rest.starts_with('|') || rest.starts_with('>') {
                let mut body = Vec::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    let nt = next.trim_start();
                    if !nt.is_empty() && next.len() - nt.len() <= indent {
                        break;
                    }
                    body.push(nt);
                    i += 1;
                }
                body.join("\n")
            } else {
                rest.trim_matches('\'').trim_matches('"').to_string()
            };
            out.push((n.clone(), expr));
            name = None;
        }
        i += 1;
    }
    out
}

/// Every PromQL expression of the dashboard's panels (`targets[].expr`, nested rows included).
pub fn dashboard_exprs(d: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, out: &mut Vec<(String, String)>) {
        if let Some(panels) = v["panels"].as_array() {
            for p in panels {
                let title = p["title"].as_str().unwrap_or_default().to_string();
                for t in p["targets"].as_array().into_iter().flatten() {
                    if let Some(e) = t["expr"].as_str() {
                        out.push((title.clone(), e.to_string()));
                    }
                }
                walk(p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(d, &mut out);
    out
}

/// PromQL words that are not metric names.
const PROMQL_WORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    // Aggregations, which may put `by (...)` between their name and their parenthesis.
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
];

/// The metric names an expression reads: identifiers outside `{...}`, `[...]` and strings, not
/// followed by `(` (functions, aggregations), not a PromQL keyword, not the label list of
/// `by`/`without`/`on`/`ignoring`/`group_*`, not a `$variable`.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_label_list = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                while i < b.len() && b[i] != close {
                    if b[i] == b'"' {
                        i += 1;
                        while i < b.len() && b[i] != b'"' {
                            i += if b[i] == b'\\' { 2 } else { 1 };
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            b'"' | b'\'' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'(' if skip_label_list => {
                while i < b.len() && b[i] != b')' {
                    i += 1;
                }
                skip_label_list = false;
                i += 1;
            }
            b'$' => {
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let lower = word.to_ascii_lowercase();
                if ["by", "without", "on", "ignoring", "group_left", "group_right"]
                    .contains(&lower.as_str())
                {
                    // Their label list, when one follows (`group_left` may stand alone).
                    skip_label_list = j < b.len() && b[j] == b'(';
                } else if PROMQL_WORDS.contains(&lower.as_str()) || (j < b.len() && b[j] == b'(') {
                    // keyword or function
                } else {
                    names.insert(word.to_string());
                }
            }
            c if c.is_ascii_digit() => {
                // numbers and durations (5m, 1e3)
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Sample names of a Prometheus exposition (text or OpenMetrics).
pub fn exposed_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium through chromedriver (W3C WebDriver over plain HTTP: no extra crates).

/// A Chromium session. Dropping it ends the session (Chromium exits) and stops chromedriver.
pub struct Browser {
    driver: Option<Proc>,
    base: String,
    session: String,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session with a new, empty
    /// profile and a 1280x1000 window.
    pub async fn start() -> Result<Browser> {
        let chromium = tool("chromium", "chromium")?;
        let chromedriver = tool("chromedriver", "chromium-driver")?;
        let addr = free_addr()?;
        let mut driver = Proc::spawn(
            "chromedriver",
            &chromedriver,
            &[format!("--port={}", addr.port()), "--allowed-ips=127.0.0.1".to_string()],
            &[],
        )?;
        let base = format!("http://{addr}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let ready = wait_for("chromedriver", Duration::from_secs(20), || {
            let (http, url) = (http.clone(), format!("{base}/status"));
            async move {
                let v: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                v["value"]["ready"].as_bool().filter(|r| *r)
            }
        })
        .await;
        if let Err(e) = ready {
            driver.check_alive()?;
            bail!("{e}; chromedriver's log:\n{}", driver.log_tail(20));
        }
        // A new, empty profile per browser. In the system temp dir with a plain path: with a
        // path holding `..` chromedriver never finds Chromium's DevToolsActivePort file.
        let profile = std::env::temp_dir().join(format!(
            "vault-redirect-chromium-{}-{}",
            std::process::id(),
            addr.port()
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)?;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args}
        }}});
        // Built before the session exists, so a failed start still cleans up (see Drop).
        let mut browser =
            Browser { driver: Some(driver), base: base.clone(), session: String::new(), profile };
        let resp: Value =
            http.post(format!("{base}/session")).json(&caps).send().await?.json().await?;
        let Some(session) = resp["value"]["sessionId"].as_str() else {
            let log = browser.driver.as_ref().map(|d| d.log_tail(20)).unwrap_or_default();
            bail!("chromedriver refused the session: {resp}; its log:\n{log}");
        };
        browser.session = session.to_string();
        Ok(browser)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let mut req = http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.with_context(|| format!("WebDriver {url}"))?.json().await?;
        if v["value"]["error"].is_string() {
            bail!("WebDriver {path}: {}", v["value"]);
        }
        Ok(v["value"].clone())
    }

    /// Opens `url` and waits for the document to load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await.map(|_| ())
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub async fn eval(&self, script: &str) -> Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// `textContent` of the element with `id`, or None when there is none.
    pub async fn text(&self, id: &str) -> Result<Option<String>> {
        let v = self
            .eval(&format!(
                "const e = document.getElementById({id:?}); return e ? e.textContent : null;"
            ))
            .await?;
        Ok(v.as_str().map(str::to_string))
    }

    /// Waits until the element `id`'s text satisfies `pred`; returns it.
    pub async fn wait_text(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let t = self.text(id).await?.unwrap_or_default();
            if pred(&t) {
                return Ok(t);
            }
            if std::time::Instant::now() > deadline {
                bail!("the page never showed {what} in #{id}; it shows {t:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG screenshot of the viewport.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await?;
        base64_decode(v.as_str().unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // DELETE the session so chromedriver closes Chromium, then stop chromedriver. A blocking
        // request with std only: drop cannot await.
        if let Some(addr) = self.base.strip_prefix("http://") {
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let req = format!(
                    "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.session
                );
                let _ = s.write_all(req.as_bytes());
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        }
        drop(self.driver.take());
        // Chromium processes outlive a killed chromedriver: end those running on this
        // browser's own profile (a path no other process uses), by pid.
        let marker = format!("--user-data-dir={}", self.profile.display());
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if cmdline.split(|b| *b == 0).any(|arg| arg == marker.as_bytes()) {
                // SAFETY: kill(2) on a process of this test's own browser.
                unsafe {
                    kill(pid, 9);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
pub fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => bail!("not base64: byte {c}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let e = r#"sum by (instance) (rate(vault_redirect_consul_requests_total{outcome!~"changed|unchanged", job="$job"}[5m]))
      / on (instance) group_left sum by (instance) (rate(vault_redirect_consul_requests_total[$__rate_interval])) > 0.5
      and histogram_quantile(0.99, vault_redirect_consul_request_duration_seconds_bucket) > 1e3 or up == 0"#;
    let names: Vec<String> = metric_names(e).into_iter().collect();
    assert_eq!(
        names,
        [
            "up",
            "vault_redirect_consul_request_duration_seconds_bucket",
            "vault_redirect_consul_requests_total"
        ]
    );
}

#[test]
fn alert_exprs_read_inline_and_block_expressions() {
    let yaml = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    for: 1m\n  - alert: B\n    expr: |\n      x > 1\n      and y\n    labels:\n      severity: page\n";
    assert_eq!(
        alert_exprs(yaml),
        [("A".to_string(), "up == 0".to_string()), ("B".to_string(), "x > 1\nand y".to_string())]
    );
}

#[test]
fn base64_decodes_what_webdriver_sends() {
    assert_eq!(
        base64_decode("iVBORw0KGgo=").unwrap(),
        [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n']
    );
}
