//! The source tree keeps its shape (docs/ARCHITECTURE.md, "Invariants"): no file under `src/`
//! over 600 lines, no import cycle between modules, `sync::diff` pure, SQL only in `ledger`.
//!
//! Modules are files (`src/a.rs` and `src/a/mod.rs` are `a`, `src/a/b.rs` is `a::b`); an edge
//! `a::b → c::d` is a `crate::c::d` or `super::…` path in code (comments are skipped). A module
//! using its own parent or child is not a cycle (that is how Rust modules nest); any other
//! circle is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` → `a::b`; `src/a/mod.rs` and `src/a.rs` → `a`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments (line comments and doc comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The longest known module that `path` (e.g. `sandbox::state::SandboxLink`) starts with.
fn resolve(path: &[&str], modules: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// Every `crate::…` and `super::…` path in `code`, as module names, seen from module `me`.
fn references(me: &str, code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    for start in ["crate::", "super::"] {
        for (i, _) in code.match_indices(start) {
            if i > 0 && (ident(bytes[i - 1]) || bytes[i - 1] == b':') {
                continue;
            }
            let mut base: Vec<&str> = if start == "crate::" {
                Vec::new()
            } else {
                me.split("::").collect()
            };
            if start == "super::" {
                base.pop();
            }
            // Further `super::` segments, then the path, then a `{…}` group if any.
            let mut rest = &code[i + start.len()..];
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            let path_len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let path: Vec<&str> = rest[..path_len]
                .split("::")
                .filter(|s| !s.is_empty())
                .collect();
            let mut heads = vec![path.clone()];
            if rest[path_len..].starts_with('{')
                && let Some(end) = rest[path_len..].find('}')
            {
                for item in rest[path_len + 1..path_len + end].split(',') {
                    let mut p = path.clone();
                    p.extend(item.trim().split("::").filter(|s| !s.is_empty()));
                    heads.push(p);
                }
            }
            for h in heads {
                let full: Vec<&str> = base.iter().copied().chain(h).collect();
                if let Some(m) = resolve(&full, modules) {
                    out.insert(m);
                }
            }
        }
    }
    out
}

fn related(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

fn src_files() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    (src, files)
}

#[test]
fn no_source_file_is_over_600_lines() {
    let (_, files) = src_files();
    let big: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 600).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(big.is_empty(), "split these by responsibility: {big:?}");
}

#[test]
fn modules_import_each_other_without_a_cycle() {
    let (src, files) = src_files();
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(&src, f))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let me = module_of(&src, f);
        if me == "lib" || me == "main" {
            continue;
        }
        let text = code(&std::fs::read_to_string(f).unwrap());
        let deps = references(&me, &text, &modules)
            .into_iter()
            .filter(|d| !related(&me, d))
            .collect();
        graph.insert(me, deps);
    }
    assert!(
        graph["config"]
            .iter()
            .all(|d| !d.starts_with("sync") && !d.starts_with("notify")),
        "config imports {:?}",
        graph["config"]
    );
    // Depth-first search for a back edge; report the circle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            match state.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = path.iter().position(|p| p == d).unwrap_or(0);
                    let mut circle = path[from..].to_vec();
                    circle.push(d.clone());
                    return Some(circle);
                }
                0 => {
                    if let Some(c) = visit(d, graph, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0
            && let Some(circle) = visit(m, &graph, &mut state, &mut Vec::new())
        {
            panic!("import cycle: {}", circle.join(" → "));
        }
    }
}

#[test]
fn the_diff_is_pure_and_only_the_ledger_speaks_sql() {
    let (src, files) = src_files();
    let diff: String = ["sync/diff/mod.rs", "sync/diff/payment.rs"]
        .iter()
        .map(|f| code(&std::fs::read_to_string(src.join(f)).unwrap()))
        .collect();
    for io in [
        "sqlx",
        "reqwest",
        "tokio",
        ".await",
        "crate::ledger",
        "Clock",
        "std::fs",
    ] {
        assert!(!diff.contains(io), "sync::diff uses {io}");
    }
    for f in &files {
        let m = module_of(&src, f);
        if m.starts_with("ledger") {
            continue;
        }
        let text = code(&std::fs::read_to_string(f).unwrap());
        assert!(
            !text.contains("sqlx"),
            "{m} uses sqlx: only the ledger writes SQL"
        );
    }
}

#[test]
fn the_checker_sees_a_circle() {
    let modules: BTreeSet<String> = ["a", "a::x", "b"].into_iter().map(String::from).collect();
    assert_eq!(
        references(
            "a::x",
            "use crate::b::Thing; use super::super::b;",
            &modules
        ),
        BTreeSet::from(["b".to_string()])
    );
    assert_eq!(
        references("b", "use crate::{a::x::Y, b};\n", &modules),
        BTreeSet::from(["a::x".to_string(), "b".to_string()])
    );
    assert!(
        references("b", "// crate::a::x", &modules).len() == 1,
        "comments are code here"
    );
    assert!(references("b", &code("// crate::a::x"), &modules).is_empty());
}
