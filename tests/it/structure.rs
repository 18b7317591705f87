//! The shape of `src/`, checked: no import circle between modules, no
//! hand-written file over 700 lines of non-test code, no function over 80
//! lines (docs/architecture.md, "Layout"). Generated code is outside the
//! limits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Generated code, outside the limits.
const GENERATED: &[&str] = &["protocol/keyed.rs"];

const MAX_FILE_LINES: usize = 700;
const MAX_FN_LINES: usize = 80;

/// Every `.rs` file under `src/`, by its path relative to `src/`.
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("src/") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).expect("under src/");
                let text = std::fs::read_to_string(&path).expect("readable");
                out.insert(relative.to_string_lossy().replace('\\', "/"), text);
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// The file's lines without its `#[cfg(test)] mod … { … }` blocks.
fn non_test_lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let next_is_mod = lines.get(i + 1).is_some_and(|l| {
            let l = l.trim_start();
            (l.starts_with("mod ") || l.starts_with("pub mod ")) && l.ends_with('{')
        });
        if lines[i].trim() == "#[cfg(test)]" && next_is_mod {
            let mut depth = 0i64;
            let mut j = i + 1;
            loop {
                depth += braces(lines[j]);
                j += 1;
                if depth <= 0 || j >= lines.len() {
                    break;
                }
            }
            i = j;
            continue;
        }
        out.push(lines[i]);
        i += 1;
    }
    out
}

/// `{` minus `}` on a line, outside comments, strings and character
/// literals (enough for this codebase's lines).
fn braces(line: &str) -> i64 {
    let code = line.split("//").next().unwrap_or("");
    let mut depth = 0;
    let mut in_string = false;
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_string => {
                chars.next();
            }
            '"' => in_string = !in_string,
            '\'' if !in_string => {
                // A character literal ('x', '\n', '"'); a lifetime has no
                // closing quote.
                let ahead: Vec<char> = chars.clone().take(3).collect();
                match ahead.as_slice() {
                    ['\\', ..] => {
                        chars.by_ref().take_while(|c| *c != '\'').for_each(drop);
                    }
                    [_, '\'', ..] => {
                        chars.next();
                        chars.next();
                    }
                    _ => {}
                }
            }
            '{' if !in_string => depth += 1,
            '}' if !in_string => depth -= 1,
            _ => {}
        }
    }
    depth
}

/// Each function's name and length in lines, signature to closing brace.
fn functions(lines: &[&str]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        let mut depth = 0;
        let mut opened = false;
        for (j, line) in lines.iter().enumerate().skip(i) {
            if !opened && line.trim_end().ends_with(';') && !line.contains('{') {
                break; // a declaration without a body
            }
            depth += braces(line);
            opened |= line.contains('{');
            if opened && depth <= 0 {
                out.push((name.clone(), j - i + 1));
                break;
            }
        }
    }
    out
}

fn fn_name(line: &str) -> Option<String> {
    let mut rest = line.trim_start();
    if rest.starts_with("pub(") {
        rest = &rest[rest.find(')')? + 1..];
    }
    let mut words = rest.split_whitespace();
    while let Some(word) = words.next() {
        match word {
            "pub" | "async" | "const" | "unsafe" | "extern" => continue,
            "fn" => {
                let name: String = words
                    .next()?
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                return Some(name);
            }
            _ => return None,
        }
    }
    None
}

/// A file's module path (`client/mod.rs` is `client`, `lib.rs` the crate).
fn module_of(file: &str) -> String {
    let path = file.trim_end_matches(".rs");
    let path = path
        .trim_end_matches("/mod")
        .trim_end_matches("lib")
        .trim_end_matches("main");
    path.trim_end_matches('/').replace('/', "::")
}

/// The modules each module uses: `crate::` paths (braced lists too) and
/// `super::` paths, in code outside tests and comments.
fn imports(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files.keys().map(|f| module_of(f)).collect();
    let longest = |segments: &[&str]| -> Option<String> {
        (1..=segments.len())
            .rev()
            .map(|n| segments[..n].join("::"))
            .find(|m| modules.contains(m))
    };
    let mut graph = BTreeMap::new();
    for (file, text) in files {
        let module = module_of(file);
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p).to_string();
        let code: String = non_test_lines(text)
            .into_iter()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut uses = BTreeSet::new();
        for (prefix, base) in [("crate::", String::new()), ("super::", parent.clone())] {
            for (at, _) in code.match_indices(prefix) {
                for path in paths_at(&code[at + prefix.len()..]) {
                    let full = if base.is_empty() {
                        path
                    } else {
                        format!("{base}::{path}")
                    };
                    let segments: Vec<&str> = full.split("::").collect();
                    if let Some(used) = longest(&segments) {
                        if used != module && !module.starts_with(&format!("{used}::")) {
                            uses.insert(used);
                        }
                    }
                }
            }
        }
        graph.insert(module, uses);
    }
    graph
}

/// The paths written at the start of `text`: `a::b` or `a::{b, c::d}`.
fn paths_at(text: &str) -> Vec<String> {
    let head: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let head = head.trim_end_matches(':').to_string();
    let rest = &text[head.len()..];
    if let Some(list) = rest.strip_prefix("::{") {
        let end = list.find('}').unwrap_or(list.len());
        let mut out = vec![head.clone()];
        for item in list[..end].split(',') {
            let item: String = item
                .trim()
                .trim_start_matches('{')
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if !item.is_empty() {
                out.push(format!("{head}::{}", item.trim_end_matches(':')));
            }
        }
        out
    } else {
        vec![head]
    }
}

/// The strongly connected groups of more than one module (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        let graph = w.graph;
        for next in graph.get(v).into_iter().flatten() {
            let next = next.as_str();
            if !w.index.contains_key(next) {
                visit(w, next);
                let low = w.low[v].min(w.low[next]);
                w.low.insert(v, low);
            } else if w.stack.contains(&next) {
                let low = w.low[v].min(w.index[next]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let mut group = Vec::new();
            while let Some(m) = w.stack.pop() {
                group.push(m.to_string());
                if m == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                w.found.push(group);
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            visit(&mut walk, v);
        }
    }
    walk.found
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = imports(&sources());
    assert!(
        graph["client::slot"].contains("client::merge"),
        "the scan sees imports"
    );
    assert!(
        graph["backend::connection"].contains("backend::lanes"),
        "and super:: paths"
    );
    let found = circles(&graph);
    assert!(found.is_empty(), "import circles: {found:?}");
}

#[test]
fn a_circle_is_found_where_there_is_one() {
    let mut graph = BTreeMap::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph
            .entry(from.to_string())
            .or_insert_with(BTreeSet::new)
            .insert(to.to_string());
    }
    assert_eq!(circles(&graph), vec![vec!["a", "b", "c"]]);
}

#[test]
fn no_hand_written_file_over_700_lines_of_code() {
    let mut long = Vec::new();
    for (file, text) in sources() {
        let lines = non_test_lines(&text).len();
        if !GENERATED.contains(&file.as_str()) && lines > MAX_FILE_LINES {
            long.push((file, lines));
        }
    }
    assert!(long.is_empty(), "over {MAX_FILE_LINES} lines: {long:?}");
}

#[test]
fn no_function_over_80_lines() {
    let mut long = BTreeSet::new();
    for (file, text) in sources() {
        if GENERATED.contains(&file.as_str()) {
            continue;
        }
        for (name, lines) in functions(&non_test_lines(&text)) {
            if lines > MAX_FN_LINES {
                long.insert((file.clone(), name));
            }
        }
    }
    assert!(long.is_empty(), "over {MAX_FN_LINES} lines: {long:?}");
}

#[test]
fn function_lengths_are_measured_from_signature_to_closing_brace() {
    let text = "fn a() {\n    let s = \"}\";\n    if x { '{' } else { '}' }\n}\nfn b();\npub(in crate::x) async fn c(\n    x: u8,\n) -> u8 {\n    x\n}\n";
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        functions(&lines),
        vec![("a".to_string(), 4), ("c".to_string(), 5)]
    );
    let with_tests = "fn x() {}\n#[cfg(test)]\nmod tests {\n    fn y() {}\n}\nfn z() {}\n";
    assert_eq!(non_test_lines(with_tests), vec!["fn x() {}", "fn z() {}"]);
}
