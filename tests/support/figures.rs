//! Where runs put their figures: `target/reliability/` always, and RELIABILITY.md only when
//! `RELIABILITY_RECORD` is set (by `./scripts/reliability`), so an ordinary test run leaves
//! the tree clean.

use crate::repo_root;
use std::sync::Mutex;

/// Written by the runs; the text above it is the document's own.
const FIGURES: &str =
    "<!-- Figures: written by tests/reliability.rs, one section per run size and destination. -->";

/// Writes `section` (a `### title` line, then its text) to `target/reliability/<file>.md`, and
/// with `RELIABILITY_RECORD` set puts it into RELIABILITY.md in place of the section of the
/// same title.
pub fn record(section: &str, file: &str) {
    static FILE: Mutex<()> = Mutex::new(());
    let dir = repo_root().join("target").join("reliability");
    std::fs::create_dir_all(&dir).expect("target/reliability is writable");
    let figures_file = dir.join(format!("{file}.md"));
    std::fs::write(&figures_file, section).expect("target/reliability is writable");
    eprintln!("figures written to {}", figures_file.display());
    if std::env::var_os("RELIABILITY_RECORD").is_none() {
        return;
    }
    let _one_at_a_time = FILE.lock().unwrap_or_else(|e| e.into_inner());
    let path = repo_root().join("RELIABILITY.md");
    let text = std::fs::read_to_string(&path).expect("RELIABILITY.md is readable");
    let (head, figures) = text
        .split_once(FIGURES)
        .expect("RELIABILITY.md has the figures marker");
    let title = section.lines().next().expect("a title").to_owned();
    let mut sections: Vec<String> = figures
        .split("\n### ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| format!("### {}\n", s.trim_start_matches("### ")))
        .filter(|s| s.lines().next() != Some(title.as_str()))
        .collect();
    sections.push(section.to_owned());
    sections.sort();
    std::fs::write(&path, format!("{head}{FIGURES}\n\n{}", sections.join("\n")))
        .expect("RELIABILITY.md is writable");
}

/// `12345` as `12,345`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
