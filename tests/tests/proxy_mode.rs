//! Proxy mode (issue 18) in real Envoy: the filter points each request at the active Vault
//! node (the ORIGINAL_DST cluster of envoy/envoy-proxy.yaml.tmpl) and Envoy forwards it. Every
//! assertion is on what the Vault doubles received: only the active node, never a 307, over
//! HTTP/1.1 and HTTP/2, whatever steering headers the client sends; after a failover the new
//! node; without an active node a 503 from the filter and nothing at any node. Then a real
//! OpenBao cluster: curl (no `-L`), hvac, the bao CLI and vaultrs write and read through
//! Envoy without ever seeing a 307, and the active node's audit log shows each client's own
//! address, not Envoy's. Then a cluster under load while its active node is killed and then
//! steps down: requests fail only inside each failover's window, and no write is applied
//! twice. Last, the Istio example (deploy/k8s/istio-proxy-mode.yaml) in real Envoy. (TLS from
//! Envoy to the nodes: proxy_tls.rs.)

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use common::openbao::{BaoStack, CLIENT_IP};
use common::vault::{quick_plugin, VaultStack, TOKEN};
use common::{clients, curl};
use serde_json::{json, Value};
use vault_redirect_doubles::consul::Role;
use vault_redirect_e2e::envoy::{self, EnvoyOptions};
use vault_redirect_e2e::openbao;
use vault_redirect_e2e::proxy_load::{
    fail_over, judge, node_names, summary, unanswered_writes_applied_twice, Fault, HealthTimeline,
    Load, LoadOptions, ProxyStack,
};
use vault_redirect_e2e::wait_for;

async fn proxy_stack() -> Result<VaultStack> {
    let stack = VaultStack::launch(&[], true, |p| EnvoyOptions {
        plugin_config: quick_plugin(r#","mode":"proxy""#),
        ..EnvoyOptions::proxy(p)
    })
    .await?;
    stack.wait_for_proxying("vault-a").await?;
    Ok(stack)
}

fn client(http2: bool) -> Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .local_address(IpAddr::V4(CLIENT_IP));
    let builder = if http2 { builder.http2_prior_knowledge() } else { builder.http1_only() };
    builder.build().context("building the HTTP client")
}

fn assert_only(stack: &VaultStack, active: &str, requests: usize) {
    let got = stack.vault.received(active);
    assert_eq!(got.len(), requests, "{active} received {got:#?}");
    for r in &got {
        assert_eq!(r.forwarded_from, None, "came through a standby: {r:?}");
        assert_eq!(r.header("x-vault-token"), Some(TOKEN));
        // The name the filter writes for Envoy's TLS check is removed before Vault.
        assert_eq!(r.header("x-vault-redirect-upstream-name"), None, "{r:?}");
    }
    for node in ["vault-a", "vault-b", "vault-c"].into_iter().filter(|n| *n != active) {
        assert_eq!(stack.vault.received(node), vec![], "{node} received requests");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_writes_and_reads_reach_only_the_active_node_over_http1_and_http2() -> Result<()> {
    let stack = proxy_stack().await?;
    stack.vault.clear_received();
    for (i, http2) in [false, true].into_iter().enumerate() {
        let http = client(http2)?;
        let url = stack.envoy.url(&format!("/v1/secret/data/proxy/{i}"));
        let written = http
            .post(&url)
            .header("x-vault-token", TOKEN)
            // A client's own X-Forwarded-For stays to the left of the address Envoy appends.
            .header("x-forwarded-for", "192.0.2.1")
            .json(&json!({"data": {"n": i}}))
            .send()
            .await?;
        assert_eq!(written.status(), 200, "http2={http2}: {:?}", written.headers());
        assert_eq!(written.version() == reqwest::Version::HTTP_2, http2);
        let read = http.get(&url).header("x-vault-token", TOKEN).send().await?;
        assert_eq!(read.status(), 200);
        let body: Value = read.json().await?;
        assert_eq!(body["data"]["data"], json!({"n": i}));
    }
    assert_only(&stack, "vault-a", 4);
    for r in stack.vault.received("vault-a") {
        let xff = r.header("x-forwarded-for").context("no X-Forwarded-For")?;
        let hops: Vec<&str> = xff.split(',').map(str::trim).collect();
        assert_eq!(hops.last(), Some(&"127.0.0.9"), "X-Forwarded-For {xff}");
        if r.method == "POST" {
            assert_eq!(hops.first(), Some(&"192.0.2.1"), "X-Forwarded-For {xff}");
        }
    }
    // Counted as proxied (on the filter's next tick), never as redirects.
    wait_for("the proxied requests counted", Duration::from_secs(10), || async {
        let n = stack.envoy.stat("wasmcustom.vault_redirect.proxied").await.ok()??;
        (n >= 4).then_some(())
    })
    .await?;
    assert_eq!(stack.envoy.stat("wasmcustom.vault_redirect.redirects").await?.unwrap_or(0), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_header_steers_a_request_away_from_the_active_node() -> Result<()> {
    let stack = proxy_stack().await?;
    stack.vault.clear_received();
    let standby = stack.vault.addr("vault-b").context("vault-b")?.to_string();
    let envoy = stack.envoy.listen;
    let token = format!("x-vault-token: {TOKEN}");
    // curl --connect-to sends the standby's address as Host (HTTP/1.1) or :authority (HTTP/2)
    // while connecting to Envoy.
    let connect_to = format!("{standby}:{}:{}", envoy.ip(), envoy.port());
    let standby_url = format!("http://{standby}/v1/sys/leader");
    let dst = format!("x-envoy-original-dst-host: {standby}");
    let xfh = format!("x-forwarded-host: {standby}");
    let envoy_url = stack.envoy.url("/v1/sys/leader");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("x-envoy-original-dst-host", vec!["-H", &dst, &envoy_url]),
        ("x-forwarded-host", vec!["-H", &xfh, &envoy_url]),
        ("Host", vec!["--http1.1", "--connect-to", &connect_to, &standby_url]),
        (":authority", vec!["--http2-prior-knowledge", "--connect-to", &connect_to, &standby_url]),
    ];
    for (what, args) in &cases {
        let mut all = vec!["-H", &token, "--write-out", "\n%{http_code}"];
        all.extend(args.iter().copied());
        let (out, _) = curl(&all).await?;
        let (body, status) = out.rsplit_once('\n').context("no status line")?;
        if status != "200" {
            bail!("{what}: status {status}: {body}");
        }
        let leader: Value = serde_json::from_str(body)?;
        assert_eq!(leader["is_self"], true, "{what}: answered by {leader}");
    }
    assert_only(&stack, "vault-a", cases.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_requests_land_on_the_new_node_and_without_one_get_503() -> Result<()> {
    let stack = proxy_stack().await?;
    stack.switch("vault-b");
    stack.wait_for_proxying("vault-b").await?;
    stack.vault.clear_received();
    let http = client(false)?;
    let url = stack.envoy.url("/v1/secret/data/after-failover");
    let written = http
        .post(&url)
        .header("x-vault-token", TOKEN)
        .json(&json!({"data": {"k": "v"}}))
        .send()
        .await?;
    assert_eq!(written.status(), 200);
    assert_only(&stack, "vault-b", 1);

    stack.vault.set_no_active();
    stack.consul.update(|nodes| {
        for n in nodes.iter_mut().filter(|n| n.role == Role::Active) {
            n.role = Role::Standby;
        }
    });
    let out = wait_for("a 503 without an active node", Duration::from_secs(20), || async {
        let r = http.get(&url).header("x-vault-token", TOKEN).send().await.ok()?;
        (r.status() == 503).then_some(r)
    })
    .await?;
    assert_eq!(out.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
    let body: Value = out.json().await?;
    let error = body["errors"][0].as_str().unwrap_or_default().to_string();
    assert!(error.starts_with("no active Vault node"), "{body}");
    stack.vault.clear_received();
    let again = http.get(&url).header("x-vault-token", TOKEN).send().await?;
    assert_eq!(again.status(), 503);
    for node in ["vault-a", "vault-b", "vault-c"] {
        assert_eq!(stack.vault.received(node), vec![], "{node} received a request");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_write_and_read_on_the_active_openbao_node_under_their_own_address_without_a_307(
) -> Result<()> {
    // Envoy listens on 127.0.0.5, but its connections to the nodes leave from 127.0.0.1 (the
    // kernel's source for loopback), the address the shared cluster's listeners trust for
    // X-Forwarded-For; without Envoy's `use_remote_address` the log shows 127.0.0.1 (checked).
    let cluster = openbao::shared().await?;
    let stack = BaoStack::proxy(&cluster, |opts| opts).await?;
    let active = stack.wait_for_proxying(&cluster).await?;
    clients::each_writes_and_reads_through_the_proxy(&cluster, &stack, &active, "proxy/plain").await
}

/// The documents of deploy/k8s/istio-proxy-mode.yaml by kind, as JSON; with `tls`, its `#tls `
/// lines turned on, as the file tells users to, and Vault's CA at `tls`.
fn istio_documents(tls: Option<&std::path::Path>) -> Result<BTreeMap<String, Value>> {
    let path = vault_redirect_e2e::workspace_root().join("deploy/k8s/istio-proxy-mode.yaml");
    let mut text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    if let Some(ca) = tls {
        text = envoy::upstream_tls_lines_on(&text)?
            .replace("/etc/vault-tls/ca.crt", &ca.display().to_string());
    }
    common::yaml_documents(&text, "istio-proxy-mode.yaml")?
        .into_iter()
        .map(|(kind, doc)| Ok((kind, serde_json::to_value(doc)?)))
        .collect()
}

/// Merges `patch` into `base` the way Istio's MERGE patch does for these fields (protobuf
/// merge: messages field by field, scalars and lists replaced).
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (k, v) in patch {
                merge(base.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

/// The Istio example's own pieces as one Envoy bootstrap: the gateway's listener with the
/// VirtualService's route after the EnvoyFilter's MERGE, the filter with the WasmPlugin's
/// pluginConfig (as the JSON Istio hands the filter), the EnvoyFilter's cluster, and the
/// poller under the Istio cluster name the plugin configuration names. Placeholders are
/// filled by the test harness like the shipped templates'.
fn istio_bootstrap(tls: Option<&std::path::Path>) -> Result<(String, String)> {
    let docs = istio_documents(tls)?;
    let doc = |kind: &str| docs.get(kind).with_context(|| format!("no {kind} document"));
    let (plugin, envoy_filter) = (doc("WasmPlugin")?, doc("EnvoyFilter")?);
    let (gateway, service) = (doc("Gateway")?, doc("VirtualService")?);
    let plugin_config = serde_json::to_string(&plugin["spec"]["pluginConfig"])?;
    let poller_cluster =
        plugin["spec"]["pluginConfig"]["poller_cluster"].as_str().context("poller_cluster")?;
    let patches = envoy_filter["spec"]["configPatches"].as_array().context("configPatches")?;
    let patch = |applies: &str| {
        patches
            .iter()
            .find(|p| p["applyTo"] == applies)
            .with_context(|| format!("no {applies} patch"))
    };
    let cluster = patch("CLUSTER")?["patch"]["value"].clone();
    let route_patch = patch("HTTP_ROUTE")?;

    // The patch must find what Istio builds from the Gateway and VirtualService: the virtual
    // host `host:port` and the route named after the VirtualService's http entry.
    let server = &gateway["spec"]["servers"][0];
    let vhost = format!(
        "{}:{}",
        server["hosts"][0].as_str().context("gateway host")?,
        server["port"]["number"].as_u64().context("gateway port")?
    );
    let target = &route_patch["match"]["routeConfiguration"]["vhost"];
    assert_eq!(target["name"], vhost.as_str(), "the route patch's virtual host");
    let http = &service["spec"]["http"][0];
    assert_eq!(target["route"]["name"], http["name"], "the route patch's route name");
    assert_eq!(service["spec"]["gateways"][0], gateway["metadata"]["name"]);
    let destination = &http["route"][0]["destination"];
    let mut route = json!({
        "name": http["name"],
        "match": {"prefix": "/"},
        "route": {"cluster": format!(
            "outbound|{}||{}",
            destination["port"]["number"], destination["host"].as_str().unwrap_or_default()
        )},
    });
    merge(&mut route, &route_patch["patch"]["value"]);

    let socket = |address: &str, port: &str| json!({"socket_address": {"address": address, "port_value": port}});
    let bootstrap = json!({
        "admin": {"address": socket("127.0.0.1", "{{ADMIN_PORT}}")},
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": socket("{{LISTEN_ADDRESS}}", "{{LISTEN_PORT}}"),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "gateway",
                        // Istio's gateways set it.
                        "use_remote_address": true,
                        "route_config": {"name": "https.443", "virtual_hosts": [{
                            "name": vhost, "domains": ["*"], "routes": [route],
                        }]},
                        "http_filters": [
                            {
                                "name": "envoy.filters.http.wasm",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                    "config": {
                                        "name": "vault-redirect-proxy",
                                        "root_id": "vault-redirect-proxy",
                                        "vm_config": {
                                            "vm_id": "vault-redirect-proxy",
                                            "runtime": "envoy.wasm.runtime.v8",
                                            "code": {"local": {"filename": "{{WASM_PATH}}"}},
                                        },
                                        "configuration": {
                                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                                            "value": plugin_config,
                                        },
                                    },
                                },
                            },
                            {
                                "name": "envoy.filters.http.router",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                                },
                            },
                        ],
                    },
                }]}],
            }],
            "clusters": [cluster, {
                "name": poller_cluster,
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": poller_cluster, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": socket("{{POLLER_HOST}}", "{{POLLER_PORT}}")}},
                ]}]},
            }],
        },
    });
    Ok((serde_json::to_string_pretty(&bootstrap)?, plugin_config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_istio_example_routes_to_the_active_node_in_real_envoy() -> Result<()> {
    let dir = vault_redirect_e2e::target_dir().join("e2e-logs");
    std::fs::create_dir_all(&dir)?;
    // The TLS variant: Envoy accepts it with the filled-in placeholders, and the filter accepts
    // its plugin configuration (an upstream_server_name it refused would fail every request).
    let pki = vault_redirect_e2e::pki::loopback()?;
    let (tls_bootstrap, tls_plugin) = istio_bootstrap(Some(&pki.path("ca.pem")))?;
    assert!(tls_plugin.contains("upstream_server_name"), "{tls_plugin}");
    host_test::shipped::host()
        .map_err(anyhow::Error::msg)?
        .with_plugin_config(tls_plugin)
        .with_known_clusters(["outbound|8210||vault-redirect-poller.vault.svc.cluster.local"])
        .start_vm()?
        .configure_result()
        .then_some(())
        .context("the filter refused the TLS variant's plugin configuration")?;
    let tls_template = dir.join(format!("istio-proxy-mode-tls-{}.json", std::process::id()));
    std::fs::write(&tls_template, tls_bootstrap)?;
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let rendered = envoy::render(
        &EnvoyOptions { template: tls_template.display().to_string(), ..EnvoyOptions::proxy(any) },
        any,
        any,
        &host_test::shipped::filter_wasm()?,
    );
    let _ = std::fs::remove_file(&tls_template);
    if let Err(refusal) = envoy::validate("istio-proxy-mode-tls", &rendered?)? {
        bail!("Envoy refuses the Istio example's TLS variant:\n{refusal}");
    }

    let (bootstrap, plugin_config) = istio_bootstrap(None)?;
    let template = dir.join(format!("istio-proxy-mode-{}.json", std::process::id()));
    std::fs::write(&template, bootstrap)?;
    let stack = VaultStack::launch(&[], true, |p| EnvoyOptions {
        template: template.display().to_string(),
        plugin_config,
        ..EnvoyOptions::proxy(p)
    })
    .await;
    let _ = std::fs::remove_file(&template);
    let stack = stack?;
    stack.wait_for_proxying("vault-a").await?;
    stack.vault.clear_received();
    let http = client(false)?;
    let url = stack.envoy.url("/v1/secret/data/istio");
    let written = http
        .post(&url)
        .header("x-vault-token", TOKEN)
        .header(
            "x-envoy-original-dst-host",
            stack.vault.addr("vault-c").context("vault-c")?.to_string(),
        )
        .json(&json!({"data": {"via": "istio"}}))
        .send()
        .await?;
    assert_eq!(written.status(), 200, "{:?}", written.headers());
    assert_only(&stack, "vault-a", 1);

    stack.switch("vault-b");
    stack.wait_for_proxying("vault-b").await?;
    stack.vault.clear_received();
    let read = http.get(&url).header("x-vault-token", TOKEN).send().await?;
    assert_eq!(read.status(), 200);
    assert_only(&stack, "vault-b", 1);
    if !stack.envoy.filter_failures().is_empty() {
        bail!("the filter failed in Envoy:\n{}", stack.envoy.filter_failures().join("\n"));
    }
    Ok(())
}

/// Issue 18's failover under load: three clients loop on KV writes (each to a path of its own)
/// and reads of what they wrote, through Envoy in proxy mode with the poller probing every
/// 100 ms, while the active node is SIGKILLed (then restarted as a standby) and while the next
/// one steps down. Envoy's access log says which node took each request. Inside a window (the
/// fault until the new node's first 200 plus the probe interval plus `proxy_load::MARGIN`)
/// requests may fail and are counted; outside, every request succeeded at the active node.
/// No write was applied twice: each answer, each read back and a final read of every write
/// whose answer was lost report version 1 at most; and Envoy sent no request again after an
/// attempt that had written to a Vault node (its per-attempt log: every retried attempt wrote
/// nothing upstream). Tried with `retry_on: 5xx,reset,...` on the route: it then lists the
/// reads that Vault answered 500 during the step-down and Envoy sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_requests_fail_only_inside_a_sigkill_or_step_down_window_and_no_write_repeats(
) -> Result<()> {
    let mut cluster = openbao::shared().await?;
    let interval = Duration::from_millis(100);
    let stack = ProxyStack::start(&cluster, interval, 2).await?;
    let timeline = HealthTimeline::start(&cluster)?;
    let first = cluster.wait_until_settled(Duration::from_secs(30)).await?;
    let load = Load::start(
        &format!("http://{}", stack.envoy.listen),
        LoadOptions {
            clients: 3,
            pace: Duration::from_millis(10),
            token: cluster.root_token().to_string(),
            prefix: format!("load-{}-{}", std::process::id(), unique_suffix()),
        },
    )?;
    let settled_requests = |since: SystemTime| {
        let load = &load;
        move || async move { (load.done_since(since) >= 300).then_some(()) }
    };
    wait_for(
        "300 requests before the fault",
        Duration::from_secs(30),
        settled_requests(SystemTime::now()),
    )
    .await?;
    let kill = fail_over(&mut cluster, &timeline, Fault::Kill, interval).await?;
    wait_for(
        "300 requests after the SIGKILL's window",
        Duration::from_secs(30),
        settled_requests(kill.bound),
    )
    .await?;
    // The killed node comes back as a standby under the same load: no request may notice.
    cluster.start_node(&kill.old).await?;
    cluster.wait_until_settled(Duration::from_secs(60)).await?;
    let step = fail_over(&mut cluster, &timeline, Fault::StepDown, interval).await?;
    wait_for(
        "300 requests after the step-down's window",
        Duration::from_secs(30),
        settled_requests(step.bound),
    )
    .await?;
    let requests = load.stop().await;

    let ids: Vec<&str> = requests.iter().map(|r| r.id.as_str()).collect();
    let log = stack.access_log_for(&ids).await?;
    let failovers = [kill, step];
    let verdict = judge(&requests, &log, &timeline, &failovers, &first, &node_names(&cluster));
    for window in &verdict.windows {
        eprintln!("proxy load: {}", summary(window));
        for example in &window.examples {
            eprintln!("proxy load:   e.g. {example}");
        }
    }
    eprintln!("proxy load: {} requests, {} outside the windows", requests.len(), verdict.settled);
    let resent = stack.resent_after_reaching_vault(&log).await?;
    let twice = unanswered_writes_applied_twice(&cluster, &requests).await?;
    assert_eq!(verdict.settled_bad, Vec::<String>::new(), "failed or misrouted outside a window");
    assert_eq!(verdict.replayed, Vec::<String>::new(), "writes applied twice");
    assert_eq!(twice, Vec::<String>::new(), "unanswered writes applied twice");
    assert_eq!(verdict.unlogged, 0, "requests missing from Envoy's access log");
    assert_eq!(resent, Vec::<String>::new(), "requests sent again after reaching Vault");
    if !stack.envoy.filter_failures().is_empty() {
        bail!("the filter failed in Envoy:\n{}", stack.envoy.filter_failures().join("\n"));
    }
    Ok(())
}

/// A suffix no earlier run of the shared cluster used.
fn unique_suffix() -> u128 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}
