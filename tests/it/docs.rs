//! Every relative link and anchor in README.md and docs/ leads somewhere:
//! the file exists, and a `#anchor` names a heading of that page (GitHub's
//! rule: lower case, punctuation dropped, spaces as hyphens).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pages checked: README.md, every docs/*.md and benches/README.md.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md"), root().join("benches/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// GitHub's anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings (outside code blocks), with GitHub's
/// `-1`, `-2` for repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let base = slug(line.trim_start_matches('#'));
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// Link targets of a page: `](target)` outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            found.push(target.to_string());
            rest = &after[end..];
        }
    }
    found
}

fn check(page: &Path, target: &str) -> Option<String> {
    if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (file, anchor) = match target.split_once('#') {
        Some((file, anchor)) => (file, Some(anchor)),
        None => (target, None),
    };
    let dest = if file.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().unwrap().join(file)
    };
    if !dest.exists() {
        return Some(format!("{target}: {} does not exist", dest.display()));
    }
    let anchor = anchor?;
    if dest.extension().is_none_or(|e| e != "md") {
        return None;
    }
    let text = std::fs::read_to_string(&dest).unwrap();
    (!anchors(&text).contains(anchor)).then(|| format!("{target}: no heading #{anchor}"))
}

#[test]
fn every_relative_link_and_anchor_leads_somewhere() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for target in links(&text) {
            checked += 1;
            if let Some(why) = check(&page, &target) {
                broken.push(format!("{}: {why}", page.display()));
            }
        }
    }
    assert!(checked > 30, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_follow_githubs_rule() {
    assert_eq!(slug(" Redis's own test suite"), "rediss-own-test-suite");
    assert_eq!(slug(" `[pool]` settings"), "pool-settings");
    let text = "# A\n```\n# not a heading\n```\n## A\n";
    let found: Vec<String> = anchors(text).into_iter().collect();
    assert_eq!(found, ["a", "a-1"]);
    assert_eq!(
        links("see [x](docs/a.md#b) and [y](#c)"),
        ["docs/a.md#b", "#c"]
    );
}

#[test]
fn the_readme_stays_a_map() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 200,
        "README.md has {lines} lines: move detail to docs/"
    );
    for page in pages()
        .iter()
        .filter(|p| p.starts_with(root().join("docs")))
    {
        let name = page.file_name().unwrap().to_str().unwrap();
        assert!(
            readme.contains(&format!("(docs/{name})")),
            "README.md does not link docs/{name}"
        );
    }
}

/// Every recipe in docs/stores.md names its test: the file exists and holds
/// each test function it names.
#[test]
fn every_store_recipe_names_a_test_that_exists() {
    let text = std::fs::read_to_string(root().join("docs/stores.md")).unwrap();
    let mut recipes = 0;
    for section in text.split("\n## ").skip(1) {
        recipes += 1;
        let title = section.lines().next().unwrap_or_default();
        let test = section
            .split("Test: ")
            .nth(1)
            .unwrap_or_else(|| panic!("{title}: no Test: line"));
        let spans: Vec<&str> = test.split('`').skip(1).step_by(2).collect();
        let file = spans
            .iter()
            .find(|s| s.starts_with("tests/it/") && s.ends_with(".rs"))
            .unwrap_or_else(|| panic!("{title}: no test file"));
        let source = std::fs::read_to_string(root().join(file))
            .unwrap_or_else(|e| panic!("{title}: {file}: {e}"));
        let names: Vec<&&str> = spans
            .iter()
            .filter(|s| {
                s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
            .collect();
        assert!(!names.is_empty(), "{title}: no test function named");
        for name in names {
            assert!(
                source.contains(&format!("fn {name}(")),
                "{title}: {file} has no fn {name}"
            );
        }
    }
    assert!(recipes >= 10, "only {recipes} recipes");
}
