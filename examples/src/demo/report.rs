//! The demo's picture: one panel per scenario, every call a dot placed by when it started and
//! how long it took, coloured by what answered it (or red for the status it failed with).
//!
//! One kind of chart shows every behaviour the demo plays, which is the point of drawing it:
//! the canary's colours shift from 90/10 to 50/50 to 0/100; the fault delay lifts every dot
//! above 300 ms; the breaker's nine rejections sit at the bottom in red beside three slow
//! successes; outlier detection shows a few red dots, then only the healthy replica's colour,
//! then both again after the ejection time. The SVG is written by hand (a few dozen elements per
//! panel), so the demo needs no plotting dependency.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use super::{traffic::Call, view::Row};

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 150.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 26.0;

/// Colours for successful outcomes, in order of first appearance; failures are red.
const PALETTE: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf",
];
const FAILED: &str = "#d62728";

/// The report of a run, as a standalone SVG document.
pub fn svg(rows: &[Row]) -> String {
    let height = TOP + PANEL_HEIGHT * rows.len().max(1) as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"20\" font-size=\"15\" font-weight=\"bold\">proxyless mesh demo: \
         every call, by start time (x) and latency (y)</text>\n"
    );
    let mut colours = Colours::default();
    for (i, row) in rows.iter().enumerate() {
        panel(&mut out, row, TOP + PANEL_HEIGHT * i as f64, &mut colours);
    }
    out.push_str("</svg>\n");
    out
}

/// Assigns each successful outcome (v1, v2, an instance address) one colour for the whole
/// report, so v1 is the same blue in every panel.
#[derive(Default)]
struct Colours {
    assigned: BTreeMap<String, &'static str>,
}

impl Colours {
    fn of(&mut self, call: &Call) -> &'static str {
        if call.failed {
            return FAILED;
        }
        let next = PALETTE[self.assigned.len() % PALETTE.len()];
        self.assigned.entry(call.outcome.clone()).or_insert(next)
    }
}

fn panel(out: &mut String, row: &Row, top: f64, colours: &mut Colours) {
    let plot_top = top + 18.0;
    let plot_height = PANEL_HEIGHT - BOTTOM - 18.0;
    let plot_width = WIDTH - LEFT - RIGHT;
    let mark = if row.verdict.passed { "ok" } else { "FAIL" };
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"{:.1}\" font-weight=\"bold\">{mark} · {}</text>",
        top + 12.0,
        escape(row.name)
    );
    let _ = writeln!(
        out,
        "<rect x=\"{LEFT}\" y=\"{plot_top:.1}\" width=\"{plot_width:.1}\" \
         height=\"{plot_height:.1}\" fill=\"#f7f7f7\" stroke=\"#ccc\"/>"
    );
    let Some(first_start) = row.calls.iter().map(|c| c.ended - c.latency).min() else {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#666\">no calls to draw: {}</text>",
            LEFT + 10.0,
            plot_top + plot_height / 2.0,
            escape(&row.verdict.observed)
        );
        return;
    };
    let span = row
        .calls
        .iter()
        .map(|c| c.ended - first_start)
        .max()
        .unwrap_or_default()
        .max(Duration::from_millis(1));
    let slowest = row
        .calls
        .iter()
        .map(|c| c.latency)
        .max()
        .unwrap_or_default()
        .max(Duration::from_millis(1));
    // Axis labels: the time span below, the latency scale at the left.
    let bottom = plot_top + plot_height;
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"{:.1}\" fill=\"#666\">0</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#666\" text-anchor=\"end\">{} ms</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#666\" text-anchor=\"end\">{} ms</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#666\" text-anchor=\"end\">0 ms</text>",
        bottom + 13.0,
        LEFT + plot_width,
        bottom + 13.0,
        span.as_millis(),
        LEFT - 6.0,
        plot_top + 9.0,
        ceil_ms(slowest),
        LEFT - 6.0,
        bottom,
    );
    let mut counts: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for call in &row.calls {
        let started = (call.ended - call.latency) - first_start;
        let x = LEFT + plot_width * started.as_secs_f64() / span.as_secs_f64();
        let y = bottom - plot_height * call.latency.as_secs_f64() / slowest.as_secs_f64();
        let colour = colours.of(call);
        *counts.entry((colour, call.outcome.as_str())).or_default() += 1;
        let _ = writeln!(
            out,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{colour}\" fill-opacity=\"0.75\">\
             <title>{} · {} ms</title></circle>",
            escape(&call.outcome),
            call.latency.as_millis()
        );
    }
    // The legend: each outcome with its count.
    for (i, ((colour, outcome), n)) in counts.iter().enumerate() {
        let y = plot_top + 10.0 + 14.0 * i as f64;
        let _ = writeln!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{} × {n}</text>",
            WIDTH - RIGHT + 14.0,
            y - 4.0,
            WIDTH - RIGHT + 24.0,
            y,
            escape(outcome)
        );
    }
}

/// The latency scale's top, in whole milliseconds (at least 1).
fn ceil_ms(d: Duration) -> u128 {
    d.as_micros().div_ceil(1000).max(1)
}

/// Text made safe for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::demo::view::Verdict;

    fn call(ended: Instant, latency_ms: u64, outcome: &str, failed: bool) -> Call {
        Call {
            ended,
            latency: Duration::from_millis(latency_ms),
            outcome: outcome.to_owned(),
            failed,
        }
    }

    #[test]
    fn every_call_is_a_dot_and_every_outcome_is_in_the_legend() {
        let now = Instant::now();
        let later = now + Duration::from_millis(50);
        let row = Row {
            name: "canary <90/10>",
            expected: String::new(),
            verdict: Verdict {
                observed: String::new(),
                passed: true,
            },
            applied: Vec::new(),
            calls: vec![
                call(later, 3, "v1", false),
                call(later, 4, "v1", false),
                call(later, 5, "v2", false),
                call(later, 9, "UNAVAILABLE", true),
            ],
        };
        let empty = Row {
            name: "trace",
            calls: Vec::new(),
            ..row.clone()
        };
        let svg = svg(&[row, empty]);
        assert_eq!(
            svg.matches("<circle cx=").count(),
            4 + 3,
            "4 dots, 3 legend entries"
        );
        assert!(svg.contains("v1 × 2") && svg.contains("v2 × 1"));
        assert!(svg.contains(&format!("fill=\"{FAILED}\"")));
        assert!(svg.contains("UNAVAILABLE × 1"));
        assert!(svg.contains("canary &lt;90/10&gt;"), "names are escaped");
        assert!(svg.contains("no calls to draw"));
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    }
}
