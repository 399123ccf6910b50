//! The module layering of docs/ARCHITECTURE.md "Module layering": no
//! import cycle among core's top-level modules, nor among `config`'s
//! submodules. Read from the sources, so a new `use` that closes a cycle
//! fails here, naming the cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `dir`, test files left out (they may reach
/// anywhere).
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "tests" {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" && !name.ends_with("_tests.rs") {
            out.push(path);
        }
    }
}

/// The file's text before its inline test module, if any.
fn non_test_text(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The first path segment after each `prefix` in `text`, the segments of
/// a `prefix{a, b::c}` group included.
fn referenced(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let boundary = rest[..at]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
        rest = &rest[at + prefix.len()..];
        if !boundary {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        at_start = true;
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 && at_start {
                    if c.is_alphanumeric() || c == '_' {
                        item.push(c);
                    } else if !item.is_empty() {
                        found.insert(std::mem::take(&mut item));
                        at_start = false;
                    }
                }
            }
            if !item.is_empty() {
                found.insert(item);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// A cycle in `graph`, as the path that closes it, if there is one.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `crate::<module>` references of each top-level module.
fn top_level_graph() -> Graph {
    let src = src();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let Ok(relative) = file.strip_prefix(&src) else {
            continue;
        };
        let first = relative.components().next();
        let Some(first) = first.map(|c| c.as_os_str().to_string_lossy().into_owned()) else {
            continue;
        };
        let module = first.trim_end_matches(".rs").to_owned();
        // The simulator is a test harness over everything; `lib.rs` is the root.
        if module == "sim" || module == "lib" {
            continue;
        }
        let targets = referenced(&non_test_text(&file), "crate::");
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(targets.into_iter().filter(|t| *t != module && t != "sim"));
    }
    graph
}

/// References between `config`'s submodules (`super::<sub>`,
/// `crate::config::<sub>`).
fn config_graph() -> Graph {
    let dir = src().join("config");
    let mut files = Vec::new();
    sources(&dir, &mut files);
    let subs: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| s != "mod")
        .collect();
    let mut graph = Graph::new();
    for file in &files {
        let Some(module) = file.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        if module == "mod" {
            continue;
        }
        let text = non_test_text(file);
        let mut targets = referenced(&text, "super::");
        targets.extend(referenced(&text, "crate::config::"));
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(
            targets
                .into_iter()
                .filter(|t| *t != module && subs.contains(t)),
        );
    }
    graph
}

#[test]
fn the_parser_sees_a_cycle() {
    let text = "use crate::{a::b, c::{d, e}};\nfn f() { crate::g::h(); }\n";
    let found = referenced(text, "crate::");
    assert_eq!(found, ["a", "c", "g"].map(String::from).into());
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("a".into());
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}

#[test]
fn core_top_level_modules_import_no_cycle() {
    let graph = top_level_graph();
    assert!(graph.contains_key("resolve") && graph.contains_key("service"));
    if let Some(found) = cycle(&graph) {
        panic!("import cycle among core's modules: {}", found.join(" -> "));
    }
}

#[test]
fn config_submodules_import_no_cycle() {
    let graph = config_graph();
    assert!(graph.contains_key("reader") && graph.contains_key("values"));
    if let Some(found) = cycle(&graph) {
        panic!(
            "import cycle among config's modules: {}",
            found.join(" -> ")
        );
    }
}
