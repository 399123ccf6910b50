//! The module layering of docs/ARCHITECTURE.md "Module layering": no
//! import cycle among the sibling modules of any module in core (the
//! top-level modules, `config`'s, `resolve`'s, `cache::redis`'s, ...).
//! Read from the sources, so a new `use` or path that closes a cycle
//! fails here, naming it. `crate::a::b` and `super::b` (any number of
//! `super`s) both count; test modules and files are left out (a test
//! may reach anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// A module path from the crate root (`["resolve", "machine"]`).
type ModPath = Vec<String>;

/// Every `.rs` file under `dir`, test files left out.
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

/// The file's code before its inline test module, if any, with no
/// comment lines: a doc link is no import.
fn non_test_text(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let code = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => &text,
    };
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module a source file defines: `resolve/mod.rs` is `resolve`,
/// `resolve/machine.rs` is `resolve::machine`, `lib.rs` the root.
fn module_of(relative: &Path) -> ModPath {
    let mut path: ModPath = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(last) = path.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" && stem != "lib" {
            path.push(stem.to_owned());
        }
    }
    path
}

/// A cursor over source text, for reading use trees.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl Cursor<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, token: &str) -> bool {
        let found = self.rest().starts_with(token);
        if found {
            self.at += token.len();
        }
        found
    }

    fn ident(&mut self) -> Option<String> {
        let name: String = self
            .rest()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        self.at += name.len();
        (!name.is_empty()).then_some(name)
    }

    /// The paths the use tree (or plain path) here names, groups expanded:
    /// `a::{b, c::{d, e}}` names `a::b`, `a::c::d` and `a::c::e`; a glob
    /// ends in `*`.
    fn tree(&mut self) -> Vec<ModPath> {
        if self.eat("{") {
            let mut all = Vec::new();
            loop {
                self.skip_space();
                if self.eat("}") || self.rest().is_empty() {
                    return all;
                }
                all.extend(self.tree());
                // Past `as name`, `*` or anything else to the next item.
                while !self.rest().is_empty() && !self.rest().starts_with('}') {
                    if self.eat(",") {
                        break;
                    }
                    self.at += self.rest().chars().next().map_or(1, char::len_utf8);
                }
            }
        }
        if self.eat("*") {
            return vec![vec!["*".to_owned()]];
        }
        let Some(first) = self.ident() else {
            return Vec::new();
        };
        let rest = if self.eat("::") {
            self.tree()
        } else {
            Vec::new()
        };
        if rest.is_empty() {
            return vec![vec![first]];
        }
        rest.into_iter()
            .map(|mut path| {
                path.insert(0, first.clone());
                path
            })
            .collect()
    }
}

/// Every module path `text` (the source of `module`) names through
/// `crate::` or `super::`, resolved from the crate root.
fn references(text: &str, module: &[String]) -> BTreeSet<ModPath> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("::") {
        let before = &text[..at];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let head = &before[start..];
        if head != "crate" && head != "super" {
            continue;
        }
        // The first segment of a path only (not `a::super::`).
        if before[..start].ends_with("::") || before[..start].ends_with('$') {
            continue;
        }
        let mut cursor = Cursor { text, at: start };
        for path in cursor.tree() {
            if let Some(resolved) = resolve(&path, module) {
                found.insert(resolved);
            }
        }
    }
    found
}

/// `path` as named in `module`, from the crate root (a trailing `self`
/// names its prefix). A path that starts at none of `crate`, `super` or
/// `self` is another crate's.
fn resolve(path: &[String], module: &[String]) -> Option<ModPath> {
    let (mut base, rest) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (module.to_vec(), &path[1..]),
        Some("super") => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let keep = module.len().checked_sub(ups)?;
            (module[..keep].to_vec(), &path[ups..])
        }
        _ => return None,
    };
    base.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(base)
}

/// The paths the `use` items of `text` (the source of `module`, whose
/// submodules are `children`) bring into `module`, from the crate root:
/// a child file's `super::Name` reaches them too.
fn uses(text: &str, module: &[String], children: &BTreeSet<String>) -> Vec<ModPath> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("use ") {
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let head = text[line_start..at].trim();
        let is_item = head.is_empty() || (head.starts_with("pub") && !head.contains(' '));
        if !is_item {
            continue;
        }
        let mut cursor = Cursor {
            text,
            at: at + "use ".len(),
        };
        for path in cursor.tree() {
            let from_child = path.first().is_some_and(|first| children.contains(first));
            let resolved = if from_child {
                let mut full = module.to_vec();
                full.extend(path.iter().filter(|s| *s != "self").cloned());
                Some(full)
            } else {
                resolve(&path, module)
            };
            found.extend(resolved);
        }
    }
    found
}

/// The names each module's `use` items bring in, to the path each names.
#[derive(Default)]
struct Aliases {
    names: BTreeMap<ModPath, BTreeMap<String, ModPath>>,
}

impl Aliases {
    /// What `path` names once the `use` items it goes through are
    /// followed: `super::Resolver` in `resolve::dane` is
    /// `resolve::machine::Resolver`, as `resolve` re-exports it. A glob
    /// names its module and everything that module brings in (more than
    /// a file may use: a cycle through a glob is reported, not missed).
    fn expand(&self, path: &[String], depth: usize) -> Vec<ModPath> {
        if depth > 8 {
            return vec![path.to_vec()];
        }
        if path.last().is_some_and(|s| s == "*") {
            let module = &path[..path.len() - 1];
            let mut all = vec![module.to_vec()];
            for target in self.names.get(module).into_iter().flat_map(|n| n.values()) {
                all.extend(self.expand(target, depth + 1));
            }
            return all;
        }
        for at in 1..path.len() {
            if let Some(target) = self.names.get(&path[..at]).and_then(|n| n.get(&path[at])) {
                if target.as_slice() != path {
                    let mut followed = target.clone();
                    followed.extend(path[at + 1..].iter().cloned());
                    return self.expand(&followed, depth + 1);
                }
            }
        }
        vec![path.to_vec()]
    }
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

/// Each non-test source file's module and the module paths it names,
/// `use` re-exports followed.
fn crate_references() -> Vec<(ModPath, BTreeSet<ModPath>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let texts: Vec<(ModPath, String)> = files
        .iter()
        .filter_map(|file| {
            Some((
                module_of(file.strip_prefix(&src).ok()?),
                non_test_text(file),
            ))
        })
        .collect();
    let mut children: BTreeMap<ModPath, BTreeSet<String>> = BTreeMap::new();
    for (module, _) in &texts {
        if let Some((last, parent)) = module.split_last() {
            children
                .entry(parent.to_vec())
                .or_default()
                .insert(last.clone());
        }
    }
    let mut aliases = Aliases::default();
    for (module, text) in &texts {
        let own = children.get(module).cloned().unwrap_or_default();
        for path in uses(text, module, &own) {
            // A glob brings no one name in; its paths are expanded where used.
            if let Some(last) = path.last().filter(|last| *last != "*") {
                let names = aliases.names.entry(module.clone()).or_default();
                names.insert(last.clone(), path.clone());
            }
        }
    }
    texts
        .iter()
        .map(|(module, text)| {
            let named = references(text, module)
                .iter()
                .flat_map(|path| aliases.expand(path, 0))
                .collect();
            (module.clone(), named)
        })
        .collect()
}

/// For every module with submodules, the graph of which submodule names
/// which (a file deeper down counts for the submodule it is in).
fn sibling_graphs() -> BTreeMap<ModPath, Graph> {
    let files = crate_references();
    let mut graphs: BTreeMap<ModPath, Graph> = BTreeMap::new();
    for (module, _) in &files {
        for depth in 0..module.len() {
            let graph = graphs.entry(module[..depth].to_vec()).or_default();
            graph.entry(module[depth].clone()).or_default();
        }
    }
    for (module, named) in &files {
        for depth in 0..module.len() {
            let (parent, from) = (&module[..depth], &module[depth]);
            let Some(graph) = graphs.get_mut(parent) else {
                continue;
            };
            let targets: Vec<String> = named
                .iter()
                .filter(|path| path.len() > depth && path.starts_with(parent))
                .map(|path| path[depth].clone())
                .filter(|to| to != from && graph.contains_key(to))
                .collect();
            graph.entry(from.clone()).or_default().extend(targets);
        }
    }
    // The simulator is the test harness over everything.
    if let Some(top) = graphs.get_mut(&Vec::new()) {
        top.remove("sim");
        for targets in top.values_mut() {
            targets.remove("sim");
        }
    }
    graphs
}

#[test]
fn the_parser_sees_a_cycle() {
    let text = "use crate::{a::b, c::{d, e as f}, g::*};\n\
                use super::{self, h::{self, i}};\n\
                fn f() { crate::j::k(); super::super::l::m(); x::super::n(); }\n";
    let module = ["p".to_owned(), "q".to_owned(), "r".to_owned()];
    let found: BTreeSet<String> = references(text, &module)
        .into_iter()
        .map(|path| path.join("::"))
        .collect();
    let expected = [
        "a::b",
        "c::d",
        "c::e",
        "g::*",
        "p::q",
        "p::q::h",
        "p::q::h::i",
        "j::k",
        "p::l::m",
    ];
    assert_eq!(found, expected.map(String::from).into());
    let path = |text: &str| -> ModPath { text.split("::").map(String::from).collect() };
    let mut aliases = Aliases::default();
    let reexports = aliases.names.entry(path("p")).or_default();
    reexports.insert("R".into(), path("p::m::R"));
    assert_eq!(
        aliases.expand(&path("p::R::new"), 0),
        [path("p::m::R::new")]
    );
    assert_eq!(
        aliases.expand(&path("p::*"), 0),
        [path("p"), path("p::m::R")]
    );
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("a".into());
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}

#[test]
fn no_module_s_submodules_import_a_cycle() {
    let graphs = sibling_graphs();
    for parent in [
        &[][..],
        &["config"],
        &["resolve"],
        &["cache"],
        &["cache", "redis"],
        &["service"],
        &["dane"],
        &["sim"],
        &["http"],
        &["socketmap"],
    ] {
        let parent: ModPath = parent.iter().map(|s: &&str| (*s).to_owned()).collect();
        assert!(graphs.contains_key(&parent), "no module {parent:?} seen");
    }
    assert!(graphs[&Vec::new()]["service"].contains("resolve"));
    let cycles: Vec<String> = graphs
        .iter()
        .filter_map(|(parent, graph)| {
            let found = cycle(graph)?;
            let within = if parent.is_empty() {
                "the crate root".to_owned()
            } else {
                parent.join("::")
            };
            Some(format!("in {within}: {}", found.join(" -> ")))
        })
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}
