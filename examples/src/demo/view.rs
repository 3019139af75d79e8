//! The live terminal view: a line per scenario that updates while it runs, and the final
//! table of expected against observed outcomes.
//!
//! On a terminal the lines are indicatif spinners rewritten in place; elsewhere (CI, a pipe)
//! each scenario prints one plain line when it ends, so logs stay readable.

use std::{io::IsTerminal, time::Duration};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::traffic::Call;

/// One scenario's result.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// What was observed, in a few words with numbers.
    pub observed: String,
    /// Whether that is what was expected.
    pub passed: bool,
}

/// A finished scenario, for the summary.
#[derive(Clone, Debug)]
pub struct Row {
    /// The scenario.
    pub name: &'static str,
    /// What should happen.
    pub expected: String,
    /// What happened.
    pub verdict: Verdict,
    /// The Istio YAML the scenario applied, in order.
    pub applied: Vec<String>,
    /// Every call the scenario made, in the order they ended.
    pub calls: Vec<Call>,
}

/// The view of a demo run.
#[derive(Debug)]
pub struct View {
    progress: MultiProgress,
    live: bool,
    rows: Vec<Row>,
}

/// The live line of the running scenario.
#[derive(Clone, Debug)]
pub struct Line {
    bar: ProgressBar,
}

// === impl View ===

impl View {
    /// A view drawing live lines when stderr is a terminal.
    pub fn new() -> Self {
        let live = std::io::stderr().is_terminal();
        let target = if live {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            progress: MultiProgress::with_draw_target(target),
            live,
            rows: Vec::new(),
        }
    }

    /// Starts the line of a scenario.
    pub fn start(&self, name: &'static str) -> Line {
        let bar = self.progress.add(ProgressBar::new_spinner());
        let style = ProgressStyle::with_template("{spinner} {prefix:<34} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_prefix(name);
        bar.enable_steady_tick(Duration::from_millis(120));
        Line { bar }
    }

    /// Ends a scenario's line with its verdict.
    pub fn finish(
        &mut self,
        line: Line,
        name: &'static str,
        expected: String,
        verdict: Verdict,
        applied: Vec<String>,
        calls: Vec<Call>,
    ) {
        let mark = if verdict.passed { "ok  " } else { "FAIL" };
        line.bar.set_style(
            ProgressStyle::with_template("{prefix:<36} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        line.bar.set_prefix(format!("{mark} {name}"));
        line.bar.finish_with_message(verdict.observed.clone());
        if !self.live {
            println!("{mark} {name:<34} {}", verdict.observed);
        }
        self.rows.push(Row {
            name,
            expected,
            verdict,
            applied,
            calls,
        });
    }

    /// Prints a note above the live lines.
    pub fn note(&self, text: &str) {
        if self.live {
            // `suspend` clears the live lines, prints, and draws them again below the text, so a
            // spinner never overwrites a note (MultiProgress::println could, before any line).
            self.progress.suspend(|| eprintln!("{text}"));
        } else {
            println!("{text}");
        }
    }

    /// The finished scenarios.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The Istio YAML each scenario applied, under its name: what a user writes to get the
    /// same behaviour.
    pub fn applied_yaml(&self) -> String {
        let mut out = String::new();
        for row in &self.rows {
            for (n, yaml) in row.applied.iter().enumerate() {
                let step = if row.applied.len() > 1 {
                    format!(" (step {} of {})", n + 1, row.applied.len())
                } else {
                    String::new()
                };
                out.push_str(&format!("# {}{step}\n", row.name));
                out.push_str(yaml);
                if !yaml.ends_with('\n') {
                    out.push('\n');
                }
                out.push('\n');
            }
        }
        out
    }

    /// The summary table, as text.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for row in &self.rows {
            let result = if row.verdict.passed { "ok" } else { "FAIL" };
            out.push_str(&format!("{result:<6}{}\n", row.name));
            wrap_into(&mut out, "expected  ", &row.expected);
            wrap_into(&mut out, "observed  ", &row.verdict.observed);
        }
        let passed = self.rows.iter().filter(|r| r.verdict.passed).count();
        out.push_str(&format!(
            "\n{passed} of {} scenarios as expected\n",
            self.rows.len()
        ));
        out
    }
}

/// The summary's width: it must read in a 100-column terminal.
const SUMMARY_WIDTH: usize = 100;

/// Appends `text` after `label`, indented under the scenario's name and wrapped at word
/// boundaries to [`SUMMARY_WIDTH`] columns (a word longer than a line gets a line of its own).
fn wrap_into(out: &mut String, label: &str, text: &str) {
    const INDENT: usize = 6;
    let hanging = INDENT + label.chars().count();
    let mut column = hanging;
    out.push_str(&" ".repeat(INDENT));
    out.push_str(label);
    let mut first = true;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if !first && column + 1 + len > SUMMARY_WIDTH {
            out.push('\n');
            out.push_str(&" ".repeat(hanging));
            column = hanging;
        } else if !first {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += len;
        first = false;
    }
    out.push('\n');
}

impl Default for View {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Line ===

impl Line {
    /// Updates the live message.
    pub fn update(&self, message: String) {
        self.bar.set_message(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_fits_a_100_column_terminal_and_keeps_every_word() {
        let mut view = View::new();
        let observed = "seen as cluster.local/ns/default/sa/demo-client; plaintext caller refused \
            (UNAVAILABLE: connection closed without an answer); after ALLOW reviews-only: client \
            5/5 PERMISSION_DENIED, productpage→reviews→ratings shows stars and a-very-long-word-"
            .to_owned()
            + &"x".repeat(120);
        let line = view.start("mTLS identities, authorization deny");
        view.finish(
            line,
            "mTLS identities, authorization deny",
            "ratings sees the caller's SPIFFE id; ALLOW reviews-only denies the client".to_owned(),
            Verdict {
                observed: observed.clone(),
                passed: true,
            },
            Vec::new(),
            Vec::new(),
        );
        let summary = view.summary();
        for line in summary.lines() {
            let width = line.chars().count();
            // Only a single word longer than a line may exceed it, alone on its line.
            assert!(
                width <= SUMMARY_WIDTH || line.split_whitespace().count() == 1,
                "{width} columns: {line}"
            );
        }
        let words: Vec<&str> = summary.split_whitespace().collect();
        for word in observed.split_whitespace() {
            assert!(words.contains(&word), "{word} is missing from\n{summary}");
        }
        assert!(summary.starts_with("ok    mTLS identities, authorization deny\n"));
    }
}
