//! The release that scripts/release.sh writes (target/dist, or VAULT_REDIRECT_DIST) is what
//! docs/install.md says it is, read with the tools a user has: `sha256sum -c` verifies every
//! file; skopeo and umoci read both OCI layouts; the filter image is the Wasm image "compat"
//! variant Istio's WasmPlugin pulls and holds the very .wasm of the release; the poller image
//! unpacks to a root holding only a static binary, a CA bundle and the non-root user, and that
//! binary reports this workspace's version and commit, lists every flag the poller has, and
//! serves the active node from a Consul double; the Kubernetes manifests name both images by
//! tag and by the digest in the layouts; real Envoy fetches the released .wasm over HTTP with
//! the SHA-256 from SHA256SUMS (docs/install.md, "Plain Envoy") and redirects with it, and
//! refuses it under another hash; the layouts pushed to a real registry (Debian's
//! docker-registry) with the commands of docs/install.md keep the digests the manifests name,
//! and the filter pulled by that digest, the way Istio does, is the released .wasm.
//!
//! Like the end-to-end tests, this reads a built release and never builds one: when it is
//! missing or stale, the error says to run scripts/release.sh.

// One module, so scripts/test.sh can run every other test while scripts/release.sh is still
// building (`--skip release_artifacts::`) and these once the release is there.
mod release_artifacts {

    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use anyhow::{bail, ensure, Context, Result};
    use serde_json::Value;
    use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};
    use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
    use vault_redirect_e2e::poller::{binary, Poller};
    use vault_redirect_e2e::proc::Proc;
    use vault_redirect_e2e::{client, free_addr, location, target_dir, wait_for, workspace_root};

    /// The workspace's version, the one in Cargo.toml (this crate inherits it).
    const VERSION: &str = env!("CARGO_PKG_VERSION");
    const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
    const BINARY_IN_IMAGE: &str = "usr/local/bin/vault-redirect-poller";

    /// The release directory, checked to be there.
    fn dist() -> Result<PathBuf> {
        let dir = std::env::var_os("VAULT_REDIRECT_DIST")
            .map(PathBuf::from)
            .unwrap_or_else(|| target_dir().join("dist"));
        ensure!(
            dir.join("SHA256SUMS").is_file(),
            "no release in {}: build it with scripts/release.sh",
            dir.display()
        );
        Ok(dir)
    }

    /// Runs a command and returns its stdout, or an error with its stderr.
    fn run(program: &str, args: &[&str], dir: Option<&Path>) -> Result<String> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        let out = cmd.output().with_context(|| {
            format!("running {program} (missing? scripts/setup.sh installs skopeo and umoci)")
        })?;
        ensure!(
            out.status.success(),
            "{program} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    fn json(text: &str) -> Result<Value> {
        serde_json::from_str(text).with_context(|| format!("not JSON: {text}"))
    }

    fn path_str(p: &Path) -> Result<&str> {
        p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))
    }

    /// A scratch directory under target/, one per test (they run in parallel), removed when the
    /// test ends, however it ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Result<Scratch> {
            let dir = target_dir().join(format!("release-test-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            Ok(Scratch(dir))
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Unpacks `layout:tag` with umoci into an OCI runtime bundle (`config.json` and `rootfs/`).
    fn unpack_bundle(layout: &Path, tag: &str, into: &Path) -> Result<Value> {
        let image = format!("{}:{tag}", path_str(layout)?);
        run("umoci", &["unpack", "--rootless", "--image", &image, path_str(into)?], None)?;
        json(&std::fs::read_to_string(into.join("config.json"))?)
    }

    /// Every regular file under `dir`, as paths relative to it.
    fn files(dir: &Path) -> Result<BTreeSet<String>> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> Result<()> {
            for entry in
                std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let path = entry?.path();
                if path.is_dir() {
                    walk(root, &path, out)?;
                } else {
                    out.insert(path_str(path.strip_prefix(root)?)?.to_string());
                }
            }
            Ok(())
        }
        let mut out = BTreeSet::new();
        walk(dir, dir, &mut out)?;
        Ok(out)
    }

    /// The digest a layout's index.json gives the tag.
    fn tagged_digest(layout: &Path, tag: &str) -> Result<String> {
        let index = json(&std::fs::read_to_string(layout.join("index.json"))?)?;
        let found = index["manifests"]
            .as_array()
            .context("index.json has no manifests")?
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .with_context(|| format!("no tag {tag} in {}", layout.display()))?;
        let digest = found["digest"].as_str().context("descriptor without digest")?.to_string();
        // The blob's name is its content's digest: what a registry will check on push.
        let hex = digest.strip_prefix("sha256:").context("not a sha256 digest")?;
        let blob = layout.join("blobs/sha256").join(hex);
        let sum = run("sha256sum", &[path_str(&blob)?], None)?;
        ensure!(sum.starts_with(hex), "blob {} does not hash to its name: {sum}", blob.display());
        Ok(digest)
    }

    /// The released architectures: name in the file, OCI architecture, ELF e_machine.
    const RELEASED_ARCHES: [(&str, &str, u16); 2] =
        [("x86_64", "amd64", 62), ("aarch64", "arm64", 183)];

    /// An ELF file's machine, and whether it asks for a program interpreter (a dynamic loader):
    /// a binary without one runs in an image holding nothing else.
    fn elf_facts(elf: &[u8]) -> Result<(u16, bool)> {
        ensure!(
            elf.len() > 0x40 && elf.starts_with(b"\x7fELF\x02\x01"),
            "not a 64-bit LE ELF file"
        );
        let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
        let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into()?) as usize;
        let (phentsize, phnum) = (u16_at(0x36) as usize, u16_at(0x38) as usize);
        let mut interpreter = false;
        for i in 0..phnum {
            let at = phoff + i * phentsize;
            let p_type = elf.get(at..at + 4).context("program header outside the file")?;
            interpreter |= u32::from_le_bytes(p_type.try_into()?) == 3; // PT_INTERP
        }
        Ok((u16_at(0x12), interpreter))
    }

    /// The commit this checkout is at, as poller/build.rs abbreviates it; None without git.
    fn head_commit() -> Option<String> {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(workspace_root())
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    #[test]
    fn the_checksums_cover_and_verify_every_file_of_the_release() -> Result<()> {
        let dist = dist()?;
        run("sha256sum", &["--check", "--strict", "--quiet", "SHA256SUMS"], Some(&dist))?;
        let listed: BTreeSet<String> = std::fs::read_to_string(dist.join("SHA256SUMS"))?
            .lines()
            .map(|l| {
                l.split_once("  ").map(|(_, name)| name.to_string()).context("a SHA256SUMS line")
            })
            .collect::<Result<_>>()?;
        let mut present = files(&dist)?;
        present.remove("SHA256SUMS");
        assert_eq!(listed, present, "SHA256SUMS does not list exactly the release's files");
        for name in [
            format!("vault-redirect-poller-{VERSION}-x86_64-linux-musl"),
            "vault_redirect_filter.wasm".to_string(),
            "oci/filter/index.json".to_string(),
            "oci/poller/index.json".to_string(),
            "k8s/poller.yaml".to_string(),
            "k8s/wasmplugin.yaml".to_string(),
        ] {
            assert!(listed.contains(&name), "{name} is not in the release");
        }
        Ok(())
    }

    #[test]
    fn the_filter_image_is_the_wasm_compat_variant_istio_pulls_holding_the_released_wasm(
    ) -> Result<()> {
        let dist = dist()?;
        let layout = dist.join("oci/filter");
        let image = format!("oci:{}:{VERSION}", path_str(&layout)?);
        // What Istio's fetcher (pkg/wasm/imagefetcher.go) checks: an OCI manifest whose last
        // layer is tar+gzip and holds a file named plugin.wasm; the compat spec adds the
        // annotation and asks for exactly one layer.
        let manifest = json(&run("skopeo", &["inspect", "--raw", &image], None)?)?;
        // umoci leaves the manifest's own mediaType out (optional in the OCI spec); the layout's
        // descriptor, which skopeo sends as Content-Type on push, carries it.
        assert_eq!(manifest["schemaVersion"], 2);
        let index = json(&std::fs::read_to_string(layout.join("index.json"))?)?;
        assert_eq!(
            index["manifests"][0]["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(manifest["annotations"]["module.wasm.image/variant"], "compat");
        let layers = manifest["layers"].as_array().context("layers")?;
        assert_eq!(layers.len(), 1, "the compat variant has exactly one layer: {layers:?}");
        assert_eq!(layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
        let config = json(&run("skopeo", &["inspect", "--config", &image], None)?)?;
        assert_eq!(config["config"]["Labels"]["org.opencontainers.image.version"], VERSION);

        let scratch = Scratch::new("filter")?;
        // The layers only: umoci's runtime bundle has no meaning for a wasip1/wasm image.
        let rootfs = scratch.0.join("filter");
        let image = format!("{}:{VERSION}", path_str(&layout)?);
        run(
            "umoci",
            &["raw", "unpack", "--rootless", "--image", &image, path_str(&rootfs)?],
            None,
        )?;
        assert_eq!(files(&rootfs)?, BTreeSet::from(["plugin.wasm".to_string()]));
        let in_image = std::fs::read(rootfs.join("plugin.wasm"))?;
        assert!(in_image.starts_with(b"\0asm"), "plugin.wasm is not a Wasm module");
        assert!(
            in_image == std::fs::read(dist.join("vault_redirect_filter.wasm"))?,
            "plugin.wasm differs from the released vault_redirect_filter.wasm"
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_poller_image_runs_its_static_binary_as_a_non_root_user_from_scratch() -> Result<()>
    {
        let dist = dist()?;
        let layout = dist.join("oci/poller");

        // The version tag is an index with one manifest per released binary's architecture.
        let index = json(&run(
            "skopeo",
            &["inspect", "--raw", &format!("oci:{}:{VERSION}", path_str(&layout)?)],
            None,
        )?)?;
        assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
        let platforms: BTreeSet<String> = index["manifests"]
            .as_array()
            .context("index manifests")?
            .iter()
            .map(|m| {
                let p = &m["platform"];
                format!(
                    "{}/{}",
                    p["os"].as_str().unwrap_or("?"),
                    p["architecture"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let mut released = BTreeSet::new();
        for (arch, oci, _) in RELEASED_ARCHES {
            if dist.join(format!("vault-redirect-poller-{VERSION}-{arch}-linux-musl")).exists() {
                released.insert(format!("linux/{oci}"));
            }
        }
        assert_eq!(platforms, released, "the index's platforms are not the released binaries'");

        // This machine's image: skopeo picks it from the index as a container runtime would.
        let image = format!("oci:{}:{VERSION}", path_str(&layout)?);
        let config = json(&run("skopeo", &["inspect", "--config", &image], None)?)?;
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        let c = &config["config"];
        assert_eq!(c["User"], "65532:65532", "the image must not run as root");
        assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/local/bin/vault-redirect-poller"]));
        assert_eq!(c["Cmd"], serde_json::json!(["--listen", "0.0.0.0:8210"]));
        let env: Vec<&str> =
            c["Env"].as_array().context("Env")?.iter().filter_map(Value::as_str).collect();
        assert!(env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"), "{env:?}");

        // From scratch: the root holds the binary, the CA bundle and the user, nothing else.
        let scratch = Scratch::new("poller")?;
        let bundle = scratch.0.join("poller");
        let runtime = unpack_bundle(&layout, &format!("{VERSION}-amd64"), &bundle)?;
        eprintln!("{runtime:#}");
        let rootfs = bundle.join("rootfs");
        let expected: BTreeSet<String> = ["etc/group", "etc/passwd", CA_BUNDLE, BINARY_IN_IMAGE]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(files(&rootfs)?, expected);
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd"))?;
        assert!(passwd.lines().any(|l| l.starts_with("vault-redirect:x:65532:65532:")), "{passwd}");
        let group = std::fs::read_to_string(rootfs.join("etc/group"))?;
        assert!(group.lines().any(|l| l.starts_with("vault-redirect:x:65532:")), "{group}");
        let bundle = std::fs::read_to_string(rootfs.join(CA_BUNDLE))?;
        let certs = bundle.matches("-----BEGIN CERTIFICATE-----").count();
        assert!(certs > 50, "the CA bundle holds {certs} certificates");

        // Each architecture's image holds that architecture's released binary, static.
        for (arch, oci, machine) in RELEASED_ARCHES {
            let file = dist.join(format!("vault-redirect-poller-{VERSION}-{arch}-linux-musl"));
            if !file.exists() {
                continue;
            }
            let root = scratch.0.join(format!("rootfs-{oci}"));
            let image = format!("{}:{VERSION}-{oci}", path_str(&layout)?);
            run(
                "umoci",
                &["raw", "unpack", "--rootless", "--image", &image, path_str(&root)?],
                None,
            )?;
            let elf = std::fs::read(root.join(BINARY_IN_IMAGE))?;
            assert!(
                elf == std::fs::read(&file)?,
                "the {oci} image's binary is not {}",
                file.display()
            );
            let (e_machine, interpreter) = elf_facts(&elf)?;
            assert_eq!(e_machine, machine, "{} is not an {arch} binary", file.display());
            assert!(!interpreter, "{} needs a dynamic loader: not static", file.display());
        }
        let bin = rootfs.join(BINARY_IN_IMAGE);

        // --version: the workspace's version and the commit built.
        let bin_str = path_str(&bin)?;
        let version = run(bin_str, &["--version"], None)?;
        let (name_version, commit) = version
            .trim()
            .strip_suffix(')')
            .and_then(|v| v.split_once(" (commit "))
            .with_context(|| format!("--version printed {version:?}"))?;
        assert_eq!(name_version, format!("vault-redirect-poller {VERSION}"));
        if let Some(head) = head_commit() {
            ensure!(
                commit.starts_with(&head),
                "the release is of commit {commit}, this checkout is at {head}: \
             rebuild it with scripts/release.sh"
            );
        }

        // --help: every flag and subcommand, exactly as the poller this checkout builds has them.
        for args in [&["--help"][..], &["status", "--help"]] {
            let released = run(bin_str, args, None)?;
            let dev = run(path_str(&binary()?)?, args, None)?;
            ensure!(
                released == dev,
                "`{args:?}` of the released binary differs from the dev build's: rebuild the \
             release with scripts/release.sh\n--- released\n{released}\n--- dev\n{dev}"
            );
        }
        let help = run(bin_str, &["--help"], None)?;
        for flag in ["--listen <LISTEN>", "--consul-addr <CONSUL_ADDR>", "--version"] {
            assert!(help.contains(flag), "{flag} is not in --help:\n{help}");
        }

        // And it serves: the unpacked binary against a Consul double.
        let consul = ConsulDouble::start(vec![
            VaultNode::new("vault-a", "127.0.0.2", 8200, Role::Active),
            VaultNode::new("vault-b", "127.0.0.3", 8200, Role::Standby),
        ])
        .await?;
        let poller = Poller::start_program(&bin, &consul.url(), free_addr()?, &[], &[]).await?;
        let active =
            wait_for("the released poller's active node", Duration::from_secs(20), || async {
                poller.state().await.ok().and_then(|d| d.active)
            })
            .await?;
        assert_eq!((active.node.as_str(), active.address.as_str()), ("vault-a", "127.0.0.2"));
        Ok(())
    }

    #[test]
    fn the_kubernetes_manifests_name_both_images_by_tag_and_the_digest_built() -> Result<()> {
        let dist = dist()?;
        let poller_digest = tagged_digest(&dist.join("oci/poller"), VERSION)?;
        let filter_digest = tagged_digest(&dist.join("oci/filter"), VERSION)?;
        for (file, key, image, digest) in [
            ("poller.yaml", "image:", "poller", &poller_digest),
            ("wasmplugin.yaml", "url:", "filter", &filter_digest),
        ] {
            let committed =
                std::fs::read_to_string(workspace_root().join("deploy/k8s").join(file))?;
            let released = std::fs::read_to_string(dist.join("k8s").join(file))?;
            let (committed, released): (Vec<&str>, Vec<&str>) =
                (committed.lines().collect(), released.lines().collect());
            assert_eq!(committed.len(), released.len(), "{file}: lines added or lost");
            let changed: Vec<(&str, &str)> = committed
                .iter()
                .zip(&released)
                .filter(|(c, r)| c != r)
                .map(|(c, r)| (*c, *r))
                .collect();
            let [(before, after)] = changed[..] else {
                bail!("{file}: the release changes {changed:?}, not exactly the image line");
            };
            // The committed file names this version's tag (a new version updates it too); the
            // release adds the digest of the image it built.
            let tag = format!("/{image}:{VERSION}");
            assert!(before.trim_start().starts_with(key) && before.ends_with(&tag), "{before}");
            let reference = after.trim_start().trim_start_matches(key).trim();
            let (name, at) = reference.split_once('@').context("no digest")?;
            assert!(name.ends_with(&tag), "{file} names {name}, not the tag {VERSION}");
            assert_eq!(at, digest.as_str(), "{file}: the digest is not the built image's");
        }
        Ok(())
    }

    /// A web server on 127.0.0.1 serving one file at `/<name>`, counting the downloads; it stops
    /// with the test's runtime.
    async fn serve_file(
        name: &str,
        body: Vec<u8>,
    ) -> Result<(std::net::SocketAddr, Arc<AtomicUsize>)> {
        let downloads = Arc::new(AtomicUsize::new(0));
        let counter = downloads.clone();
        let app = axum::Router::new().route(
            &format!("/{name}"),
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                async move { body }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((addr, downloads))
    }

    /// envoy/envoy.yaml.tmpl with the module fetched from `uri` (checked against `sha256`) instead
    /// of read from a file, and the cluster that reaches the web server: the snippet of
    /// docs/install.md, "Plain Envoy".
    fn remote_template(
        dir: &Path,
        uri: &str,
        server: std::net::SocketAddr,
        sha256: &str,
    ) -> Result<String> {
        let template = std::fs::read_to_string(workspace_root().join("envoy/envoy.yaml.tmpl"))?;
        let local =
            "                  code:\n                    local: { filename: \"{{WASM_PATH}}\" }\n";
        ensure!(
            template.contains(local),
            "envoy/envoy.yaml.tmpl no longer loads the module from a file"
        );
        let remote = format!(
        "                  code:\n                    remote:\n                      http_uri: {{ uri: \"{uri}\", cluster: wasm_downloads, timeout: 10s }}\n                      sha256: \"{sha256}\"\n                      retry_policy: {{ num_retries: 1 }}\n"
    );
        let cluster = format!(
        "  clusters:\n  - name: wasm_downloads\n    type: STATIC\n    load_assignment:\n      cluster_name: wasm_downloads\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: \"{}\", port_value: {} }} }} }}\n",
        server.ip(),
        server.port()
    );
        ensure!(template.contains("\n  clusters:\n"), "envoy/envoy.yaml.tmpl has no clusters");
        let rendered = template.replace(local, &remote).replacen(
            "\n  clusters:\n",
            &format!("\n{cluster}"),
            1,
        );
        let path = dir.join(format!("remote-{sha256}.yaml.tmpl"));
        std::fs::write(&path, rendered)?;
        Ok(path_str(&path)?.to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn envoy_fetches_the_released_wasm_by_its_checksum_and_refuses_another() -> Result<()> {
        let dist = dist()?;
        let sums = std::fs::read_to_string(dist.join("SHA256SUMS"))?;
        let sha256 = sums
            .lines()
            .find_map(|l| l.strip_suffix("  vault_redirect_filter.wasm"))
            .context("no vault_redirect_filter.wasm line in SHA256SUMS")?;
        let wasm = std::fs::read(dist.join("vault_redirect_filter.wasm"))?;
        let (server, downloads) = serve_file("vault_redirect_filter.wasm", wasm).await?;
        let uri = format!("http://{server}/vault_redirect_filter.wasm");
        let scratch = Scratch::new("envoy")?;

        let consul =
            ConsulDouble::start(vec![VaultNode::new("vault-a", "127.0.0.2", 8200, Role::Active)])
                .await?;
        let poller = Poller::start(&consul.url(), &[]).await?;
        let mut opts = EnvoyOptions::new(poller.addr);
        opts.template = remote_template(&scratch.0, &uri, server, sha256)?;
        let envoy = Envoy::start(opts.clone()).await?;
        let http = client()?;
        let url = envoy.url("/v1/sys/health");
        let answer = wait_for("a 307 from the fetched filter", Duration::from_secs(15), || async {
            location(&http, &url).await.ok().filter(|(s, _)| *s == 307)
        })
        .await?;
        assert_eq!(answer.1.as_deref(), Some("http://127.0.0.2:8200/v1/sys/health"));
        assert!(downloads.load(Ordering::SeqCst) >= 1, "Envoy never fetched the module");
        drop(envoy);

        // Another hash: Envoy downloads the module, will not load it, and fails closed (a bare
        // 503, not the filter's Vault-shaped one, which has a body and Retry-After).
        let wrong = format!("{:0>64}", "0");
        opts.template = remote_template(&scratch.0, &uri, server, &wrong)?;
        let before = downloads.load(Ordering::SeqCst);
        let envoy = Envoy::start(opts).await?;
        wait_for("Envoy to give up on the module", Duration::from_secs(15), || async {
            envoy.proc.log_tail(200).contains("Plugin vault_redirect failed to load").then_some(())
        })
        .await?;
        let r = http.get(envoy.url("/v1/sys/health")).send().await?;
        assert_eq!(r.status().as_u16(), 503);
        assert!(r.headers().get("location").is_none() && r.headers().get("retry-after").is_none());
        assert_eq!(r.text().await?, "", "the filter answered: it ran under another hash");
        assert!(downloads.load(Ordering::SeqCst) > before, "Envoy did not fetch the module");
        Ok(())
    }

    /// A local registry (Debian's docker-registry, the CNCF distribution registry) on 127.0.0.1,
    /// storing into `dir`; it stops when the handle drops.
    async fn registry(dir: &Path) -> Result<(Proc, String)> {
        let addr = free_addr()?;
        let config = dir.join("registry.yml");
        let storage = dir.join("registry");
        std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{ level: warn }}\nstorage:\n  filesystem: {{ rootdirectory: \"{}\" }}\nhttp:\n  addr: {addr}\n",
            path_str(&storage)?
        ),
    )?;
        let proc = Proc::spawn(
            "registry",
            Path::new("docker-registry"),
            &["serve".to_string(), path_str(&config)?.to_string()],
            &[],
        )
        .context("starting docker-registry (scripts/setup.sh installs it)")?;
        let http = client()?;
        let base = format!("http://{addr}/v2/");
        wait_for("the registry's /v2/", Duration::from_secs(15), || async {
            http.get(&base).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await?;
        Ok((proc, addr.to_string()))
    }

    /// The SHA-256 digest of what the registry answers for `reference`.
    fn registry_digest(reference: &str) -> Result<String> {
        let out = run(
            "sh",
            &["-c", "skopeo inspect --tls-verify=false --raw \"$0\" | sha256sum", reference],
            None,
        )?;
        Ok(format!("sha256:{}", out.split_whitespace().next().context("sha256sum output")?))
    }

    /// The digest after `@` in the `key:` line of a released manifest.
    fn released_digest(dist: &Path, file: &str, key: &str) -> Result<String> {
        let text = std::fs::read_to_string(dist.join("k8s").join(file))?;
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .with_context(|| format!("no {key} line in k8s/{file}"))?;
        Ok(line.rsplit_once('@').context("no digest")?.1.to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_layouts_pushed_to_a_registry_keep_the_digests_the_manifests_name() -> Result<()> {
        let dist = dist()?;
        let scratch = Scratch::new("registry")?;
        let (_registry, addr) = registry(&scratch.0).await?;
        let repo = format!("{addr}/vault-redirect");

        // docs/install.md's commands, with TLS off for this local registry.
        for (image, all) in [("poller", true), ("filter", false)] {
            let from = format!("oci:{}:{VERSION}", path_str(&dist.join("oci").join(image))?);
            let to = format!("docker://{repo}/{image}:{VERSION}");
            let mut args = vec!["copy", "--preserve-digests", "--dest-tls-verify=false"];
            if all {
                args.push("--all");
            }
            args.extend([from.as_str(), to.as_str()]);
            run("skopeo", &args, None)?;
        }
        let poller = released_digest(&dist, "poller.yaml", "image:")?;
        let filter = released_digest(&dist, "wasmplugin.yaml", "url:")?;
        assert_eq!(registry_digest(&format!("docker://{repo}/poller:{VERSION}"))?, poller);
        assert_eq!(registry_digest(&format!("docker://{repo}/filter:{VERSION}"))?, filter);

        // Pulled by the WasmPlugin's digest, as Istio does: the last layer, gunzipped, untarred,
        // holds plugin.wasm, the released module.
        let pulled = scratch.0.join("pulled");
        let from = format!("docker://{repo}/filter@{filter}");
        let to = format!("dir:{}", path_str(&pulled)?);
        run("skopeo", &["copy", "--src-tls-verify=false", &from, &to], None)?;
        let manifest = json(&std::fs::read_to_string(pulled.join("manifest.json"))?)?;
        let layer = manifest["layers"]
            .as_array()
            .and_then(|l| l.last())
            .and_then(|l| l["digest"].as_str())
            .context("no layer in the pulled manifest")?;
        let blob = pulled.join(layer.trim_start_matches("sha256:"));
        let out = Command::new("tar").arg("-xzOf").arg(&blob).arg("plugin.wasm").output()?;
        ensure!(
            out.status.success(),
            "no plugin.wasm in the layer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == std::fs::read(dist.join("vault_redirect_filter.wasm"))?,
            "the pulled plugin.wasm is not the released vault_redirect_filter.wasm"
        );
        Ok(())
    }
}
