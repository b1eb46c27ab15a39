//! The monitoring files hold together with the service and the runbook:
//!
//! - every metric and label the alert rules (`monitoring/prometheus/alerts.yml`)
//!   and the dashboard (`monitoring/grafana/vf-export.json`) name exists on
//!   the `/metrics` of a running instance after an export, so a renamed
//!   metric breaks the build, not the pager;
//! - every alert and every CloudWatch alarm has a section in
//!   `docs/runbook.md`, and every `runbook_url` / alarm-description anchor
//!   resolves to a heading (GitHub's slugs);
//! - every alert has a promtool test case that fires it;
//! - the backlog age the alerts and the alarm watch is what the queue says.
//!
//! PromQL is read by a small scanner ([`promql`]) that knows the forms these
//! files use; anything it does not understand fails the test rather than
//! passing unread.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use serde_json::{json, Value};
use yaml_rust2::{Yaml, YamlLoader};

use crate::common::{self, insert, TestApp};

/// Labels Prometheus gives every target (monitoring/prometheus/prometheus.yml):
/// they are never on the exposition itself.
const TARGET_LABELS: [&str; 3] = ["job", "instance", "environment"];

/// Series that come from elsewhere than the service's /metrics, with the
/// labels of their own that the rules may use: `up` from Prometheus, the
/// rest from node exporter (port 9100). Adding one here is a decision,
/// not a way around a typo.
const EXTERNAL: [(&str, &[&str]); 6] = [
    ("up", &[]),
    ("node_memory_MemAvailable_bytes", &[]),
    ("node_memory_MemTotal_bytes", &[]),
    (
        "node_filesystem_avail_bytes",
        &["device", "fstype", "mountpoint"],
    ),
    (
        "node_filesystem_size_bytes",
        &["device", "fstype", "mountpoint"],
    ),
    (
        "node_filesystem_readonly",
        &["device", "fstype", "mountpoint"],
    ),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn yaml(rel: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert_eq!(docs.len(), 1, "{rel}: one YAML document");
    docs.remove(0)
}

/// One alerting rule of alerts.yml.
struct Alert {
    name: String,
    expr: String,
    runbook_url: String,
}

fn alerts() -> Vec<Alert> {
    let doc = yaml("monitoring/prometheus/alerts.yml");
    let mut out = Vec::new();
    for group in doc["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"].as_str().expect("only alerting rules");
            let text = |k: &str| {
                rule["annotations"][k]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: no annotation {k}"))
                    .to_string()
            };
            assert!(
                ["critical", "warning"]
                    .contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
                "{name}: severity must be critical or warning"
            );
            assert!(!text("summary").is_empty(), "{name}: summary");
            out.push(Alert {
                name: name.to_string(),
                expr: rule["expr"].as_str().expect("expr").to_string(),
                runbook_url: text("runbook_url"),
            });
        }
    }
    assert!(!out.is_empty());
    out
}

/// A Grafana query with its place, for messages.
struct DashboardQuery {
    place: String,
    expr: String,
    /// `{{label}}`s of the legend.
    legend_labels: Vec<String>,
}

fn dashboard() -> (Value, Vec<DashboardQuery>) {
    let dash: Value = serde_json::from_str(&read("monitoring/grafana/vf-export.json"))
        .expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("title");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let legend = t["legendFormat"].as_str().unwrap_or("");
            out.push(DashboardQuery {
                place: format!("panel {title:?}"),
                expr: t["expr"].as_str().expect("expr").to_string(),
                legend_labels: legend
                    .split("{{")
                    .skip(1)
                    .map(|s| s.split("}}").next().unwrap().trim().to_string())
                    .collect(),
            });
        }
    }
    for var in dash["templating"]["list"].as_array().expect("templating") {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .expect("variable query");
        // label_values(<selector>, <label>): the label must be on the selector.
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {q:?}: only label_values(...)"));
        let (selector, label) = inner
            .rsplit_once(',')
            .expect("label_values(selector, label)");
        out.push(DashboardQuery {
            place: format!("variable {}", var["name"]),
            expr: selector.trim().to_string(),
            legend_labels: vec![label.trim().to_string()],
        });
    }
    (dash, out)
}

/// A PromQL scanner for the forms the monitoring files use: selectors with
/// matchers, functions, aggregations with `by`/`without`, vector matching
/// with `on`/`ignoring`/`group_left`, ranges and subqueries. Grafana's
/// `$variables` may stand in strings and ranges.
mod promql {
    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        Str(String),
        Num,
        Punct(char),
    }

    fn lex(src: &str) -> Vec<Tok> {
        let chars: Vec<char> = src.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c == '"' || c == '\'' || c == '`' {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && c != '`' {
                        i += 1;
                    }
                    s.push(chars[i]);
                    i += 1;
                }
                assert!(i < chars.len(), "unterminated string in {src}");
                i += 1;
                out.push(Tok::Str(s));
            } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            } else if c.is_ascii_digit() || c == '.' {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Num);
            } else if c == '$' {
                // A Grafana variable outside a string: only in ranges.
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Num);
            } else {
                out.push(Tok::Punct(c));
                i += 1;
            }
        }
        out
    }

    /// `metric{label op "value", ...}`.
    #[derive(Debug, Clone)]
    pub struct Selector {
        pub metric: String,
        pub matchers: Vec<(String, String, String)>,
    }

    /// What one expression names.
    #[derive(Debug, Default)]
    pub struct Names {
        pub selectors: Vec<Selector>,
        /// Labels of `by`, `without`, `on`, `ignoring`, `group_left/right`.
        pub grouping: Vec<String>,
        /// Labels `label_replace` creates.
        pub created: Vec<String>,
    }

    const KEYWORDS: [&str; 9] = [
        "and", "or", "unless", "offset", "bool", "atan2", "inf", "nan", "Inf",
    ];
    /// Aggregation operators: `sum by (x) (...)` puts `by` between the
    /// operator and its parenthesis.
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];

    pub fn names(src: &str) -> Names {
        let toks = lex(src);
        let mut out = Names::default();
        let mut i = 0;
        let punct = |i: usize, c: char| toks.get(i) == Some(&Tok::Punct(c));
        while i < toks.len() {
            match &toks[i] {
                Tok::Ident(name) if GROUPING.contains(&name.as_str()) => {
                    i += 1;
                    if punct(i, '(') {
                        i += 1;
                        while !punct(i, ')') {
                            match &toks[i] {
                                Tok::Ident(l) => out.grouping.push(l.clone()),
                                Tok::Punct(',') => {}
                                t => panic!("unexpected {t:?} in a label list of {src}"),
                            }
                            i += 1;
                        }
                        i += 1;
                    }
                }
                Tok::Ident(name) if KEYWORDS.contains(&name.as_str()) => i += 1,
                Tok::Ident(name)
                    if AGGREGATIONS.contains(&name.as_str())
                        && matches!(&toks.get(i + 1), Some(Tok::Ident(g)) if g == "by" || g == "without") =>
                {
                    i += 1
                }
                Tok::Ident(name) if punct(i + 1, '(') => {
                    if name == "label_replace" {
                        // label_replace(v, "dst", ...): the first comma at
                        // this call's depth is followed by the new label.
                        let mut depth = 0;
                        let mut j = i + 1;
                        loop {
                            match &toks[j] {
                                Tok::Punct('(' | '{' | '[') => depth += 1,
                                Tok::Punct(')' | '}' | ']') => depth -= 1,
                                Tok::Punct(',') if depth == 1 => break,
                                _ => {}
                            }
                            j += 1;
                        }
                        match &toks[j + 1] {
                            Tok::Str(dst) => out.created.push(dst.clone()),
                            t => panic!("label_replace without a label name: {t:?} in {src}"),
                        }
                    }
                    i += 2;
                }
                Tok::Ident(name) => {
                    let mut sel = Selector {
                        metric: name.clone(),
                        matchers: Vec::new(),
                    };
                    i += 1;
                    if punct(i, '{') {
                        i += 1;
                        while !punct(i, '}') {
                            if punct(i, ',') {
                                i += 1;
                                continue;
                            }
                            let Tok::Ident(label) = &toks[i] else {
                                panic!("expected a label name at {:?} in {src}", toks[i])
                            };
                            let mut op = String::new();
                            i += 1;
                            while let Tok::Punct(c @ ('=' | '!' | '~')) = toks[i] {
                                op.push(c);
                                i += 1;
                            }
                            let Tok::Str(value) = &toks[i] else {
                                panic!("expected a string after {label}{op} in {src}")
                            };
                            sel.matchers.push((label.clone(), op, value.clone()));
                            i += 1;
                        }
                        i += 1;
                    }
                    out.selectors.push(sel);
                }
                Tok::Punct('[') => {
                    while !punct(i, ']') {
                        i += 1;
                    }
                    i += 1;
                }
                Tok::Punct('{') => panic!("selectors without a metric name are not used: {src}"),
                _ => i += 1,
            }
        }
        out
    }

    #[test]
    fn scanner_reads_the_forms_the_files_use() {
        let n = names(
            r#"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{job="vf-export", route!~"/heartbeat|/ready", status=~"5.."}[$__rate_interval])))
               / on (environment, host) group_left () label_replace(node_memory_MemTotal_bytes{job="x"}, "host", "$1", "instance", "(.+):[0-9]+")
               and deriv(max by (environment) (vf_export_queue_depth{status="PENDING"})[30m:1m]) > 0 and absent(up)"#,
        );
        let metrics: Vec<&str> = n.selectors.iter().map(|s| s.metric.as_str()).collect();
        assert_eq!(
            metrics,
            [
                "http_request_duration_seconds_bucket",
                "node_memory_MemTotal_bytes",
                "vf_export_queue_depth",
                "up"
            ]
        );
        assert_eq!(
            n.selectors[0].matchers,
            [
                ("job".into(), "=".into(), "vf-export".into()),
                ("route".into(), "!~".into(), "/heartbeat|/ready".into()),
                ("status".into(), "=~".into(), "5..".into()),
            ]
        );
        assert_eq!(
            n.grouping,
            ["le", "route", "environment", "host", "environment"]
        );
        assert_eq!(n.created, ["host"]);
    }
}

/// Series of one exposition, by sample name (`x_bucket`, `x_count` apart).
#[derive(Default, Debug)]
struct Exposed {
    series: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

impl Exposed {
    fn parse(text: &str) -> Self {
        let mut out = Exposed::default();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name, labels) = match line.split_once('{') {
                Some((name, rest)) => {
                    let body = &rest[..rest.rfind('}').expect("closing brace")];
                    (name.to_string(), parse_labels(body))
                }
                None => (
                    line.split_whitespace().next().unwrap().to_string(),
                    BTreeMap::new(),
                ),
            };
            out.series.entry(name).or_default().push(labels);
        }
        out
    }

    fn labels_of(&self, metric: &str) -> Option<BTreeSet<String>> {
        self.series
            .get(metric)
            .map(|all| all.iter().flat_map(|s| s.keys().cloned()).collect())
    }

    fn has(&self, metric: &str, label: &str, value: &str) -> bool {
        self.series
            .get(metric)
            .is_some_and(|all| all.iter().any(|s| s.get(label).is_some_and(|v| v == value)))
    }
}

/// `a="x",b="y"` of the text format (values escape `\`, `"` and newlines).
fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = body;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    out
}

/// Checks one expression against the scrape; returns the problems found.
fn check_expr(place: &str, expr: &str, exposed: &Exposed, extra_labels: &[String]) -> Vec<String> {
    let names = promql::names(expr);
    assert!(
        !names.selectors.is_empty(),
        "{place}: no metric in {expr:?}"
    );
    let mut problems = Vec::new();
    let mut known: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    known.extend(names.created.iter().cloned());
    for sel in &names.selectors {
        let external = EXTERNAL.iter().find(|(m, _)| *m == sel.metric);
        let labels: BTreeSet<String> = match (external, exposed.labels_of(&sel.metric)) {
            (Some((_, own)), _) => own.iter().map(|s| s.to_string()).collect(),
            (None, Some(labels)) => labels,
            (None, None) => {
                problems.push(format!("{place}: metric {} is not on /metrics", sel.metric));
                continue;
            }
        };
        for (label, op, value) in &sel.matchers {
            if label == "job" {
                // The two jobs of prometheus.yml: the service's metrics come
                // from one, node exporter's from the other, `up` from both.
                let jobs: &[&str] = match (sel.metric.as_str(), external) {
                    ("up", _) => &["vf-export", "vf-export-node"],
                    (_, Some(_)) => &["vf-export-node"],
                    (_, None) => &["vf-export"],
                };
                if op != "=" || !jobs.contains(&value.as_str()) {
                    problems.push(format!(
                        "{place}: {}{{job{op}{value:?}}}: the job is one of {jobs:?}",
                        sel.metric
                    ));
                }
            } else if TARGET_LABELS.contains(&label.as_str()) {
                // Set by Prometheus; Grafana variables filter on them.
            } else if !labels.contains(label) {
                problems.push(format!(
                    "{place}: {} has no label {label} (it has {labels:?})",
                    sel.metric
                ));
            } else if op == "=" && external.is_none() && !exposed.has(&sel.metric, label, value) {
                problems.push(format!(
                    "{place}: no series {}{{{label}={value:?}}} on /metrics",
                    sel.metric
                ));
            }
        }
        known.extend(labels);
    }
    for label in names.grouping.iter().chain(extra_labels) {
        if !known.contains(label) {
            problems.push(format!(
                "{place}: label {label} is on none of its series ({known:?})"
            ));
        }
    }
    problems
}

/// An export record as the queue stores it, created `ago_secs` ago.
fn export_record(status: &str, ago_secs: i64) -> Document {
    let created = DateTime::from_millis(chrono::Utc::now().timestamp_millis() - ago_secs * 1000);
    doc! {
        "_id": ObjectId::new(), "campaignId": "c1", "campaignName": "C", "exportType": "entries",
        "status": status, "date": { "created": created }, "attempts": 0,
    }
}

async fn scrape(app: &TestApp) -> String {
    app.http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn rules_and_dashboard_name_only_metrics_a_running_instance_exposes() {
    let app = TestApp::spawn().await;
    // Pre-initialised at start: every type × final status, before any export.
    let before = Exposed::parse(&scrape(&app).await);
    for ty in vf_export::exports::Registry::new().names() {
        for status in ["FINISHED", "FAILED", "EXPIRED"] {
            let found = before
                .series
                .get("vf_export_exports_total")
                .is_some_and(|all| {
                    all.iter()
                        .any(|s| s["export_type"] == ty && s["status"] == status)
                });
            assert!(
                found,
                "vf_export_exports_total{{{ty},{status}}} missing at start"
            );
        }
        assert!(before.has("vf_export_exports_started_total", "export_type", ty));
        assert!(before.has("vf_export_duration_seconds_bucket", "export_type", ty));
    }
    // One export, a health check and a scrape, as in production.
    common::procs::seed(&app, "c1", 10, 1).await;
    let done = common::seed::run(&app, "c1", json!({ "exportType": "entries" })).await;
    assert_eq!(done["status"], "FINISHED", "{done}");
    let hb = app
        .http
        .get(format!("{}/heartbeat", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(hb.status(), 200);
    // The queue gauges appear with their first refresh (at start).
    let t0 = Instant::now();
    let exposed = loop {
        let e = Exposed::parse(&scrape(&app).await);
        if e.has("vf_export_queue_depth", "status", "PENDING") {
            break e;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "vf_export_queue_depth never appeared"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    app.stop().await;

    let mut problems = Vec::new();
    for a in alerts() {
        problems.extend(check_expr(
            &format!("alert {}", a.name),
            &a.expr,
            &exposed,
            &[],
        ));
    }
    let (_, queries) = dashboard();
    for q in &queries {
        problems.extend(check_expr(&q.place, &q.expr, &exposed, &q.legend_labels));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Both files really were read: the families they must watch are there.
    let used: BTreeSet<String> = alerts()
        .iter()
        .map(|a| a.expr.clone())
        .chain(queries.iter().map(|q| q.expr.clone()))
        .flat_map(|e| promql::names(&e).selectors)
        .map(|s| s.metric)
        .collect();
    for m in [
        "vf_export_exports_total",
        "vf_export_queue_depth",
        "vf_export_oldest_pending_age_seconds",
        "vf_export_in_flight",
        "vf_export_lease_reclaims_total",
        "vf_export_rows_written_total",
        "vf_export_cloudwatch_publish_failures_total",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "up",
    ] {
        assert!(used.contains(m), "nothing watches {m}");
    }
}

#[test]
fn the_checker_catches_a_renamed_metric_a_missing_label_and_a_wrong_job() {
    let exposed = Exposed::parse(
        "# TYPE vf_export_queue_depth gauge\nvf_export_queue_depth{status=\"PENDING\"} 0\n\
         http_requests_total{method=\"GET\",route=\"/heartbeat\",status=\"200\"} 3\n",
    );
    let ok = r#"max by (environment, status) (vf_export_queue_depth{status="PENDING"}) and on (instance) up{job="vf-export"}"#;
    assert_eq!(check_expr("ok", ok, &exposed, &[]), Vec::<String>::new());
    for (bad, why) in [
        ("vf_export_queue_size", "is not on /metrics"),
        (
            r#"vf_export_queue_depth{state="PENDING"}"#,
            "has no label state",
        ),
        (r#"vf_export_queue_depth{status="QUEUED"}"#, "no series"),
        (
            r#"sum by (export_type) (vf_export_queue_depth)"#,
            "label export_type",
        ),
        (r#"http_requests_total{job="node"}"#, "the job is"),
        (
            r#"node_filesystem_size_bytes{job="vf-export"}"#,
            "the job is",
        ),
    ] {
        let problems = check_expr("bad", bad, &exposed, &[]);
        assert!(
            problems.iter().any(|p| p.contains(why)),
            "{bad}: {problems:?}"
        );
    }
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-`
/// and `_` dropped, spaces to `-`; repeats get `-1`, `-2`, ...
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Heading texts and their anchors, in order.
fn runbook_headings() -> Vec<(String, String)> {
    let text = read("docs/runbook.md");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#').trim().to_string();
        let base = slug(&heading);
        let n = seen.entry(base.clone()).or_insert(0);
        let anchor = if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        *n += 1;
        out.push((heading, anchor));
    }
    out
}

/// Asserts `name` has a heading of its own and `reference` (a runbook_url or
/// an alarm description) points at it.
fn assert_runbook_section(what: &str, name: &str, reference: &str, headings: &[(String, String)]) {
    let section = headings
        .iter()
        .find(|(h, _)| h == name)
        .unwrap_or_else(|| panic!("{what} {name}: no heading `{name}` in docs/runbook.md"));
    let link = reference
        .split("docs/runbook.md#")
        .nth(1)
        .unwrap_or_else(|| panic!("{what} {name}: no docs/runbook.md# link in {reference:?}"));
    let anchor: String = link
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert!(
        headings.iter().any(|(_, a)| *a == anchor),
        "{what} {name}: anchor #{anchor} resolves to no heading"
    );
    assert_eq!(anchor, section.1, "{what} {name}: link to its own section");
}

#[test]
fn every_alert_has_a_runbook_section_its_url_resolves_to() {
    let headings = runbook_headings();
    for a in alerts() {
        assert!(
            a.runbook_url.starts_with("docs/runbook.md#"),
            "{}: {}",
            a.name,
            a.runbook_url
        );
        assert_runbook_section("alert", &a.name, &a.runbook_url, &headings);
    }
    // The runbook's own links between sections resolve too.
    let text = read("docs/runbook.md");
    for link in text.split("](#").skip(1) {
        let anchor = link.split(')').next().unwrap();
        assert!(
            headings.iter().any(|(_, a)| a == anchor),
            "docs/runbook.md links to #{anchor}, which is no heading"
        );
    }
}

/// Every `aws_cloudwatch_metric_alarm` of the module: (name suffix after
/// `${local.name}-`, description, whether it notifies the alarms topic).
fn cloudwatch_alarms() -> Vec<(String, String, bool)> {
    let dir = repo().join("terraform/modules/vf-export");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tf"))
        .collect();
    files.sort();
    for f in files {
        let body = hcl::parse(&std::fs::read_to_string(&f).unwrap()).unwrap();
        for b in body.blocks() {
            let labels: Vec<&str> = b.labels().iter().map(|l| l.as_str()).collect();
            if b.identifier() != "resource" || labels[0] != "aws_cloudwatch_metric_alarm" {
                continue;
            }
            let get = |k: &str| {
                b.body()
                    .attributes()
                    .find(|a| a.key() == k)
                    .map(|a| hcl::format::to_string(a.expr()).unwrap())
                    .unwrap_or_default()
            };
            let name = get("alarm_name");
            let suffix = name
                .trim_matches('"')
                .strip_prefix("${local.name}-")
                .unwrap_or_else(|| panic!("{}: alarm_name {name}", labels[1]))
                .to_string();
            let notifies = get("alarm_actions").contains("aws_sns_topic.alarms.arn");
            out.push((suffix, get("alarm_description"), notifies));
        }
    }
    out
}

#[test]
fn every_cloudwatch_alarm_has_a_runbook_section_and_notifying_ones_link_it() {
    let headings = runbook_headings();
    let alarms = cloudwatch_alarms();
    for name in [
        "ElbUnHealthyHostCount",
        "ElbHealthyHostsBelowMin",
        "ElbBackend5XX",
        "ElbGenerated5XX",
        "AsgInServiceBelowMin",
        "ExportBacklogAge",
    ] {
        assert!(
            alarms.iter().any(|(n, _, notifies)| n == name && *notifies),
            "no alarm {name} notifying the alarms topic: {alarms:?}"
        );
    }
    for (name, description, notifies) in &alarms {
        if *notifies {
            assert_runbook_section("alarm", name, description, &headings);
        } else {
            // Scaling triggers notify nobody, but an operator meets them in
            // the console: they get a section too.
            assert!(
                headings.iter().any(|(h, _)| h == name),
                "alarm {name}: no heading `{name}` in docs/runbook.md"
            );
        }
    }
}

#[test]
fn every_alert_has_a_promtool_case_that_fires_it() {
    let tests = yaml("monitoring/prometheus/alerts.test.yml");
    assert_eq!(
        tests["rule_files"][0].as_str(),
        Some("alerts.yml"),
        "alerts.test.yml must test alerts.yml"
    );
    let mut fired = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_vec().expect("tests") {
        for t in case["alert_rule_test"].as_vec().expect("alert_rule_test") {
            let name = t["alertname"].as_str().unwrap().to_string();
            if t["exp_alerts"].as_vec().is_some_and(|v| !v.is_empty()) {
                fired.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    let names: BTreeSet<String> = alerts().into_iter().map(|a| a.name).collect();
    let untested: Vec<_> = names.difference(&fired).collect();
    assert!(untested.is_empty(), "alerts no case fires: {untested:?}");
    let unknown: Vec<_> = fired
        .union(&quiet)
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "cases for alerts that do not exist: {unknown:?}"
    );
}

#[test]
fn the_scrape_config_gives_the_labels_the_rules_use() {
    let cfg = yaml("monitoring/prometheus/prometheus.yml");
    let jobs: Vec<&Yaml> = cfg["scrape_configs"].as_vec().unwrap().iter().collect();
    let names: Vec<&str> = jobs.iter().filter_map(|j| j["job_name"].as_str()).collect();
    assert_eq!(names, ["vf-export", "vf-export-node"]);
    for (job, port) in jobs.iter().zip([8080, 9100]) {
        let sd = &job["ec2_sd_configs"][0];
        assert_eq!(sd["port"].as_i64(), Some(port));
        let targets: Vec<&str> = job["relabel_configs"]
            .as_vec()
            .unwrap()
            .iter()
            .filter_map(|r| r["target_label"].as_str())
            .collect();
        assert!(targets.contains(&"environment"), "{targets:?}");
    }
}

/// The queue's backlog age: the oldest PENDING export's wait since its
/// creation, on /metrics and in CloudWatch (the alarm's datum).
#[tokio::test]
async fn oldest_pending_age_is_the_oldest_waiting_exports_wait() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let store = vf_export::store::Store::connect(&common::standins().mongodb_uri, &app.db_name)
        .await
        .unwrap();
    let queue = vf_export::queue::Queue::new(store);
    assert_eq!(queue.oldest_pending_age().await.unwrap(), 0, "empty queue");
    let t0 = Instant::now();
    // A FINISHED export older than any waiting one does not count.
    insert(
        &app.db,
        "exports",
        vec![
            export_record("FINISHED", 7200),
            export_record("PENDING", 600),
            export_record("PENDING", 60),
            export_record("TRIGGERED", 3000),
        ],
    )
    .await;
    let age = queue.oldest_pending_age().await.unwrap();
    let waited = t0.elapsed().as_secs() as i64;
    assert!(
        (600..=600 + waited + 1).contains(&age),
        "age {age} s, expected the 600 s export's (+{waited} s)"
    );
    // A second process (first refresh at start) publishes it as the gauge.
    let sibling = app.sibling(&[("worker-concurrency", "0")]).await;
    let t0 = Instant::now();
    loop {
        let text = scrape(&sibling).await;
        let gauge = text
            .lines()
            .find(|l| l.starts_with("vf_export_oldest_pending_age_seconds "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .expect("gauge on /metrics");
        if gauge >= 600.0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "gauge stayed at {gauge}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sibling.stop().await;
    // Nothing PENDING any more: 0.
    app.db
        .collection::<Document>("exports")
        .update_many(
            doc! { "status": "PENDING" },
            doc! { "$set": { "status": "FINISHED" } },
        )
        .await
        .unwrap();
    assert_eq!(queue.oldest_pending_age().await.unwrap(), 0);
    app.stop().await;
}

#[tokio::test]
async fn backlog_age_reaches_cloudwatch_under_the_alarms_dimension() {
    if common::standins().aws_endpoint.is_none() {
        eprintln!("skipped against real AWS: would publish to a real namespace");
        return;
    }
    let ns = common::unique("VfExportAgeTest");
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    insert(&app.db, "exports", vec![export_record("PENDING", 900)]).await;
    let publisher = app
        .sibling(&[
            ("worker-concurrency", "0"),
            ("cloudwatch-namespace", &ns),
            ("asg-name", "vf-export-test-asg"),
            ("cloudwatch-interval-secs", "1"),
        ])
        .await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(common::standins().aws_endpoint.clone().unwrap())
        .load()
        .await;
    let cw = aws_sdk_cloudwatch::Client::new(&sdk);
    // The alarm's metric: the name the binary publishes, the dimension the
    // terraform alarm filters on (tests/suite/infra_terraform.rs holds the
    // terraform side to the same names).
    let dim = aws_sdk_cloudwatch::types::Dimension::builder()
        .name(vf_export::telemetry::cloudwatch::DIMENSION)
        .value("vf-export-test-asg")
        .build();
    let t0 = Instant::now();
    loop {
        let stats = cw
            .get_metric_statistics()
            .namespace(&ns)
            .metric_name(vf_export::telemetry::cloudwatch::BACKLOG_AGE)
            .dimensions(dim.clone())
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                chrono::Utc::now().timestamp() - 600,
            ))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                chrono::Utc::now().timestamp() + 60,
            ))
            .period(60)
            .statistics(aws_sdk_cloudwatch::types::Statistic::Maximum)
            .send()
            .await
            .unwrap();
        let max = stats
            .datapoints()
            .iter()
            .filter_map(|d| d.maximum())
            .fold(0.0, f64::max);
        if max >= 900.0 {
            let unit = stats.datapoints().iter().find_map(|d| d.unit().cloned());
            assert_eq!(unit, Some(aws_sdk_cloudwatch::types::StandardUnit::Seconds));
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no ExportBacklogAge datapoint of 900 s or more: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    publisher.stop().await;
    app.stop().await;
}
