//! The live terminal view: a line per scenario that updates while it runs, and the final
//! table of expected against observed outcomes.
//!
//! On a terminal the lines are indicatif spinners rewritten in place; elsewhere (CI, a pipe)
//! each scenario prints one plain line when it ends, so logs stay readable.

use std::{io::IsTerminal, time::Duration};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

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
    pub fn finish(&mut self, line: Line, name: &'static str, expected: String, verdict: Verdict) {
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
        });
    }

    /// Prints a note above the live lines.
    pub fn note(&self, text: &str) {
        if self.live {
            let _ = self.progress.println(text);
        } else {
            println!("{text}");
        }
    }

    /// The finished scenarios.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The summary table, as text.
    pub fn summary(&self) -> String {
        let name_w = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(8)
            .max(8);
        let exp_w = self
            .rows
            .iter()
            .map(|r| r.expected.chars().count())
            .max()
            .unwrap_or(8)
            .max(8);
        let mut out = format!(
            "{:<name_w$}  {:<exp_w$}  {:<6}  observed\n",
            "scenario", "expected", "result"
        );
        for row in &self.rows {
            let result = if row.verdict.passed { "ok" } else { "FAIL" };
            out.push_str(&format!(
                "{:<name_w$}  {:<exp_w$}  {result:<6}  {}\n",
                row.name, row.expected, row.verdict.observed
            ));
        }
        let passed = self.rows.iter().filter(|r| r.verdict.passed).count();
        out.push_str(&format!(
            "\n{passed} of {} scenarios as expected\n",
            self.rows.len()
        ));
        out
    }
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
