//! The crate's module graph, read from `src/`: which module's code names which other module
//! (`crate::x`, `super::x`, grouped `use crate::{..}`), between top-level modules and between
//! sibling files of one directory. A cycle makes the two modules one unit to learn, test and
//! change; this test fails on any cycle that is not on the known list below, which the
//! structure work shrinks to nothing. Print the graph with
//! `cargo test --test module_graph -- --nocapture`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Cycles that were there when this test was written (issue: structure), each as the sorted
/// members of one strongly connected component. A component must be one of these or inside
/// one: new cycles fail, and removing one from here is how its fix is locked in.
const KNOWN: &[&[&str]] = &[];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The module path of a source file: `src/a.rs` is `a`, `src/a/mod.rs` is `a`, `src/a/b.rs` is
/// `a::b`; the crate roots are skipped.
fn module_of(rel: &Path) -> Option<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return None;
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    Some(parts.join("::"))
}

/// The code of a file without comments and without its unit tests.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        if t == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The paths named after `prefix` (`crate::`, `super::`), each as its segments; grouped imports
/// are expanded (`crate::{a::{b, c}, d}` gives `a::b`, `a::c` and `d`).
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        // Not the tail of a longer name (`mycrate::`).
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut chars: Vec<char> = rest.chars().take(4000).collect();
        chars.retain(|c| !c.is_whitespace());
        let mut pos = 0;
        use_tree(&chars, &mut pos, &mut Vec::new(), &mut out);
    }
    out
}

/// Reads one use tree at `pos` (`a::b`, `a::{..}`, `a::*`), pushing each full path.
fn use_tree(s: &[char], pos: &mut usize, base: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let depth = base.len();
    loop {
        if s.get(*pos) == Some(&'{') {
            *pos += 1;
            loop {
                // `}` right away: an empty group or a trailing comma.
                if s.get(*pos) == Some(&'}') {
                    *pos += 1;
                    break;
                }
                use_tree(s, pos, base, out);
                match s.get(*pos) {
                    Some(',') => *pos += 1,
                    Some('}') => {
                        *pos += 1;
                        break;
                    }
                    _ => break,
                }
            }
            base.truncate(depth);
            return;
        }
        let start = *pos;
        while s
            .get(*pos)
            .is_some_and(|c| c.is_alphanumeric() || *c == '_')
        {
            *pos += 1;
        }
        if *pos == start {
            break;
        }
        base.push(s[start..*pos].iter().collect());
        if s.get(*pos) == Some(&':') && s.get(*pos + 1) == Some(&':') {
            *pos += 2;
        } else {
            break;
        }
    }
    if base.len() > depth {
        out.push(base.clone());
    }
    base.truncate(depth);
}

/// The deepest module among `modules` that `path` starts with.
fn resolve(modules: &BTreeSet<String>, path: &[String]) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// File-level graph: module → the modules its code names.
fn file_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let named: Vec<(String, String)> = files
        .iter()
        .filter_map(|f| {
            let m = module_of(f.strip_prefix(src).unwrap())?;
            Some((m, code_of(&std::fs::read_to_string(f).unwrap())))
        })
        .collect();
    let modules: BTreeSet<String> = named.iter().map(|(m, _)| m.clone()).collect();
    let mut g = Graph::new();
    for (m, code) in &named {
        let segs: Vec<String> = m.split("::").map(String::from).collect();
        let is_dir_mod = src.join(segs.join("/")).is_dir();
        // `super::` in `a/b.rs` is `a`; in `a/mod.rs` it is the crate root.
        let parent: Vec<String> = if is_dir_mod {
            segs[..segs.len() - 1].to_vec()
        } else {
            segs[..segs.len().saturating_sub(1)].to_vec()
        };
        let mut targets = BTreeSet::new();
        for p in paths_after(code, "crate::") {
            targets.extend(resolve(&modules, &p));
        }
        for p in paths_after(code, "super::") {
            let full: Vec<String> = parent.iter().cloned().chain(p).collect();
            targets.extend(resolve(&modules, &full));
        }
        targets.remove(m);
        g.entry(m.clone()).or_default().extend(targets);
    }
    g
}

/// Edges between top-level modules (`a::b` → `c::d` is `a` → `c`).
fn top_graph(files: &Graph) -> Graph {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    let mut g = Graph::new();
    for (from, tos) in files {
        let f = top(from);
        let entry = g.entry(f.clone()).or_default();
        entry.extend(tos.iter().map(|t| top(t)).filter(|t| *t != f));
    }
    g
}

/// Edges between sibling files of one directory (`a::b` → `a::c`), the directory's `mod.rs`
/// left out: a parent naming its children, and children the parent's items, is one module.
fn sibling_graph(files: &Graph) -> Graph {
    let parent = |m: &str| m.rsplit_once("::").map(|(p, _)| p.to_string());
    let mut g = Graph::new();
    for (from, tos) in files {
        let Some(pf) = parent(from) else { continue };
        let entry = g.entry(from.clone()).or_default();
        entry.extend(
            tos.iter()
                .filter(|t| parent(t).as_deref() == Some(pf.as_str()))
                .cloned(),
        );
    }
    g
}

/// Strongly connected components with more than one member (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out.sort();
    t.out
}

#[test]
fn the_module_graph_has_no_new_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = file_graph(&src);
    let top = top_graph(&files);
    let siblings = sibling_graph(&files);
    println!("top-level modules (module -> what it names):");
    for (m, tos) in &top {
        println!(
            "  {m} -> {}",
            tos.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    println!("sibling files:");
    for (m, tos) in siblings.iter().filter(|(_, t)| !t.is_empty()) {
        println!(
            "  {m} -> {}",
            tos.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let mut found = cycles(&top);
    found.extend(cycles(&siblings));
    println!("cycles: {found:?}");
    let new: Vec<&Vec<String>> = found
        .iter()
        .filter(|c| {
            !KNOWN
                .iter()
                .any(|k| c.iter().all(|m| k.contains(&m.as_str())))
        })
        .collect();
    assert!(new.is_empty(), "new module cycles: {new:?}");
}

#[test]
fn the_reader_finds_the_edges_it_should() {
    let code = code_of(
        "use crate::{a::B, c::{self, x::{Y, Z}},\n w};\n// crate::commented\nfn f() { crate::d::e(); super::g::h(); mycrate::x(); }\n#[cfg(test)]\nmod tests { use crate::t; }\n",
    );
    let got = paths_after(&code, "crate::");
    let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let want = vec![
        p(&["a", "B"]),
        p(&["c", "self"]),
        p(&["c", "x", "Y"]),
        p(&["c", "x", "Z"]),
        p(&["w"]),
        p(&["d", "e"]),
    ];
    assert_eq!(got, want);
    assert_eq!(
        paths_after(&code, "super::"),
        vec![vec!["g".to_string(), "h".to_string()]]
    );
    let g: Graph = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
        ("d".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
}
