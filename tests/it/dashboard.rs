//! `deploy/grafana/scopegate-dashboard.json`: every metric its queries use is one scopegate
//! registers (`src/metrics.rs`), every metric scopegate registers has a panel, and every query
//! reads the dashboard's data source and follows its `job` and `instance` variables.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

const DASHBOARD: &str = "deploy/grafana/scopegate-dashboard.json";
const METRICS: &str = "src/metrics.rs";

/// The data source variable every panel and query uses.
const DATA_SOURCE: &str = "${DS_PROMETHEUS}";

/// The label matchers every metric selector in a panel carries.
const SELECTOR_MATCHERS: &[&str] = &["job=~\"$job\"", "instance=~\"$instance\""];

/// The series a histogram exports besides its name.
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

const PREFIX: &str = "scopegate_";

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
}

/// Every `scopegate_…` metric name in `text` (a name starts where no identifier character
/// precedes it), with the byte offset just past it.
fn metric_names(text: &str) -> Vec<(&str, usize)> {
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find(PREFIX) {
        let start = from + found;
        let len = text[start..]
            .find(|c: char| !is_name_char(c))
            .unwrap_or(text.len() - start);
        let end = start + len;
        let preceded = text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        if !preceded && len > PREFIX.len() {
            names.push((&text[start..end], end));
        }
        from = end;
    }
    names
}

/// The metric names `src/metrics.rs` defines: string literals that are exactly a
/// `scopegate_…` name.
fn registered() -> BTreeSet<String> {
    let source = read(METRICS);
    let names: BTreeSet<String> = metric_names(&source)
        .into_iter()
        .filter(|&(name, end)| {
            let start = end - name.len();
            source[..start].ends_with('"') && source[end..].starts_with('"')
        })
        .map(|(name, _)| name.to_owned())
        .collect();
    assert!(
        !names.is_empty(),
        "found no \"scopegate_…\" string literal in {METRICS}: did the metric definitions move?"
    );
    names
}

/// The metric a series name belongs to: itself when registered, else the histogram it is the
/// `_bucket`, `_sum` or `_count` of.
fn base_name(series: &str, registered: &BTreeSet<String>) -> String {
    if registered.contains(series) {
        return series.to_owned();
    }
    HISTOGRAM_SUFFIXES
        .iter()
        .filter_map(|suffix| series.strip_suffix(suffix))
        .find(|base| registered.contains(*base))
        .unwrap_or(series)
        .to_owned()
}

/// Every panel, rows' nested panels included, depth first.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn title(panel: &Value) -> &str {
    panel["title"].as_str().unwrap_or("(untitled)")
}

/// Each panel's title with its targets' PromQL expressions.
fn panel_exprs(dashboard: &Value) -> Vec<(&str, &str)> {
    let mut exprs = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| {
                panic!(
                    "panel {:?}: a target without a string `expr`: {target}",
                    title(panel)
                )
            });
            exprs.push((title(panel), expr));
        }
    }
    exprs
}

/// The expressions outside panels: annotation queries and the variables' queries.
fn other_exprs(dashboard: &Value) -> Vec<String> {
    let annotations = dashboard["annotations"]["list"].as_array().into_iter();
    let variables = dashboard["templating"]["list"].as_array().into_iter();
    annotations
        .flatten()
        .filter_map(|a| a["expr"].as_str())
        .chain(variables.flatten().filter_map(|v| match &v["query"] {
            Value::String(q) => Some(q.as_str()),
            q => q["query"].as_str(),
        }))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_metric_the_dashboard_queries_is_registered() {
    let registered = registered();
    let dashboard = dashboard();
    let mut used = BTreeMap::<String, BTreeSet<String>>::new();
    let panel = panel_exprs(&dashboard);
    let other = other_exprs(&dashboard);
    let everywhere = panel
        .iter()
        .map(|&(title, expr)| (title.to_owned(), expr))
        .chain(
            other
                .iter()
                .map(|e| ("(annotation or variable)".to_owned(), e.as_str())),
        );
    for (title, expr) in everywhere {
        for (series, _) in metric_names(expr) {
            used.entry(base_name(series, &registered))
                .or_default()
                .insert(title.clone());
        }
    }
    assert!(!used.is_empty(), "{DASHBOARD} queries no scopegate metric");
    let unknown: Vec<String> = used
        .iter()
        .filter(|(name, _)| !registered.contains(*name))
        .map(|(name, titles)| format!("{name} (in {titles:?})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "{DASHBOARD} queries metrics {METRICS} does not register: {unknown:#?}\nregistered: \
         {registered:#?}"
    );
}

#[test]
fn every_registered_metric_has_a_dashboard_panel() {
    let registered = registered();
    let dashboard = dashboard();
    let shown: BTreeSet<String> = panel_exprs(&dashboard)
        .into_iter()
        .flat_map(|(_, expr)| metric_names(expr))
        .map(|(series, _)| base_name(series, &registered))
        .collect();
    let missing: Vec<&String> = registered.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "metrics registered in {METRICS} that no panel of {DASHBOARD} queries: {missing:?}; add a \
         panel for each (deploy/README.md, \"Grafana dashboard\")"
    );
}

#[test]
fn dashboard_panels_use_its_data_source_and_instance_variables() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion: {}",
        dashboard["schemaVersion"]
    );
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` template variable"))
    };
    let ds = variable("DS_PROMETHEUS");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["job", "instance"] {
        assert_eq!(
            variable(name)["datasource"]["uid"],
            DATA_SOURCE,
            "variable {name}"
        );
    }

    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = title(panel);
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title:?}: no id"));
        assert!(ids.insert(id), "panel {title:?}: id {id} used twice");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(
            x + w <= 24,
            "panel {title:?}: gridPos {grid} is wider than 24 columns"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], DATA_SOURCE, "panel {title:?}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], DATA_SOURCE, "panel {title:?}");
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "panel {title:?}: {expr} reads no metric");
            for (name, end) in names {
                let selector = expr[end..]
                    .strip_prefix('{')
                    .and_then(|rest| rest.split_once('}'))
                    .map(|(selector, _)| selector)
                    .unwrap_or_else(|| panic!("panel {title:?}: {name} has no selector: {expr}"));
                for matcher in SELECTOR_MATCHERS {
                    assert!(
                        selector.contains(matcher),
                        "panel {title:?}: {name}{{{selector}}} lacks {matcher}"
                    );
                }
            }
        }
    }
}
