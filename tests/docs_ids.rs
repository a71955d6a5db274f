//! Every rule identifier cited anywhere in the repository (RQ-6, OPT-5,
//! RT-json-3, …) is defined in `docs/semantics.md`, and every
//! "docs/semantics.md §N" citation names a section that exists there.

use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Folders that hold build output, fuzzing state or third-party test data.
const SKIP: &[&str] = &[
    ".git",
    "target",
    "fuzz/target",
    "fuzz/corpus",
    "fuzz/artifacts",
    "fuzz/coverage",
    "codecs/tests/data",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every UTF-8 text file under `dir`, outside `SKIP`.
fn text_files(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).expect("readable folder") {
        let path = entry.expect("entry").path();
        let rel = path.strip_prefix(root()).expect("under the root");
        if SKIP.iter().any(|s| rel == Path::new(s)) {
            continue;
        }
        if path.is_dir() {
            text_files(&path, out);
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            out.push((rel.to_owned(), text));
        }
    }
}

fn semantics() -> String {
    std::fs::read_to_string(root().join("docs/semantics.md")).expect("docs/semantics.md")
}

/// The identifiers `docs/semantics.md` defines (`<a id="RQ-6"></a>`).
fn defined(doc: &str) -> BTreeSet<String> {
    let anchor = Regex::new(r#"<a id="([^"]+)"></a>"#).expect("regex");
    let mut ids = BTreeSet::new();
    for c in anchor.captures_iter(doc) {
        assert!(ids.insert(c[1].to_owned()), "{} is defined twice", &c[1]);
    }
    ids
}

/// Citations of identifiers that `ids` does not define, with where they are.
fn undefined(ids: &BTreeSet<String>, files: &[(PathBuf, String)]) -> BTreeMap<String, Vec<String>> {
    let cited =
        Regex::new(r"\b(?:(?:RQ|OPT|WQ|TLS|LC|TO|ERR)-[0-9]+|(?:RT|WT)-[a-z]+(?:-[0-9]+)?)\b")
            .expect("regex");
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, text) in files {
        for (n, line) in text.lines().enumerate() {
            for m in cited.find_iter(line) {
                if !ids.contains(m.as_str()) {
                    let at = format!("{}:{}", path.display(), n + 1);
                    missing.entry(m.as_str().to_owned()).or_default().push(at);
                }
            }
        }
    }
    missing
}

#[test]
fn every_cited_rule_id_is_defined() {
    let ids = defined(&semantics());
    let mut files = Vec::new();
    text_files(&root(), &mut files);
    assert!(files.len() > 20, "walked the repository");
    let missing = undefined(&ids, &files);
    assert!(
        missing.is_empty(),
        "cited but not defined in docs/semantics.md: {missing:#?}"
    );
}

#[test]
fn every_section_citation_names_a_section() {
    let doc = semantics();
    let heading = Regex::new(r"(?m)^## ([0-9]+[a-z]?)\. ").expect("regex");
    let sections: BTreeSet<String> = heading
        .captures_iter(&doc)
        .map(|c| c[1].to_owned())
        .collect();
    for s in [
        "1", "2", "2a", "3", "4", "5", "6", "7", "8", "9", "10", "11",
    ] {
        assert!(sections.contains(s), "docs/semantics.md has no section {s}");
    }
    let cite =
        Regex::new(r"semantics\.md (§[0-9]+[a-z]?(?:(?:,| and) §[0-9]+[a-z]?)*)").expect("regex");
    let number = Regex::new(r"§([0-9]+[a-z]?)").expect("regex");
    let mut files = Vec::new();
    text_files(&root(), &mut files);
    let mut checked = 0;
    for (path, text) in &files {
        for c in cite.captures_iter(text) {
            for n in number.captures_iter(&c[1]) {
                assert!(
                    sections.contains(&n[1]),
                    "{}: docs/semantics.md has no §{}",
                    path.display(),
                    &n[1]
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10, "found the section citations ({checked})");
}

#[test]
fn the_checker_reports_an_undefined_id_and_only_ids() {
    let ids = defined(r#"<a id="RQ-6"></a> <a id="RT-json-3"></a>"#);
    let files = [(
        PathBuf::from("x.rs"),
        "RQ-6 and RQ-7; a TLS-capable peer; RT-json-3/4; WT-cbor".to_owned(),
    )];
    let missing = undefined(&ids, &files);
    let names: Vec<&str> = missing.keys().map(String::as_str).collect();
    assert_eq!(names, ["RQ-7", "WT-cbor"]);
    assert_eq!(missing["RQ-7"], ["x.rs:1"]);
}
