//! The module graph of `src/` goes one way: no module reaches, through `crate::` paths, a module
//! that reaches back to it. Read from the source text like `../shared/tools/modgraph.py` does
//! (unit tests excluded: they may import anything), so a cycle fails the build's tests.

use std::collections::{BTreeMap, BTreeSet};

use crate::util::repo;

/// Module path (`permissions::file`) to its source text, without `#[cfg(test)] mod x { .. }`.
fn modules() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let src = repo().join("src");
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let rel = rel.to_string_lossy().replace('\\', "/");
            if path.extension().is_none_or(|e| e != "rs")
                || rel.ends_with("tests")
                || rel.split('/').any(|p| p == "tests")
            {
                continue;
            }
            let name = rel.strip_suffix("/mod").unwrap_or(&rel).replace('/', "::");
            if name == "lib" || name == "main" {
                continue;
            }
            out.insert(
                name,
                without_test_modules(&std::fs::read_to_string(&path).unwrap()),
            );
        }
    }
    out
}

fn without_test_modules(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        match after
            .find('{')
            .filter(|b| after[..*b].contains("mod ") && !after[..*b].contains(';'))
        {
            Some(open) => {
                let mut depth = 0;
                let mut end = after.len();
                for (i, c) in after[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            None => {
                out.push_str("#[cfg(test)]");
                rest = &after["#[cfg(test)]".len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The modules each module names through `crate::` (paths and `use crate::{a, b}` lists).
fn edges(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    for (name, text) in modules {
        let mut targets = BTreeSet::new();
        let mut paths: Vec<String> = Vec::new();
        for (i, _) in text.match_indices("crate::") {
            let tail = &text[i + "crate::".len()..];
            if let Some(list) = tail.strip_prefix('{') {
                let list = &list[..list.find('}').unwrap_or(list.len())];
                paths.extend(list.split(',').map(|p| p.trim().to_string()));
            } else {
                let end = tail
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(tail.len());
                paths.push(tail[..end].to_string());
            }
        }
        for path in paths {
            let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
            let target = (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("::"))
                .find(|candidate| modules.contains_key(candidate));
            if let Some(t) = target
                && t != *name
                && !name.starts_with(&format!("{t}::"))
                && !t.starts_with(&format!("{name}::"))
            {
                targets.insert(t);
            }
        }
        edges.insert(name.clone(), targets);
    }
    edges
}

/// A cycle through `start`, if there is one.
fn cycle_from(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in edges.get(&at).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_string());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_cycle() {
    let modules = modules();
    assert!(modules.len() > 30, "read only {} modules", modules.len());
    let edges = edges(&modules);
    assert!(
        edges["gateway"].contains("verify") && edges["serve"].contains("gateway"),
        "the reader finds known imports"
    );
    let cycles: Vec<String> = modules
        .keys()
        .filter_map(|m| cycle_from(m, &edges))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The reader itself: a cycle written into a tree of modules is found.
#[test]
fn a_cycle_is_found_when_there_is_one() {
    let modules: BTreeMap<String, String> = [
        ("a", "use crate::b::X;"),
        ("b", "fn f() { crate::c::g() }"),
        (
            "c",
            "use crate::{a, d};\n#[cfg(test)]\nmod tests { use crate::e; }",
        ),
        ("d", ""),
        ("e", "use crate::c;"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), without_test_modules(v)))
    .collect();
    let edges = edges(&modules);
    assert_eq!(cycle_from("a", &edges).unwrap(), ["a", "b", "c", "a"]);
    assert!(cycle_from("d", &edges).is_none());
    assert!(
        cycle_from("e", &edges).is_none(),
        "test modules do not count"
    );
}

/// The layers of `src/`, from the bottom. A module may import from its own layer (the graph
/// stays acyclic, tested above) and the layers below, never from a layer above; every module
/// has a layer, so a new one is placed on purpose. The README's module map lists the same.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaves",
        &[
            "condition",
            "cores",
            "fetch",
            "forward_auth",
            "grpc",
            "host",
            "inbound",
            "keys",
            "metrics",
            "normalize",
            "supervise",
            "token",
        ],
    ),
    ("policy", &["policy"]),
    ("caller and issuer", &["principal", "signing"]),
    (
        "stages",
        &[
            "cors",
            "decide",
            "exchange",
            "jwks",
            "mint",
            "org",
            "permissions",
            "proxy",
            "route",
            "store",
            "verify",
            "websocket",
        ],
    ),
    ("configuration", &["config", "described"]),
    ("modes", &["audit", "explain", "gateway", "reject"]),
    ("server", &["admin", "reload", "serve", "state"]),
    ("entry", &["cli", "dev", "dev_issuer", "echo"]),
];

/// The layer of a module: that of its top-level module (`permissions::file` is `permissions`).
fn layer_of(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap_or(module);
    LAYERS.iter().position(|(_, names)| names.contains(&top))
}

/// Imports that point from a module up to a layer above it, as `from -> to`.
fn upward(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for (from, targets) in edges {
        for to in targets {
            if let (Some(a), Some(b)) = (layer_of(from), layer_of(to))
                && b > a
            {
                found.push(format!(
                    "{from} ({}) -> {to} ({})",
                    LAYERS[a].0, LAYERS[b].0
                ));
            }
        }
    }
    found
}

#[test]
fn every_module_has_a_layer_and_imports_only_downward() {
    let modules = modules();
    let unplaced: Vec<&String> = modules.keys().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "modules without a layer in LAYERS: {unplaced:?}"
    );
    let up = upward(&edges(&modules));
    assert!(up.is_empty(), "imports pointing up:\n{}", up.join("\n"));
}

/// The check itself: an import from a leaf up to a stage is found.
#[test]
fn an_upward_import_is_found() {
    let modules: BTreeMap<String, String> = [
        ("token", "use crate::mint::Minted;"),
        ("mint", "use crate::token::X;"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        upward(&edges(&modules)),
        ["token (leaves) -> mint (stages)"]
    );
}

/// Small modules with one job each: no source file of `src/` grows past 600 lines.
#[test]
fn no_source_file_is_over_600_lines() {
    let mut stack = vec![repo().join("src")];
    let mut long = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let lines = std::fs::read_to_string(&path).unwrap().lines().count();
                if lines > 600 {
                    long.push(format!("{} ({lines} lines)", path.display()));
                }
            }
        }
    }
    assert!(long.is_empty(), "split these: {long:?}");
}
