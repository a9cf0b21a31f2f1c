//! The code's layout, checked: no two modules of `host/src` import each other (directly or
//! through others), no source file over [`MAX_FILE_LINES`] lines and no function over
//! [`MAX_FN_LINES`] lines outside tests.
//!
//! Imports are read from the source text: every `crate::…`, `super::…` and `self::…` path, and
//! the names a parent module re-exports from its children (`pub use child::{A, B}`), so `use
//! super::A` in a sibling counts as an import of `child`. Between two modules, only the
//! siblings under their closest common parent matter (a parent and its own children always
//! refer to each other); those sibling graphs must have no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;

/// A module path below the crate root, e.g. `["service", "kv"]`.
type ModPath = Vec<String>;

struct Source {
    module: ModPath,
    path: PathBuf,
    /// The text before any `#[cfg(test)]` module, without comments.
    code: String,
}

fn sources(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut module: ModPath = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => &text[..i],
                None => &text,
            };
            // Comments (doc links included) are not imports.
            let code = code
                .lines()
                .map(|l| l.find("//").map_or(l, |i| &l[..i]))
                .collect::<Vec<_>>()
                .join("\n");
            out.push(Source { module, path, code });
        }
    }
    out
}

/// The identifiers of a `{A, B as C, self}` list or a single name after `prefix::`.
fn names_after(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if let Some(list) = rest.strip_prefix('{') {
        let end = list.find('}').unwrap_or(list.len());
        return list[..end]
            .split(',')
            .filter_map(|n| n.split_whitespace().next())
            .map(|n| n.split("::").next().unwrap_or(n).to_string())
            .filter(|n| !n.is_empty())
            .collect();
    }
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    vec![name]
}

/// Every path a source refers to, made absolute: `(segments, names)` where names are what a
/// trailing `{…}` or last segment imports.
fn references(src: &Source) -> Vec<ModPath> {
    let mut out = Vec::new();
    let here = &src.module;
    for (i, _) in src
        .code
        .match_indices("crate::")
        .chain(src.code.match_indices("super::"))
        .chain(src.code.match_indices("self::"))
    {
        let before = src.code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let tail = &src.code[i..];
        let mut segments: Vec<String> = Vec::new();
        let mut base: ModPath = if tail.starts_with("crate::") {
            Vec::new()
        } else if tail.starts_with("super::") {
            here[..here.len().saturating_sub(1)].to_vec()
        } else {
            here.clone()
        };
        let mut rest = &tail[tail.find("::").unwrap() + 2..];
        while let Some(more) = rest.strip_prefix("super::") {
            base.pop();
            rest = more;
        }
        loop {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() || !rest[name.len()..].starts_with("::") {
                for n in names_after(rest) {
                    let mut p = base.clone();
                    p.extend(segments.iter().cloned());
                    p.push(n);
                    out.push(p);
                }
                break;
            }
            segments.push(name.clone());
            rest = &rest[name.len() + 2..];
        }
    }
    out
}

/// `pub use child::{A, B};` lines of a module: name → child.
fn re_exports(src: &Source) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in src.code.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((child, names)) = rest.split_once("::") else {
            continue;
        };
        for name in names_after(names.trim_end_matches(';')) {
            out.insert(name, child.to_string());
        }
    }
    out
}

/// The module a reference lands in: its longest prefix that is a module, followed through a
/// parent's re-export of a child's name.
fn target(
    reference: &ModPath,
    modules: &BTreeSet<ModPath>,
    exports: &BTreeMap<ModPath, BTreeMap<String, String>>,
) -> Option<ModPath> {
    let len = (0..=reference.len())
        .rev()
        .find(|n| modules.contains(&reference[..*n].to_vec()))?;
    let mut module = reference[..len].to_vec();
    if let Some(name) = reference.get(len) {
        if let Some(child) = exports.get(&module).and_then(|e| e.get(name)) {
            let mut c = module.clone();
            c.push(child.clone());
            if modules.contains(&c) {
                module = c;
            }
        }
    }
    Some(module)
}

/// Cycles in one parent's graph of its children.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(i) = stack.iter().position(|s| s == n) {
            found.push(stack[i..].to_vec());
            return;
        }
        if done.contains(n) {
            return;
        }
        stack.push(n.to_string());
        for next in edges.get(n).into_iter().flatten() {
            visit(next, edges, stack, done, found);
        }
        stack.pop();
        done.insert(n.to_string());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        visit(n, edges, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

/// Sibling edges `parent → (child → child)` from every source's references.
fn sibling_graphs(srcs: &[Source]) -> BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> {
    let modules: BTreeSet<ModPath> = srcs.iter().map(|s| s.module.clone()).collect();
    let exports: BTreeMap<ModPath, _> = srcs
        .iter()
        .map(|s| (s.module.clone(), re_exports(s)))
        .collect();
    let mut graphs: BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for src in srcs {
        for reference in references(src) {
            let Some(to) = target(&reference, &modules, &exports) else {
                continue;
            };
            let from = &src.module;
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == to.len() {
                continue; // the same module, or a parent and its descendant
            }
            graphs
                .entry(from[..common].to_vec())
                .or_default()
                .entry(from[common].clone())
                .or_default()
                .insert(to[common].clone());
        }
    }
    graphs
}

fn src_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_two_modules_import_each_other() {
    let graphs = sibling_graphs(&sources(&src_root()));
    let mut found = Vec::new();
    for (parent, edges) in &graphs {
        for cycle in cycles(edges) {
            found.push(format!(
                "in crate::{}: {}",
                parent.join("::"),
                cycle.join(" -> ")
            ));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle() {
    let src = |module: &[&str], code: &str| Source {
        module: module.iter().map(|s| s.to_string()).collect(),
        path: PathBuf::new(),
        code: code.to_string(),
    };
    let srcs = [
        src(&[], "pub mod a; pub mod b;"),
        src(
            &["a"],
            "pub mod x;\npub use x::Thing;\nuse crate::b::Other;",
        ),
        src(&["a", "x"], "pub struct Thing;"),
        src(&["b"], "use crate::a::Thing; pub struct Other;"),
    ];
    let graphs = sibling_graphs(&srcs);
    let root = &graphs[&Vec::new()];
    assert_eq!(cycles(root).len(), 1, "{root:?}");
}

#[test]
fn files_and_functions_stay_small() {
    let mut found = Vec::new();
    for src in sources(&src_root()) {
        let lines = src.code.lines().count();
        if lines > MAX_FILE_LINES {
            found.push(format!("{}: {lines} lines", src.path.display()));
        }
        for (name, len) in functions(&src.code) {
            if len > MAX_FN_LINES {
                found.push(format!("{}: fn {name} is {len} lines", src.path.display()));
            }
        }
    }
    assert!(found.is_empty(), "too large:\n{}", found.join("\n"));
}

/// `(name, lines)` of every function body, found by brace matching from each `fn name`.
fn functions(code: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let Some(at) = t.find("fn ") else { continue };
        if t.starts_with("//") || !(at == 0 || t[..at].ends_with(' ')) {
            continue;
        }
        let name: String = t[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let mut depth = 0i32;
        let mut opened = false;
        for (j, l) in lines.iter().enumerate().skip(i) {
            for c in l.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    ';' if !opened && depth == 0 => break,
                    _ => {}
                }
            }
            if !opened && l.trim_end().ends_with(';') {
                break;
            }
            if opened && depth <= 0 {
                out.push((name.clone(), j - i + 1));
                break;
            }
        }
    }
    out
}
