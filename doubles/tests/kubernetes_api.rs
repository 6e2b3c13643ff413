//! The Kubernetes double against the API's documented list and watch behaviour: list shape and
//! resource versions, watch streams of JSON lines from a version, bookmarks, 410 as an ERROR
//! event and as HTTP 410, selectors, deletion, auth, TLS and h2, and the injected faults.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::Value;
use vault_redirect_doubles::{three_pods, Flavor, KubeApiDouble, Pki, PkiSpec};

const TOKEN: &str = "sa-token-1";
const NS: &str = "vault";

struct Fixture {
    api: KubeApiDouble,
    client: reqwest::Client,
    _pki: Pki,
}

async fn fixture() -> Fixture {
    let pki = Pki::new("kube-api", None, &PkiSpec::leaf_for(&["127.0.0.1"])).unwrap();
    let api = KubeApiDouble::start(NS, three_pods(Flavor::Vault), &pki.chain, &pki.key, TOKEN)
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    Fixture { api, client, _pki: pki }
}

impl Fixture {
    fn pods_url(&self, query: &str) -> String {
        format!("{}/api/v1/namespaces/{NS}/pods{query}", self.api.url())
    }

    async fn get(&self, query: &str) -> reqwest::Response {
        self.client.get(self.pods_url(query)).bearer_auth(TOKEN).send().await.unwrap()
    }

    async fn list(&self, query: &str) -> Value {
        let r = self.get(query).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

/// Reads a watch stream line by line.
struct Lines {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Lines {
    fn new(response: reqwest::Response) -> Lines {
        Lines { response, buffer: Vec::new() }
    }

    /// The next event, `Ok(None)` at the stream's clean end, `Err` when the stream broke.
    async fn next(&mut self) -> Result<Option<Value>, reqwest::Error> {
        loop {
            if let Some(at) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=at).collect();
                return Ok(Some(serde_json::from_slice(&line).unwrap()));
            }
            match self.response.chunk().await? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => {
                    assert!(self.buffer.is_empty(), "a partial line at the end");
                    return Ok(None);
                }
            }
        }
    }

    async fn event(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(5), self.next())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("an event, not the end")
    }
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_list_is_a_pod_list_with_its_resource_version_and_vaults_labels() {
    let f = fixture().await;
    let r = f.get("").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["metadata"]["resourceVersion"], f.api.resource_version());
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let p = &items[0];
    // List items carry no kind or apiVersion.
    assert!(p.get("kind").is_none());
    assert_eq!(p["metadata"]["name"], "vault-0");
    assert_eq!(p["metadata"]["namespace"], NS);
    assert!(rv_of(p) <= rv_of(&list));
    assert_eq!(p["metadata"]["labels"]["vault-active"], "true");
    assert_eq!(p["metadata"]["labels"]["vault-sealed"], "false");
    assert_eq!(p["metadata"]["labels"]["vault-initialized"], "true");
    assert_eq!(p["metadata"]["labels"]["vault-perf-standby"], "false");
    assert_eq!(p["metadata"]["labels"]["vault-version"], "1.21.1");
    assert_eq!(p["metadata"]["labels"]["component"], "server");
    assert_eq!(p["status"]["podIP"], "127.0.0.2");
    assert_eq!(p["status"]["podIPs"][0]["ip"], "127.0.0.2");
    let ready = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True");
    assert_eq!(p["spec"]["subdomain"], "vault-internal");
    assert_eq!(items[1]["metadata"]["labels"]["vault-active"], "false");

    let active = f.list("?labelSelector=vault-active%3Dtrue").await;
    assert_eq!(active["items"].as_array().unwrap().len(), 1);
    let one = f.list("?fieldSelector=metadata.name%3Dvault-2").await;
    assert_eq!(one["items"][0]["metadata"]["name"], "vault-2");
    let r = f.get("?labelSelector=%3Dbad").await;
    assert_eq!(r.status(), 400);
    let other = f
        .client
        .get(format!("{}/api/v1/namespaces/other/pods", f.api.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(other.json::<Value>().await.unwrap()["items"], serde_json::json!([]));
}

#[tokio::test]
async fn a_list_pages_with_limit_and_continue_and_an_old_continue_is_gone() {
    let f = fixture().await;
    let first = f.list("?limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["metadata"]["remainingItemCount"], 1);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    let second = f.list(&format!("?limit=2&continue={token}")).await;
    assert_eq!(second["items"][0]["metadata"]["name"], "vault-2");
    assert!(second["metadata"].get("continue").is_none());
    // The continued list is the first page's snapshot version.
    assert_eq!(second["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"]);
    f.api.set_ready("vault-0", false);
    f.api.compact();
    let r = f.get(&format!("?limit=2&continue={token}")).await;
    assert_eq!(r.status(), 410);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["reason"], "Expired");
    assert_eq!(s["code"], 410);
}

#[tokio::test]
async fn requests_need_a_known_bearer_token_and_an_rbac_grant() {
    let f = fixture().await;
    let r = f.client.get(f.pods_url("")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let s: Value = r.json().await.unwrap();
    assert_eq!(
        (s["kind"].as_str(), s["reason"].as_str(), s["code"].as_u64()),
        (Some("Status"), Some("Unauthorized"), Some(401))
    );
    let r = f.client.get(f.pods_url("")).bearer_auth("nope").send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Rotation: the new token works, and once the old one expires it gets 401.
    f.api.allow_token("sa-token-2");
    let r = f.client.get(f.pods_url("")).bearer_auth("sa-token-2").send().await.unwrap();
    assert_eq!(r.status(), 200);
    f.api.revoke_token(TOKEN);
    assert_eq!(f.get("").await.status(), 401);

    f.api.forbid_token("sa-token-2");
    let r = f.client.get(f.pods_url("?watch=1")).bearer_auth("sa-token-2").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["reason"], "Forbidden");
    let message = s["message"].as_str().unwrap();
    assert!(message.contains("cannot watch resource \"pods\""), "{message}");
    assert!(message.contains("in the namespace \"vault\""), "{message}");
}

#[tokio::test]
async fn a_watch_from_the_lists_version_streams_each_label_patch_as_one_json_line() {
    let f = fixture().await;
    let list = f.list("").await;
    let rv = rv_of(&list);
    let r = f
        .get(&format!(
            "?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=30"
        ))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["transfer-encoding"], "chunked");
    let mut lines = Lines::new(r);
    // Vault patches one label per pod per change, in any order: the new active first here.
    f.api.patch_labels("vault-1", &[("vault-active", Some("true"))]);
    f.api.patch_labels("vault-0", &[("vault-active", Some("false"))]);
    let e1 = lines.event().await;
    assert_eq!(e1["type"], "MODIFIED");
    assert_eq!(e1["object"]["kind"], "Pod");
    assert_eq!(e1["object"]["metadata"]["name"], "vault-1");
    assert_eq!(e1["object"]["metadata"]["labels"]["vault-active"], "true");
    assert_eq!(rv_of(&e1["object"]), rv + 1);
    let e2 = lines.event().await;
    assert_eq!(e2["object"]["metadata"]["name"], "vault-0");
    assert_eq!(e2["object"]["metadata"]["labels"]["vault-active"], "false");
    assert_eq!(rv_of(&e2["object"]).to_string(), f.api.resource_version());

    // A new watch from the first event's version sees only what came after it.
    let r = f.get(&format!("?watch=1&resourceVersion={}", rv + 1)).await;
    let mut later = Lines::new(r);
    assert_eq!(later.event().await["object"]["metadata"]["name"], "vault-0");
    assert_eq!(f.api.watch_log()[0].resource_version, Some(rv.to_string()));
    assert!(f.api.watch_log()[0].bookmarks);
    assert_eq!(f.api.watch_log()[0].timeout_seconds, Some(30));
}

#[tokio::test]
async fn a_watch_without_a_version_starts_with_the_current_pods_as_added() {
    let f = fixture().await;
    let mut lines = Lines::new(f.get("?watch=true&labelSelector=component%3Dserver").await);
    let mut names = Vec::new();
    for _ in 0..3 {
        let e = lines.event().await;
        assert_eq!(e["type"], "ADDED");
        names.push(e["object"]["metadata"]["name"].as_str().unwrap().to_string());
    }
    assert_eq!(names, ["vault-0", "vault-1", "vault-2"]);
    f.api.set_ready("vault-2", false);
    let e = lines.event().await;
    assert_eq!(e["type"], "MODIFIED");
    let ready = e["object"]["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["status"], "False");
}

#[tokio::test]
async fn bookmarks_come_only_when_allowed_and_carry_only_a_resource_version() {
    let f = fixture().await;
    f.api.set_bookmark_interval(Duration::from_millis(100));
    let rv = f.api.resource_version();
    let mut with = Lines::new(
        f.get(&format!("?watch=true&resourceVersion={rv}&allowWatchBookmarks=true")).await,
    );
    let b = with.event().await;
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(b["object"]["kind"], "Pod");
    assert_eq!(b["object"]["metadata"]["resourceVersion"], rv);
    assert!(b["object"]["metadata"].get("name").is_none());
    // Without allowWatchBookmarks, nothing arrives while nothing changes.
    let mut without = Lines::new(f.get(&format!("?watch=true&resourceVersion={rv}")).await);
    let quiet = tokio::time::timeout(Duration::from_millis(400), without.next()).await;
    assert!(quiet.is_err(), "no event expected, got {quiet:?}");
}

#[tokio::test]
async fn a_too_old_version_is_an_error_event_with_410_or_an_http_410() {
    let f = fixture().await;
    let old = f.api.resource_version();
    f.api.set_ready("vault-1", false);
    f.api.compact();
    let r = f.get(&format!("?watch=true&resourceVersion={old}")).await;
    assert_eq!(r.status(), 200);
    let mut lines = Lines::new(r);
    let e = lines.event().await;
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["kind"], "Status");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    assert!(e["object"]["message"].as_str().unwrap().starts_with("too old resource version"));
    assert!(lines.next().await.unwrap().is_none(), "the stream ends after the ERROR");

    f.api.set_too_old_as_http(true);
    let r = f.get(&format!("?watch=true&resourceVersion={old}")).await;
    assert_eq!(r.status(), 410);
    let s: Value = r.json().await.unwrap();
    assert_eq!((s["reason"].as_str(), s["code"].as_u64()), (Some("Expired"), Some(410)));
    // The current version is fine.
    let now = f.api.resource_version();
    assert_eq!(
        f.get(&format!("?watch=true&resourceVersion={now}&timeoutSeconds=1")).await.status(),
        200
    );
}

#[tokio::test]
async fn an_open_watch_can_be_expired_mid_stream() {
    let f = fixture().await;
    let rv = f.api.resource_version();
    let mut lines = Lines::new(f.get(&format!("?watch=true&resourceVersion={rv}")).await);
    f.api.patch_labels("vault-2", &[("vault-sealed", Some("true"))]);
    assert_eq!(lines.event().await["type"], "MODIFIED");
    f.api.expire_open_watches();
    let e = lines.event().await;
    assert_eq!((e["type"].as_str(), e["object"]["code"].as_u64()), (Some("ERROR"), Some(410)));
    assert!(lines.next().await.unwrap().is_none());
}

#[tokio::test]
async fn a_watch_ends_cleanly_at_its_timeout() {
    let f = fixture().await;
    let rv = f.api.resource_version();
    let started = std::time::Instant::now();
    let mut lines =
        Lines::new(f.get(&format!("?watch=true&resourceVersion={rv}&timeoutSeconds=1")).await);
    let end = tokio::time::timeout(Duration::from_secs(5), lines.next()).await.unwrap().unwrap();
    assert!(end.is_none());
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
}

#[tokio::test]
async fn pods_entering_or_leaving_the_selector_are_added_or_deleted_for_that_watch() {
    let f = fixture().await;
    let rv = f.api.resource_version();
    let mut lines = Lines::new(
        f.get(&format!("?watch=true&resourceVersion={rv}&labelSelector=vault-active%3Dtrue")).await,
    );
    f.api.patch_labels("vault-0", &[("vault-active", Some("false"))]);
    f.api.patch_labels("vault-1", &[("vault-active", Some("true"))]);
    f.api.patch_labels("vault-2", &[("vault-sealed", Some("true"))]);
    let left = lines.event().await;
    assert_eq!(left["type"], "DELETED");
    assert_eq!(left["object"]["metadata"]["name"], "vault-0");
    assert_eq!(left["object"]["metadata"]["labels"]["vault-active"], "false");
    let entered = lines.event().await;
    assert_eq!(entered["type"], "ADDED");
    assert_eq!(entered["object"]["metadata"]["name"], "vault-1");
    // vault-2 never matched: nothing for it.
    f.api.patch_labels("vault-1", &[("vault-sealed", Some("true"))]);
    let e = lines.event().await;
    assert_eq!(e["object"]["metadata"]["name"], "vault-1");
    assert_eq!(e["type"], "MODIFIED");
}

#[tokio::test]
async fn a_graceful_deletion_is_a_deletion_timestamp_then_a_deleted_event() {
    let f = fixture().await;
    let rv = f.api.resource_version();
    let mut lines = Lines::new(f.get(&format!("?watch=true&resourceVersion={rv}")).await);
    assert!(f.api.begin_delete("vault-0"));
    let e = lines.event().await;
    assert_eq!(e["type"], "MODIFIED");
    assert!(e["object"]["metadata"]["deletionTimestamp"].is_string());
    assert!(f.api.delete("vault-0"));
    let e = lines.event().await;
    assert_eq!(e["type"], "DELETED");
    assert_eq!(e["object"]["metadata"]["name"], "vault-0");
    assert_eq!(e["object"]["metadata"]["resourceVersion"], f.api.resource_version());
    assert_eq!(f.list("").await["items"].as_array().unwrap().len(), 2);
    let r = f
        .client
        .get(format!("{}/api/v1/namespaces/{NS}/pods/vault-0", f.api.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = f
        .client
        .get(format!("{}/api/v1/namespaces/{NS}/pods/vault-1", f.api.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["kind"], "Pod");
}

#[tokio::test]
async fn dropped_watches_break_mid_stream_and_hung_watches_stay_silent_past_their_timeout() {
    let f = fixture().await;
    let rv = f.api.resource_version();
    let mut lines = Lines::new(f.get(&format!("?watch=true&resourceVersion={rv}")).await);
    f.api.drop_watches();
    let broken = tokio::time::timeout(Duration::from_secs(5), lines.next()).await.unwrap();
    assert!(broken.is_err(), "a dropped watch must not end cleanly: {broken:?}");

    f.api.hang_watches(true);
    let r = f
        .get(&format!("?watch=true&resourceVersion={rv}&timeoutSeconds=1&allowWatchBookmarks=true"))
        .await;
    assert_eq!(r.status(), 200);
    let mut hung = Lines::new(r);
    f.api.set_ready("vault-1", false);
    let silent = tokio::time::timeout(Duration::from_millis(1800), hung.next()).await;
    assert!(silent.is_err(), "a hung watch said something: {silent:?}");
    f.api.hang_watches(false);
    let rv = f.api.resource_version();
    let r = f.get(&format!("?watch=true&resourceVersion={rv}&timeoutSeconds=1")).await;
    let end = tokio::time::timeout(Duration::from_secs(5), Lines::new(r).next()).await.unwrap();
    assert!(end.unwrap().is_none());
}

#[tokio::test]
async fn the_server_can_go_down_and_come_back_with_its_pods_and_serves_h2() {
    let f = fixture().await;
    f.api.go_down().await;
    assert!(f.client.get(f.pods_url("")).bearer_auth(TOKEN).send().await.is_err());
    f.api.come_back().await.unwrap();
    assert_eq!(f.list("").await["items"].as_array().unwrap().len(), 3);

    let h2 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(f._pki.ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = h2.get(f.pods_url("")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
}
