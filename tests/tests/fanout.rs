//! Fan-out, bounded for the test command: one poller process holding 1,500 concurrent
//! long-polls answers every one of them with the new version after one Consul change. The full
//! 10,000-waiter bench with its figures is `scripts/fanout-bench.sh` (docs/BENCHMARKS.md).

use std::time::Duration;

use vault_redirect_e2e::fanout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poller_answers_fifteen_hundred_parked_long_polls_after_one_consul_change(
) -> anyhow::Result<()> {
    // Generous: other builds and tests share the two cores. The bench measures; this checks.
    let report = fanout::run(1_500, Duration::from_secs(30)).await?;
    println!("{}", report.summary());
    assert_eq!(report.latencies.len(), 1_500, "every waiter answered");
    assert!(report.new_version > report.old_version);
    // Well above the bench's 100 MB target for 10,000: catches a per-waiter leak, not noise.
    assert!(report.rss_kib < 200 * 1024, "poller RSS {} KiB with 1,500 waiters", report.rss_kib);
    Ok(())
}
