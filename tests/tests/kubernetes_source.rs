//! The Kubernetes source through real Envoy: the Kubernetes API double, the real poller binary
//! on `--source kubernetes`, real Envoy with the release filter. Envoy answers 307 to the pod
//! labelled `vault-active=true`, and follows a failover whichever pod Vault patches first.

use std::time::Duration;

use vault_redirect_e2e::kubernetes::KubeStack;
use vault_redirect_e2e::{client, location, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_redirects_to_the_active_pod_and_follows_a_failover_in_either_patch_order(
) -> anyhow::Result<()> {
    let stack = KubeStack::start(&[]).await?;
    let http = client()?;
    let path = "/v1/secret/data/app?version=2";
    let url = stack.envoy.url(path);
    let want = |pod: &str| Some(format!("http://{}:8200{path}", KubeStack::ip(pod)));

    let first = wait_for("the first 307 to vault-0", Duration::from_secs(20), || async {
        location(&http, &url).await.ok().filter(|(s, _)| *s == 307)
    })
    .await?;
    assert_eq!(first.1, want("vault-0"));

    for (from, to, new_first) in [("vault-0", "vault-1", true), ("vault-1", "vault-2", false)] {
        stack.fail_over(from, to, new_first);
        let after =
            wait_for(&format!("the Location to name {to}"), Duration::from_secs(10), || {
                let http = http.clone();
                let url = url.clone();
                let want = want(to);
                async move { location(&http, &url).await.ok().filter(|(_, l)| *l == want) }
            })
            .await?;
        assert_eq!(after.0, 307);
    }

    // A sealed active pod is never the target: Envoy answers 503 in Vault's error shape.
    stack.api.patch_labels("vault-2", &[("vault-sealed", Some("true"))]);
    let status =
        wait_for("a 503 once the active pod is sealed", Duration::from_secs(10), || async {
            location(&http, &url).await.ok().filter(|(s, _)| *s == 503).map(|(s, _)| s)
        })
        .await?;
    assert_eq!(status, 503);
    Ok(())
}
