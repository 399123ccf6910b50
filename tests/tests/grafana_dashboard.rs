//! contrib/grafana/mta-sts-resolver.json: the dashboard parses, reads every
//! panel from the `$datasource` variable, lays its panels out without
//! overlap, and queries exactly the daemon's metrics with their own labels.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The daemon's metrics and their labels (README.md "Metrics").
const METRICS: &[(&str, &[&str])] = &[
    ("mta_sts_lookups_total", &["zone", "outcome"]),
    ("mta_sts_answers_total", &["source"]),
    ("mta_sts_policy_fetches_total", &["result"]),
    ("mta_sts_policy_fetch_seconds", &["le"]),
    ("mta_sts_dns_queries_total", &["type", "rcode"]),
    ("mta_sts_cache_entries", &[]),
    ("mta_sts_open_connections", &[]),
    ("mta_sts_dnssec_validating", &[]),
    ("mta_sts_coalesced_requests_total", &[]),
    ("mta_sts_proactive_rounds_total", &[]),
    ("mta_sts_proactive_failures_total", &[]),
    ("mta_sts_proactive_skipped_total", &[]),
    ("mta_sts_refresh_failures_total", &[]),
    ("mta_sts_store_errors_total", &[]),
    ("mta_sts_build_info", &["version"]),
];

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["instance", "job"];

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../contrib/grafana/mta-sts-resolver.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The metric a name in a query refers to (histogram series suffixes off).
fn base_metric(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| {
            name.strip_suffix(s)
                .filter(|b| METRICS.iter().any(|(m, _)| m == b))
        })
        .unwrap_or(name)
}

/// `mta_sts_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("mta_sts_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// Label names an expression uses: in `by (...)` clauses and in `{...}`
/// selectors (`name=`, `name=~`, `name!=`).
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for (open, close) in [("by (", ')'), ("{", '}')] {
        let mut rest = expr;
        while let Some(at) = rest.find(open) {
            let inner = &rest[at + open.len()..];
            let end = inner.find(close).expect("closed clause");
            for part in inner[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    labels.insert(name);
                }
            }
            rest = &inner[end..];
        }
    }
    labels
}

/// Every panel, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        all.push(p);
        if let Some(nested) = p["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

#[test]
fn dashboard_parses_and_uses_the_datasource_variable() {
    let dash = dashboard();
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    let variables = dash["templating"]["list"].as_array().expect("templating");
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(datasource["name"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels(&dash) {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "{title}: id reused"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
            queries += 1;
        }
    }
    assert!(queries >= METRICS.len(), "{queries} queries");
}

#[test]
fn panels_fit_the_grid_without_overlap() {
    let dash = dashboard();
    let mut boxes: Vec<(&str, [u64; 4])> = Vec::new();
    for p in panels(&dash) {
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().expect("gridPos"));
        let title = p["title"].as_str().unwrap_or("?");
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: {g}");
        for (other, [ox, oy, ow, oh]) in &boxes {
            let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((title, [x, y, w, h]));
    }
}

#[test]
fn queries_use_exactly_the_daemons_metrics_and_their_labels() {
    let dash = dashboard();
    let known: BTreeMap<&str, &[&str]> = METRICS.iter().copied().collect();
    let mut used = BTreeSet::new();
    let mut exprs: Vec<String> = panels(&dash)
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap_or_default().to_owned())
        .collect();
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = v["query"]["query"].as_str() {
            exprs.push(q.to_owned());
        }
    }
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        let mut allowed: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
        for name in &names {
            let base = base_metric(name);
            let labels = known
                .get(base)
                .unwrap_or_else(|| panic!("unknown metric {name} in {expr}"));
            allowed.extend(labels.iter().copied());
            used.insert(base.to_owned());
        }
        for label in label_names(expr) {
            assert!(allowed.contains(label.as_str()), "label {label} in {expr}");
        }
        assert_eq!(
            expr.matches('(').count(),
            expr.matches(')').count(),
            "unbalanced: {expr}"
        );
    }
    let unused: Vec<_> = known.keys().filter(|m| !used.contains(**m)).collect();
    assert!(unused.is_empty(), "metrics on no panel: {unused:?}");
}

/// The helpers catch what they are for.
#[test]
fn query_parsing_finds_names_and_labels() {
    let expr =
        r#"sum by (le) (rate(mta_sts_policy_fetch_seconds_bucket{instance=~"$i", zone!="x"}[5m]))"#;
    assert_eq!(metric_names(expr), ["mta_sts_policy_fetch_seconds_bucket"]);
    assert_eq!(
        base_metric("mta_sts_policy_fetch_seconds_bucket"),
        "mta_sts_policy_fetch_seconds"
    );
    assert_eq!(
        base_metric("mta_sts_unknown_count"),
        "mta_sts_unknown_count"
    );
    assert_eq!(
        label_names(expr),
        BTreeSet::from(["le", "instance", "zone"].map(String::from))
    );
}
