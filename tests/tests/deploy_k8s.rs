//! The Kubernetes/Istio deployment (deploy/k8s/) agrees with the poller that really exists:
//! every flag and environment variable it sets is in `vault-redirect-poller --help`, the
//! ports line up from container to Service to the WasmPlugin's Istio cluster name, the probe
//! paths answer 200 on a real poller (and are not `/health`, which is 503 during elections),
//! and the memory request covers the RSS measured with 10,000 waiters (docs/BENCHMARKS.md).

mod common;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_norway::Value;
use vault_redirect_doubles::ConsulDouble;
use vault_redirect_e2e::poller::{binary, Poller};
use vault_redirect_e2e::{client, workspace_root};

/// Every document of a multi-document YAML file, by kind.
fn documents(path: &str) -> Result<BTreeMap<String, Value>> {
    let text = std::fs::read_to_string(workspace_root().join(path))
        .with_context(|| format!("reading {path}"))?;
    common::yaml_documents(&text, path)
}

fn s<'a>(v: &'a Value, what: &str) -> Result<&'a str> {
    v.as_str().with_context(|| format!("{what} is not a string: {v:?}"))
}

/// The cluster-local name of a Service document.
fn service_fqdn(service: &Value) -> Result<String> {
    Ok(format!(
        "{}.{}.svc.cluster.local",
        s(&service["metadata"]["name"], "Service name")?,
        s(&service["metadata"]["namespace"], "Service namespace")?
    ))
}

/// Kubernetes quantities as bytes (`128Mi`, `1Gi`, `64M`).
fn bytes(q: &str) -> Result<u64> {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return Ok(n.parse::<u64>().with_context(|| format!("quantity {q:?}"))? * mult);
        }
    }
    q.parse().with_context(|| format!("quantity {q:?}"))
}

/// The largest poller RSS (MB) of a 10,000-waiter row in the Fan-out section of
/// docs/BENCHMARKS.md.
fn measured_rss_mb() -> Result<f64> {
    let text = std::fs::read_to_string(workspace_root().join("docs/BENCHMARKS.md"))
        .context("reading docs/BENCHMARKS.md")?;
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Fan-out"))
        .context("no \"## Fan-out\" in docs/BENCHMARKS.md")?;
    let mut max: Option<f64> = None;
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | run | waiters | poller RSS, all parked | ...
        if cells.len() > 4 && cells[2] == "10000" {
            let mb: f64 = cells[3]
                .trim_end_matches(" MB")
                .parse()
                .with_context(|| format!("RSS cell in {line:?}"))?;
            max = Some(max.map_or(mb, |m: f64| m.max(mb)));
        }
    }
    max.context("no 10000-waiter row in the Fan-out table of docs/BENCHMARKS.md")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_deployment_agrees_with_the_poller_binary() -> Result<()> {
    let poller_docs = documents("deploy/k8s/poller.yaml")?;
    let deployment = poller_docs.get("Deployment").context("no Deployment")?;
    let service = poller_docs.get("Service").context("no Service")?;
    assert!(poller_docs.contains_key("PodDisruptionBudget"), "no PodDisruptionBudget");
    let replicas = deployment["spec"]["replicas"].as_u64().context("replicas")?;
    assert!(replicas >= 2, "{replicas} replica(s): one poller is a single point of failure");

    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_mapping().context("Service selector")? {
        assert_eq!(&labels[k], v, "Service selector {k:?} does not match the pod labels");
    }
    let containers = pod["spec"]["containers"].as_sequence().context("containers")?;
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // Flags and environment variables exist in the real binary's --help.
    let help = std::process::Command::new(binary()?).arg("--help").output()?;
    let help = String::from_utf8(help.stdout)?;
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .context("args")?
        .iter()
        .map(|a| s(a, "arg"))
        .collect::<Result<_>>()?;
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("  {flag} <")) || help.contains(&format!("  {flag} [")),
            "flag {flag} is not in --help"
        );
    }
    for e in c["env"].as_sequence().context("env")? {
        let name = s(&e["name"], "env name")?;
        let known = help.contains(&format!("[env: {name}="))
            || help.contains(&format!("[env: {name}]"))
            || name == "RUST_LOG";
        assert!(known, "environment variable {name} is not in --help");
    }

    // The listen port is the container port, the Service's target, and the WasmPlugin's cluster.
    let listen = args
        .iter()
        .position(|a| *a == "--listen")
        .and_then(|i| args.get(i + 1))
        .context("no --listen")?;
    let port: u64 = listen.rsplit(':').next().context("listen port")?.parse()?;
    assert!(listen.starts_with("0.0.0.0:"), "--listen {listen} is not reachable from other pods");
    let ports = c["ports"].as_sequence().context("ports")?;
    let named = ports
        .iter()
        .find(|p| p["containerPort"].as_u64() == Some(port))
        .context("no containerPort for --listen")?;
    let port_name = s(&named["name"], "port name")?;
    let svc_port = &service["spec"]["ports"][0];
    let target = &svc_port["targetPort"];
    assert!(
        target.as_str() == Some(port_name) || target.as_u64() == Some(port),
        "Service targets {target:?}, the poller listens on {port}"
    );
    assert!(
        s(&svc_port["name"], "Service port name")?.starts_with("http"),
        "Istio needs the port named http*"
    );
    let svc_port_number = svc_port["port"].as_u64().context("Service port")?;
    let fqdn = service_fqdn(service)?;

    let plugin = documents("deploy/k8s/wasmplugin.yaml")?;
    let plugin = plugin.get("WasmPlugin").context("no WasmPlugin")?;
    let cfg = &plugin["spec"]["pluginConfig"];
    assert_eq!(
        s(&cfg["poller_cluster"], "poller_cluster")?,
        format!("outbound|{svc_port_number}||{fqdn}")
    );
    assert_eq!(s(&cfg["poller_authority"], "poller_authority")?, fqdn);
    let rule = documents("deploy/k8s/destinationrule.yaml")?;
    let rule = rule.get("DestinationRule").context("no DestinationRule")?;
    assert_eq!(s(&rule["spec"]["host"], "DestinationRule host")?, fqdn);
    assert!(rule["spec"]["trafficPolicy"]["outlierDetection"].is_mapping(), "no outlier detection");

    // Memory: the request covers the RSS measured with 10,000 waiters.
    let requests = &c["resources"]["requests"];
    let request = bytes(s(&requests["memory"], "memory request")?)?;
    let limit = bytes(s(&c["resources"]["limits"]["memory"], "memory limit")?)?;
    let measured = measured_rss_mb()?;
    assert!(
        request as f64 >= measured * 1_000_000.0,
        "memory request {request} B is below the measured {measured} MB"
    );
    assert!(limit >= request, "limit {limit} below request {request}");

    // The probe paths answer 200 on a real poller whose Vault is electing (no active node).
    let consul = ConsulDouble::start(vec![vault_redirect_doubles::VaultNode::new(
        "vault-a",
        "127.0.0.2",
        8200,
        vault_redirect_doubles::Role::Standby,
    )])
    .await?;
    let p = Poller::start(&consul.url(), &[]).await?;
    vault_redirect_e2e::wait_for(
        "the poller's first Consul answer",
        std::time::Duration::from_secs(20),
        || async { p.state().await.ok().filter(|d| d.consul_index > 0).map(|_| ()) },
    )
    .await?;
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let get = &c[probe]["httpGet"];
        let path = s(&get["path"], "probe path")?;
        assert_ne!(
            path, "/health",
            "{probe} on /health restarts or removes every poller during a Vault election"
        );
        let probe_port = &get["port"];
        assert!(
            probe_port.as_str() == Some(port_name) || probe_port.as_u64() == Some(port),
            "{probe} port {probe_port:?}"
        );
        let status =
            client()?.get(format!("http://{}{path}", p.addr)).send().await?.status().as_u16();
        assert_eq!(status, 200, "{probe} {path} on a real poller during an election");
    }
    Ok(())
}

/// The arguments of the only container of `deployment`.
fn container_args(deployment: &Value) -> Result<Vec<String>> {
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    c["args"]
        .as_sequence()
        .context("args")?
        .iter()
        .map(|a| s(a, "arg").map(str::to_string))
        .collect()
}

/// The value after `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_source_deployment_reads_only_pods_and_runs_against_the_api() -> Result<()> {
    let docs = documents("deploy/k8s/poller-kubernetes.yaml")?;
    let get = |kind: &str| docs.get(kind).with_context(|| format!("no {kind}"));
    let (account, role, binding) = (get("ServiceAccount")?, get("Role")?, get("RoleBinding")?);
    let (deployment, service) = (get("Deployment")?, get("Service")?);
    assert!(docs.contains_key("PodDisruptionBudget"), "no PodDisruptionBudget");
    let args = container_args(deployment)?;
    assert_eq!(flag_value(&args, "--source"), Some("kubernetes"));
    let namespace = flag_value(&args, "--k8s-namespace").context("no --k8s-namespace")?;

    // RBAC: get, list and watch on pods, nothing else, in Vault's namespace, bound to the
    // service account the pods run as.
    for (what, doc) in [("ServiceAccount", account), ("Role", role), ("RoleBinding", binding)] {
        assert_eq!(s(&doc["metadata"]["namespace"], "namespace")?, namespace, "{what}");
    }
    let rules = role["rules"].as_sequence().context("rules")?;
    assert_eq!(rules.len(), 1, "one rule");
    let strings = |v: &Value| -> Result<Vec<String>> {
        v.as_sequence()
            .context("a list")?
            .iter()
            .map(|x| s(x, "item").map(str::to_string))
            .collect()
    };
    assert_eq!(strings(&rules[0]["apiGroups"])?, [""]);
    assert_eq!(strings(&rules[0]["resources"])?, ["pods"]);
    assert_eq!(strings(&rules[0]["verbs"])?, ["get", "list", "watch"]);
    assert_eq!(s(&binding["roleRef"]["kind"], "roleRef kind")?, "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let subject = &binding["subjects"][0];
    assert_eq!(s(&subject["kind"], "subject kind")?, "ServiceAccount");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(subject["name"], pod["serviceAccountName"]);
    assert_eq!(subject["name"], account["metadata"]["name"]);
    assert_ne!(pod["automountServiceAccountToken"].as_bool(), Some(false), "no token mounted");

    // Every flag is in the binary's --help.
    let help = std::process::Command::new(binary()?).arg("--help").output()?;
    let help = String::from_utf8(help.stdout)?;
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(&format!("  {flag} <")), "flag {flag} is not in --help");
    }

    // The WasmPlugin long-polls this Service.
    let fqdn = service_fqdn(service)?;
    let plugin = documents("deploy/k8s/wasmplugin.yaml")?;
    let plugin = plugin.get("WasmPlugin").context("no WasmPlugin")?;
    assert_eq!(s(&plugin["spec"]["pluginConfig"]["poller_authority"], "authority")?, fqdn);
    // The scheme agrees with the worked example's Vault (TLS on: https).
    let values: Value = serde_norway::from_str(&std::fs::read_to_string(
        workspace_root().join("deploy/k8s/vault-helm-values.yaml"),
    )?)?;
    let tls = values["global"]["tlsDisable"].as_bool() == Some(false);
    assert_eq!(flag_value(&args, "--k8s-scheme"), Some(if tls { "https" } else { "http" }));
    assert_eq!(
        s(&plugin["spec"]["pluginConfig"]["scheme"], "scheme")?,
        if tls { "https" } else { "http" }
    );
    assert_eq!(values["server"]["ha"]["enabled"].as_bool(), Some(true), "the chart in HA mode");
    let raft = s(&values["server"]["ha"]["raft"]["config"], "raft config")?;
    assert!(raft.contains("service_registration \"kubernetes\""), "no Kubernetes registration");

    // The manifest's flags on a real poller against the API double (whose pods carry the
    // chart's labels): the selector finds the servers and the active pod is served over https.
    let skip = ["--listen", "--source"];
    let mut extra: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if skip.contains(&args[i].as_str()) {
            i += 2;
            continue;
        }
        extra.push(&args[i]);
        i += 1;
    }
    let stack = vault_redirect_e2e::kubernetes::KubeStack::start(&extra).await?;
    let doc = vault_redirect_e2e::wait_for(
        "the active pod",
        std::time::Duration::from_secs(20),
        || async { stack.poller.state().await.ok().filter(|d| d.active.is_some()) },
    )
    .await?;
    let active = doc.active.context("active")?;
    assert_eq!(
        (active.node.as_str(), active.address.as_str(), active.port),
        ("vault-0", "127.0.0.2", 8200)
    );
    assert_eq!(doc.scheme, Some(vault_redirect_core::Scheme::Https));
    Ok(())
}
