//! The `status` subcommand's terminal view of a status document: a summary, the nodes and
//! the recent changes as aligned text, and the monitoring-plugin verdict.
//!
//! Pure text from a [`StatusDoc`]; it never asks the poller (that is `cli::client`).

use std::fmt::Write as _;

use vault_redirect_core::ActiveNode;

use crate::doc::status::StatusDoc;
use crate::state::{iso8601, NodeStatus};

/// `1.234s`, `2m05s`, `3h02m`: short, for tables.
pub fn short_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{}.{:03}s", s, ms % 1000)
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600)
    }
}

fn node_text(n: &Option<ActiveNode>) -> String {
    match n {
        Some(a) => format!("{} ({}:{})", a.node, a.address, a.port),
        None => "none".to_string(),
    }
}

/// Left-aligned columns separated by two spaces, under an optional header.
fn table(out: &mut String, header: Option<&[&str]>, rows: &[Vec<String>]) {
    let columns = header.map_or_else(|| rows.first().map_or(0, Vec::len), <[&str]>::len);
    let mut widths: Vec<usize> = vec![0; columns];
    for (w, h) in widths.iter_mut().zip(header.unwrap_or_default()) {
        *w = h.chars().count();
    }
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    if let Some(h) = header {
        line(h.iter().map(|h| h.to_string()).collect());
    }
    for row in rows {
        line(row.clone());
    }
}

/// What `status` prints: a summary, the nodes and the recent changes.
pub fn render_table(s: &StatusDoc, addr: &str) -> String {
    let mut out = String::new();
    let verdict = match (s.healthy, s.problems.is_empty()) {
        (true, true) => "OK",
        (true, false) => "WARNING",
        (false, _) => "CRITICAL",
    };
    let _ = writeln!(out, "vault-redirect-poller at {addr}: {verdict}");
    let mut summary = vec![
        vec!["active".to_string(), node_text(&s.active)],
        vec![
            "state version".to_string(),
            format!("{} (changed {} ago)", s.version, short_duration(s.state_age_ms)),
        ],
        vec![
            "source".to_string(),
            format!(
                "{} at {}, {}, index {}",
                s.source.name(),
                s.source_endpoint,
                s.source_watching,
                s.index
            ),
        ],
        vec![
            "last good answer".to_string(),
            match (s.last_ok_age_ms, s.last_ok_unix_ms) {
                (Some(age), Some(at)) => format!(
                    "{} ago ({}), served for up to {} while {} fails",
                    short_duration(age),
                    iso8601(at),
                    short_duration(s.max_stale_ms),
                    s.source.display()
                ),
                _ => "none yet".to_string(),
            },
        ],
        vec!["long-poll waiters".to_string(), s.longpoll_waiters.to_string()],
    ];
    if let (Some(gap), None) = (s.no_active_for_ms, &s.active) {
        summary.insert(1, vec!["no active node for".to_string(), short_duration(gap)]);
    }
    if let Some(reason) = &s.reason {
        summary.insert(1, vec!["reason".to_string(), reason.clone()]);
    }
    let problems =
        if s.problems.is_empty() { vec!["none".to_string()] } else { s.problems.clone() };
    for (i, p) in problems.into_iter().enumerate() {
        summary.push(vec![if i == 0 { "problems".to_string() } else { String::new() }, p]);
    }
    table(&mut out, None, &summary);
    out.push('\n');
    if s.nodes.is_empty() {
        let _ = writeln!(out, "no Vault nodes in {}'s last answer", s.source.display());
    } else {
        node_table(&mut out, &s.nodes);
    }
    out.push('\n');
    let changes: Vec<Vec<String>> = s
        .changes
        .iter()
        .map(|c| {
            vec![
                iso8601(c.at_unix_ms),
                format!("{} ago", short_duration(s.now_unix_ms.saturating_sub(c.at_unix_ms))),
                c.version.to_string(),
                match &c.to {
                    Some(n) => n.node.clone(),
                    None => format!("none: {}", c.reason.as_deref().unwrap_or("unknown")),
                },
                c.from.as_ref().map_or("none".to_string(), |n| n.node.clone()),
                c.no_active_for_ms.map(short_duration).unwrap_or_default(),
            ]
        })
        .collect();
    if changes.is_empty() {
        out.push_str("no active-node changes since the poller started\n");
    } else {
        table(
            &mut out,
            Some(&["CHANGED AT", "AGO", "VERSION", "ACTIVE", "BEFORE", "NO ACTIVE NODE FOR"]),
            &changes,
        );
    }
    out
}

/// The nodes, whatever the source: name, address, port, labels, one column per check the
/// source reports (in the order it first appears), latency and error when any node has one,
/// and the role.
fn node_table(out: &mut String, nodes: &[NodeStatus]) {
    let mut checks: Vec<&str> = Vec::new();
    for c in nodes.iter().flat_map(|n| &n.checks) {
        if !checks.contains(&c.name.as_str()) {
            checks.push(&c.name);
        }
    }
    let latency = nodes.iter().any(|n| n.latency_ms.is_some());
    let error = nodes.iter().any(|n| n.error.is_some());
    let upper: Vec<String> = checks.iter().map(|c| c.to_uppercase()).collect();
    let mut header: Vec<&str> = vec!["NODE", "ADDRESS", "PORT", "LABELS"];
    header.extend(upper.iter().map(String::as_str));
    header.extend(latency.then_some("LATENCY"));
    header.extend(error.then_some("ERROR"));
    header.push("ROLE");
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let mut row =
                vec![n.node.clone(), n.address.clone(), n.port.to_string(), n.labels.join(",")];
            for name in &checks {
                let status = n.checks.iter().find(|c| c.name == *name).map(|c| c.status.clone());
                row.push(status.unwrap_or_else(|| "-".into()));
            }
            if latency {
                row.push(n.latency_ms.map_or("-".into(), |ms| format!("{ms} ms")));
            }
            if error {
                row.push(n.error.clone().unwrap_or_default());
            }
            let role = if n.active {
                "ACTIVE"
            } else if n.candidate {
                "candidate"
            } else {
                ""
            };
            row.push(role.to_string());
            row
        })
        .collect();
    table(out, Some(&header), &rows);
}

/// Exit codes of `status`, the monitoring-plugin convention (Nagios, Icinga, Sensu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An active node is served and nothing is wrong: 0.
    Ok = 0,
    /// An active node is served, with problems listed (Consul failing within --max-stale,
    /// two nodes tagged active, refused targets): 1.
    Warning = 1,
    /// No active node is served: 2.
    Critical = 2,
    /// The poller could not be asked or its answer not read: 3.
    Unknown = 3,
}

impl Verdict {
    /// The verdict for a status document.
    pub fn of(s: &StatusDoc) -> Verdict {
        match (s.healthy, s.problems.is_empty()) {
            (true, true) => Verdict::Ok,
            (true, false) => Verdict::Warning,
            (false, _) => Verdict::Critical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::status::ChangeDoc;
    use crate::source::SourceKind;
    use crate::state::NodeCheck;

    fn check(name: &str, status: &str) -> NodeCheck {
        NodeCheck { name: name.into(), status: status.into(), ok: true }
    }

    fn node(name: &str, active: bool) -> NodeStatus {
        NodeStatus {
            node: name.into(),
            address: "10.0.0.1".into(),
            port: 8200,
            labels: vec![if active { "active" } else { "standby" }.into(), "initialized".into()],
            checks: vec![check("sealed check", "passing"), check("agent", "passing")],
            candidate: active,
            active,
            ..NodeStatus::default()
        }
    }

    fn doc() -> StatusDoc {
        let a = ActiveNode { node: "vault-b".into(), address: "10.0.0.2".into(), port: 8200 };
        StatusDoc {
            healthy: true,
            problems: vec![],
            version: 1_179_648,
            active: Some(a.clone()),
            reason: None,
            source: SourceKind::Consul,
            source_endpoint: "127.0.0.1:8500".into(),
            source_watching: "service \"vault\", tag \"active\"".into(),
            index: 18,
            last_ok_unix_ms: Some(1_700_000_000_000),
            last_ok_age_ms: Some(0),
            source_error: None,
            max_stale_ms: 60_000,
            state_age_ms: 4_200,
            no_active_for_ms: None,
            longpoll_waiters: 3,
            nodes: vec![node("vault-a", false), node("vault-b", true)],
            changes: vec![
                ChangeDoc {
                    at_unix_ms: 1_700_000_000_000,
                    version: 1_179_648,
                    from: None,
                    to: Some(a),
                    reason: None,
                    no_active_for_ms: Some(2_500),
                },
                ChangeDoc {
                    at_unix_ms: 1_699_999_997_500,
                    version: 1_114_112,
                    from: Some(ActiveNode {
                        node: "vault-a".into(),
                        address: "10.0.0.1".into(),
                        port: 8200,
                    }),
                    to: None,
                    reason: Some("no instance of service \"vault\" is tagged \"active\"".into()),
                    no_active_for_ms: None,
                },
            ],
            now_unix_ms: 1_700_000_004_200,
        }
    }

    /// The words of the node table's header.
    fn node_header(text: &str) -> Vec<&str> {
        let header = text.lines().find(|l| l.starts_with("NODE")).unwrap_or_default();
        header.split_whitespace().collect()
    }

    /// The value of a summary row, whatever the column width.
    fn row<'a>(text: &'a str, key: &str) -> &'a str {
        text.lines()
            .find_map(|l| l.strip_prefix(key).filter(|r| r.starts_with("  ")))
            .unwrap_or_default()
            .trim()
    }

    #[test]
    fn the_table_names_the_active_node_every_node_and_the_changes() {
        let text = render_table(&doc(), "127.0.0.1:8210");
        assert!(text.starts_with("vault-redirect-poller at 127.0.0.1:8210: OK\n"), "{text}");
        assert_eq!(row(&text, "active"), "vault-b (10.0.0.2:8200)", "{text}");
        assert_eq!(row(&text, "long-poll waiters"), "3", "{text}");
        assert_eq!(row(&text, "problems"), "none", "{text}");
        let node_line = text.lines().find(|l| l.starts_with("vault-b ")).unwrap_or_default();
        assert!(
            node_line.contains("active,initialized") && node_line.ends_with("ACTIVE"),
            "{text}"
        );
        assert_eq!(
            node_header(&text),
            ["NODE", "ADDRESS", "PORT", "LABELS", "SEALED", "CHECK", "AGENT", "ROLE"],
            "{text}"
        );
        assert_eq!(
            row(&text, "source"),
            "consul at 127.0.0.1:8500, service \"vault\", tag \"active\", index 18",
            "{text}"
        );
        let change =
            text.lines().find(|l| l.starts_with("2023-11-14T22:13:20Z")).unwrap_or_default();
        assert!(
            change.contains("4.200s ago")
                && change.contains("vault-b")
                && change.ends_with("2.500s"),
            "{text}"
        );
        assert!(
            text.contains("none: no instance of service \"vault\" is tagged \"active\""),
            "{text}"
        );
    }

    #[test]
    fn a_source_that_probes_nodes_shows_its_checks_latency_and_errors() {
        let mut d = doc();
        d.source = SourceKind::Vault;
        d.nodes = vec![
            NodeStatus {
                node: "https://10.0.0.1:8200".into(),
                checks: vec![check("sys/health", "200 active")],
                latency_ms: Some(3),
                active: true,
                ..node("a", true)
            },
            NodeStatus {
                node: "https://10.0.0.2:8200".into(),
                labels: vec![],
                checks: vec![],
                error: Some("connection refused".into()),
                ..node("b", false)
            },
        ];
        let text = render_table(&d, "x");
        assert_eq!(
            node_header(&text),
            ["NODE", "ADDRESS", "PORT", "LABELS", "SYS/HEALTH", "LATENCY", "ERROR", "ROLE"],
            "{text}"
        );
        let refused = text.lines().find(|l| l.starts_with("https://10.0.0.2")).unwrap_or_default();
        assert!(refused.contains("  -  ") && refused.ends_with("connection refused"), "{text}");
        assert!(text.contains("3 ms"), "{text}");
        assert!(row(&text, "source").starts_with("vault at "), "{text}");
    }

    #[test]
    fn verdicts_follow_the_monitoring_plugin_convention() {
        let mut d = doc();
        assert_eq!(Verdict::of(&d), Verdict::Ok);
        d.problems.push("2 nodes qualify as active".into());
        assert_eq!(Verdict::of(&d), Verdict::Warning);
        assert!(render_table(&d, "x").starts_with("vault-redirect-poller at x: WARNING"));
        d.healthy = false;
        d.active = None;
        d.reason = Some("election".into());
        d.no_active_for_ms = Some(61_000);
        assert_eq!(Verdict::of(&d), Verdict::Critical);
        let text = render_table(&d, "x");
        assert_eq!(row(&text, "no active node for"), "1m01s", "{text}");
        assert_eq!(row(&text, "reason"), "election", "{text}");
        assert_eq!(row(&text, "active"), "none", "{text}");
        assert_eq!(Verdict::Unknown as i32, 3);
    }

    #[test]
    fn short_durations_read_at_a_glance() {
        assert_eq!(short_duration(0), "0.000s");
        assert_eq!(short_duration(1_234), "1.234s");
        assert_eq!(short_duration(125_000), "2m05s");
        assert_eq!(short_duration(3 * 3_600_000 + 120_000), "3h02m");
        assert_eq!(short_duration(90_000_000), "1d01h");
    }
}
