//! `benches/RESULTS.md` and its latency chart, from the JSON reports of `compare`, `instr` and
//! `scale`: tables with absolute numbers and ratios to plain tonic, the machine, date and
//! commit, and the targets with an honest verdict each.

use std::{collections::BTreeSet, fmt::Write as _, fs, path::Path, process::Command};

use plotters::prelude::*;

use crate::{
    cell::Shape,
    compare::{Aggregate, LoadReport},
    instr::InstrReport,
    scale::ScaleReport,
    variant::{self, Variant},
};

/// What the report is made of; each part may be missing (not run).
#[derive(Debug, Default)]
pub struct Inputs {
    /// The load comparison.
    pub load: Option<LoadReport>,
    /// Instruction counts.
    pub instr: Option<InstrReport>,
    /// Configuration scale.
    pub scale: Option<ScaleReport>,
    /// Why this is a smoke run, when it is one (printed as a banner).
    pub smoke: Option<String>,
    /// Hand-written notes appended verbatim (the analysis of misses).
    pub notes: Option<String>,
    /// The chart's file name, relative to RESULTS.md.
    pub chart: Option<String>,
}

/// The verdict on one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Measured and met.
    Met,
    /// Measured and missed.
    Missed,
    /// Not measured (a variant unavailable or a part not run).
    NotMeasured,
}

/// The targets, each as (name, measured, target, verdict, note).
pub fn targets(inputs: &Inputs) -> Vec<(String, String, String, Verdict, String)> {
    let mut out = Vec::new();
    let find = |v: Variant, s: Shape| -> Option<&Aggregate> {
        inputs.load.as_ref()?.results.iter().find(|a| {
            a.variant == v.key() && a.shape == s && a.unavailable.is_none() && a.requests > 0
        })
    };
    let client_only = if variant::MESH_SERVER_STACK {
        String::new()
    } else {
        "mesh client stack only: the mesh server stack has not landed".to_owned()
    };
    let ratio_target = |name: &str,
                        value: Option<f64>,
                        bound: f64,
                        at_most: bool,
                        note: &str|
     -> (String, String, String, Verdict, String) {
        let target = format!("{} {bound:.2}×", if at_most { "≤" } else { "≥" });
        match value {
            Some(r) => {
                let met = if at_most { r <= bound } else { r >= bound };
                (
                    name.to_owned(),
                    format!("{r:.2}×"),
                    target,
                    if met { Verdict::Met } else { Verdict::Missed },
                    note.to_owned(),
                )
            }
            None => (
                name.to_owned(),
                "—".into(),
                target,
                Verdict::NotMeasured,
                note.to_owned(),
            ),
        }
    };
    let c1 = Shape::Closed(1);
    let p50 = |v| find(v, c1).map(|a| a.latency_us.p50 as f64);
    out.push(ratio_target(
        "mesh p50 / plain p50, concurrency 1",
        p50(Variant::Mesh)
            .zip(p50(Variant::Plain))
            .map(|(m, p)| m / p),
        1.10,
        true,
        &client_only,
    ));
    let thr = |v| find(v, Shape::Closed(64)).map(|a| a.throughput);
    out.push(ratio_target(
        "mesh throughput / plain throughput, concurrency 64",
        thr(Variant::Mesh)
            .zip(thr(Variant::Plain))
            .map(|(m, p)| m / p),
        0.90,
        false,
        &client_only,
    ));
    out.push(ratio_target(
        "mesh p50 / two-hop sidecar p50, concurrency 1",
        p50(Variant::Mesh)
            .zip(p50(Variant::NginxTwoHop))
            .map(|(m, s)| m / s),
        0.60,
        true,
        &client_only,
    ));
    out.push(ratio_target(
        "mesh throughput / a-hdr throughput, concurrency 64",
        thr(Variant::Mesh)
            .zip(thr(Variant::PlainHeaders))
            .map(|(m, p)| m / p),
        0.92,
        false,
        "",
    ));
    let cpu = |v| find(v, Shape::Closed(64)).map(|a| a.cpu_us_per_request.values().sum::<f64>());
    out.push(ratio_target(
        "mesh CPU per call / e CPU per call, concurrency 64",
        cpu(Variant::Mesh)
            .zip(cpu(Variant::HandMade))
            .map(|(m, e)| m / e),
        1.0,
        true,
        "",
    ));
    let instr = inputs.instr.as_ref();
    let absolute = |name: &str, value: Option<f64>, bound: f64| {
        let target = format!("≤ {}", thousands(bound));
        match value {
            Some(v) => (
                name.to_owned(),
                thousands(v),
                target,
                if v <= bound {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
                String::new(),
            ),
            None => (
                name.to_owned(),
                "—".into(),
                target,
                Verdict::NotMeasured,
                "callgrind part not run (or without a-hdr and b)".into(),
            ),
        }
    };
    out.push(absolute(
        "instructions the mesh adds over a-hdr per call (b − a-hdr)",
        instr.and_then(InstrReport::added_over_headers),
        10_000.0,
    ));
    out.push(absolute(
        "allocations the mesh adds over a-hdr per call (b − a-hdr)",
        instr.and_then(InstrReport::allocations_added_over_headers),
        8.0,
    ));
    out.push(ratio_target(
        "mesh instructions / e instructions per call",
        instr.and_then(|i| {
            Some(i.instructions(Variant::Mesh)? / i.instructions(Variant::HandMade)?)
        }),
        1.0,
        true,
        "",
    ));
    let name = "instructions the mesh adds per call (b − a)".to_owned();
    let target = "≤ 10,000".to_owned();
    out.push(match &inputs.instr {
        Some(i) => (
            name,
            thousands(i.added_per_request),
            target,
            if i.added_per_request <= 10_000.0 {
                Verdict::Met
            } else {
                Verdict::Missed
            },
            if i.includes_server_stack {
                String::new()
            } else {
                client_only.clone()
            },
        ),
        None => (
            name,
            "—".into(),
            target,
            Verdict::NotMeasured,
            "callgrind part not run".into(),
        ),
    });
    out.extend(scale_targets(inputs.scale.as_ref()));
    out
}

/// The configuration-scale targets (issue 17): route lookup, a large EDS update, memory.
fn scale_targets(scale: Option<&ScaleReport>) -> Vec<(String, String, String, Verdict, String)> {
    let verdict = |met: bool| if met { Verdict::Met } else { Verdict::Missed };
    let Some(s) = scale else {
        return [
            "route lookup, 1,000 routes",
            "a 10,000-endpoint EDS update applied",
        ]
        .into_iter()
        .map(|name| {
            let note = "scale part not run".to_owned();
            (
                name.to_owned(),
                "—".into(),
                String::new(),
                Verdict::NotMeasured,
                note,
            )
        })
        .collect();
    };
    let lookup = s
        .route_lookup_ns
        .iter()
        .find(|(n, _)| *n == 1_000)
        .map(|(_, ns)| *ns);
    let runtime_mib = s.publish_heap_kib as f64 / 1024.0;
    vec![
        (
            "route lookup, 1,000 routes (last route matches)".to_owned(),
            lookup.map_or("—".into(), |ns| format!("{} ns", thousands(ns))),
            "≤ 200 ns".to_owned(),
            lookup.map_or(Verdict::NotMeasured, |ns| verdict(ns <= 200.0)),
            String::new(),
        ),
        (
            "a 10,000-endpoint EDS update applied (one cluster of 10,000 endpoints)".to_owned(),
            format!("{:.1} ms", s.eds_10k_publish_ms),
            "≤ 50 ms".to_owned(),
            verdict(s.eds_10k_publish_ms > 0.0 && s.eds_10k_publish_ms <= 50.0),
            "unchanged clusters keep their entries (tests in mesh-tower `mesh::tests`)".to_owned(),
        ),
        (
            "memory of 1,000 clusters / 10,000 endpoints over an empty mesh (runtime state, heap)"
                .to_owned(),
            format!("{runtime_mib:.1} MiB"),
            "≤ 2 MiB".to_owned(),
            verdict(runtime_mib <= 2.0),
            format!(
                "the parsed config holds {:.1} MiB more; see notes",
                s.config_heap_kib as f64 / 1024.0
            ),
        ),
    ]
}

/// Renders RESULTS.md.
pub fn markdown(inputs: &Inputs) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmark results\n");
    let _ = writeln!(
        md,
        "Generated by `benches/run` (the `mesh-bench` tool in `benches/src`). Do not edit by hand: \
         put analysis in `benches/notes.md`, which is appended below.\n"
    );
    if let Some(why) = &inputs.smoke {
        let _ = writeln!(
            md,
            "> **SMOKE RUN — not results.** {why}. These numbers only show that the tool works; \
             they say nothing reliable about the mesh. The full benchmark (`benches/run`) on a \
             quiet machine replaces this file.\n"
        );
    }
    machine(&mut md);
    targets_section(&mut md, inputs);
    if let Some(load) = &inputs.load {
        load_section(&mut md, load, inputs.chart.as_deref());
    } else {
        let _ = writeln!(md, "## Load comparison\n\nNot run.\n");
    }
    instr_section(&mut md, inputs.instr.as_ref());
    scale_section(&mut md, inputs.scale.as_ref());
    method(&mut md, inputs.load.as_ref());
    if let Some(notes) = &inputs.notes {
        let _ = writeln!(md, "## Notes\n\n{}", notes.trim());
    }
    md
}

fn machine(md: &mut String) {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or("unknown".to_owned(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1_048_576.0)
        });
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cmd = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into())
    };
    let commit = cmd("git", &["rev-parse", "--short=12", "HEAD"]);
    let dirty = if cmd("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (with uncommitted changes)"
    };
    let _ = writeln!(md, "## Machine and run\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(
        md,
        "| date (UTC) | {} |",
        cmd("date", &["-u", "+%Y-%m-%d %H:%M"])
    );
    let _ = writeln!(md, "| commit | `{commit}`{dirty} |");
    let _ = writeln!(
        md,
        "| CPU | {model} ({cpus} logical CPUs in /proc/cpuinfo) |"
    );
    let _ = writeln!(md, "| nproc | {nproc} |");
    let _ = writeln!(md, "| memory | {mem} |");
    let _ = writeln!(md, "| kernel | {} |", kernel.trim());
    let _ = writeln!(md, "| rustc | {} |", cmd("rustc", &["--version"]));
    let _ = writeln!(
        md,
        "| build | {} |\n",
        if cfg!(debug_assertions) {
            "debug (unoptimized: numbers are not representative)"
        } else {
            "release"
        }
    );
}

fn targets_section(md: &mut String, inputs: &Inputs) {
    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(md, "| target | measured | goal | verdict | note |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for (name, measured, goal, verdict, note) in targets(inputs) {
        let verdict = match verdict {
            Verdict::Met => "met",
            Verdict::Missed => "**MISSED**",
            Verdict::NotMeasured => "not measured",
        };
        let _ = writeln!(md, "| {name} | {measured} | {goal} | {verdict} | {note} |");
    }
    if inputs.smoke.is_some() {
        let _ = writeln!(
            md,
            "\nA smoke run's verdicts are not verdicts: the cells were too short and the machine \
             too busy."
        );
    }
    md.push('\n');
}

fn shape_title(shape: Shape) -> String {
    match shape {
        Shape::Closed(c) => format!("closed loop, concurrency {c}"),
        Shape::Open(r) => format!("open loop, {r} calls/s"),
    }
}

fn shape_short(shape: Shape) -> String {
    match shape {
        Shape::Closed(c) => format!("closed, {c} in flight"),
        Shape::Open(r) => format!("open, {r}/s"),
    }
}

fn load_section(md: &mut String, load: &LoadReport, chart: Option<&str>) {
    let _ = writeln!(md, "## Load comparison\n");
    let _ = writeln!(
        md,
        "{} round(s), {} s per cell, variants interleaved within each round. Latency in ms; \
         ratios are to (a) plain tonic under the same load.\n",
        load.rounds, load.secs_per_cell
    );
    if let Some(chart) = chart {
        let _ = writeln!(md, "![latency percentiles per variant]({chart})\n");
    }
    let mut variants = Vec::new();
    for a in &load.results {
        if !variants.iter().any(|(k, _)| k == &a.variant) {
            variants.push((a.variant.clone(), a.description.clone()));
        }
    }
    let _ = writeln!(md, "| variant | what |\n|---|---|");
    for (k, d) in &variants {
        let _ = writeln!(md, "| {k} | {d} |");
    }
    md.push('\n');
    let shapes: Vec<Shape> = load.results.iter().fold(Vec::new(), |mut v, a| {
        if !v.contains(&a.shape) {
            v.push(a.shape);
        }
        v
    });
    let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
    for shape in &shapes {
        let rows: Vec<&Aggregate> = load.results.iter().filter(|a| a.shape == *shape).collect();
        let base = rows
            .iter()
            .find(|a| a.variant == Variant::Plain.key() && a.requests > 0)
            .copied();
        let _ = writeln!(md, "### {}\n", shape_title(*shape));
        let _ = writeln!(
            md,
            "| variant | p50 | p90 | p99 | p99.9 | calls/s | p50 ÷ a | p99 ÷ a | calls/s ÷ a | calls | failed |"
        );
        let _ = writeln!(
            md,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for a in &rows {
            if let Some(why) = &a.unavailable {
                let _ = writeln!(md, "| {} | {why} |||||||||| ", a.variant);
                continue;
            }
            let l = a.latency_us;
            let r = |x: f64, b: Option<f64>| ratio(x, b);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
                a.variant,
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.p999),
                a.throughput,
                r(l.p50 as f64, base.map(|b| b.latency_us.p50 as f64)),
                r(l.p99 as f64, base.map(|b| b.latency_us.p99 as f64)),
                r(a.throughput, base.map(|b| b.throughput)),
                a.requests,
                a.failures
            );
        }
        let measured = |v: Variant| {
            rows.iter()
                .find(|a| a.variant == v.key() && a.unavailable.is_none() && a.requests > 0)
        };
        if let (Some(mtls), Some(tls)) = (measured(Variant::MeshMtls), measured(Variant::Tls)) {
            let _ = writeln!(
                md,
                "\nd-mtls ÷ d-tls (the mesh with mTLS against tonic with TLS): p50 {}, p99 {}, \
                 calls/s {}.",
                ratio(mtls.latency_us.p50 as f64, Some(tls.latency_us.p50 as f64)),
                ratio(mtls.latency_us.p99 as f64, Some(tls.latency_us.p99 as f64)),
                ratio(mtls.throughput, Some(tls.throughput)),
            );
        }
        md.push('\n');
    }

    let roles: BTreeSet<&String> = load
        .results
        .iter()
        .flat_map(|a| a.cpu_us_per_request.keys())
        .collect();
    let roles: Vec<&String> = roles.into_iter().collect();
    let _ = writeln!(
        md,
        "### CPU time per call (µs, user + system, from /proc)\n"
    );
    let _ = write!(md, "| load | variant |");
    for r in &roles {
        let _ = write!(md, " {r} |");
    }
    let _ = writeln!(md, " all processes | all ÷ a |");
    let _ = writeln!(md, "|---|---|{}---:|---:|", "---:|".repeat(roles.len()));
    for shape in &shapes {
        let rows: Vec<&Aggregate> = load
            .results
            .iter()
            .filter(|a| a.shape == *shape && a.unavailable.is_none() && a.requests > 0)
            .collect();
        let total = |a: &Aggregate| a.cpu_us_per_request.values().sum::<f64>();
        let base = rows
            .iter()
            .find(|a| a.variant == Variant::Plain.key())
            .map(|a| total(a));
        for a in rows {
            let _ = write!(md, "| {} | {} |", shape_short(*shape), a.variant);
            for r in &roles {
                match a.cpu_us_per_request.get(*r) {
                    Some(us) => {
                        let _ = write!(md, " {us:.1} |");
                    }
                    None => md.push_str(" |"),
                }
            }
            let _ = writeln!(md, " {:.1} | {} |", total(a), ratio(total(a), base));
        }
    }
    md.push('\n');

    let _ = writeln!(
        md,
        "### Resident memory (MiB, largest at the end of any cell)\n"
    );
    let _ = write!(md, "| variant |");
    for r in &roles {
        let _ = write!(md, " {r} |");
    }
    let _ = writeln!(md, " client ÷ a |");
    let _ = writeln!(md, "|---|{}---:|", "---:|".repeat(roles.len()));
    let max_rss = |variant: &str, role: &str| {
        load.results
            .iter()
            .filter(|a| a.variant == variant)
            .filter_map(|a| a.rss_kib.get(role).copied())
            .max()
    };
    let base = max_rss(Variant::Plain.key(), "client").map(|k| k as f64);
    for (v, _) in &variants {
        if max_rss(v, "client").is_none() {
            continue;
        }
        let _ = write!(md, "| {v} |");
        for r in &roles {
            match max_rss(v, r) {
                Some(kib) => {
                    let _ = write!(md, " {:.1} |", kib as f64 / 1024.0);
                }
                None => md.push_str(" |"),
            }
        }
        let client = max_rss(v, "client").map_or(0.0, |k| k as f64);
        let _ = writeln!(md, " {} |", ratio(client, base));
    }
    md.push('\n');
}

fn instr_section(md: &mut String, instr: Option<&InstrReport>) {
    let _ = writeln!(md, "## Instructions per call (callgrind)\n");
    let Some(i) = instr else {
        let _ = writeln!(md, "Not run.\n");
        return;
    };
    let _ = writeln!(
        md,
        "{} sequential calls per variant, client and server in one process on a current-thread \
         runtime, counted only around the measured calls ({}). Instructions in the kernel are \
         not counted.\n",
        i.requests, i.valgrind
    );
    let _ = writeln!(
        md,
        "Allocations are counted by the worker's global allocator around the same calls \
         (reallocations apart).\n"
    );
    let _ = writeln!(
        md,
        "| variant | what | instructions per call | allocations per call | reallocations | bytes allocated |\n\
         |---|---|---:|---:|---:|---:|"
    );
    let cell = |map: &std::collections::BTreeMap<String, f64>, v: &str, digits: usize| {
        map.get(v)
            .map(|n| format!("{n:.digits$}"))
            .unwrap_or_else(|| "—".into())
    };
    for v in Variant::ALL {
        let key = v.key();
        let Some(n) = i.per_request.get(key) else {
            continue;
        };
        let _ = writeln!(
            md,
            "| {key} | {} | {} | {} | {} | {} |",
            v.describe(),
            thousands(*n),
            cell(&i.allocations_per_request, key, 1),
            cell(&i.reallocations_per_request, key, 1),
            cell(&i.bytes_per_request, key, 0),
        );
    }
    let difference = |md: &mut String, label: &str, x: Variant, y: Variant| {
        if let (Some(ix), Some(iy)) = (i.instructions(x), i.instructions(y)) {
            let allocations = i
                .allocations(x)
                .zip(i.allocations(y))
                .map(|(ax, ay)| format!("{:.1}", ax - ay))
                .unwrap_or_else(|| "—".into());
            let _ = writeln!(
                md,
                "| **{label}** | | **{}** | **{allocations}** | | |",
                thousands(ix - iy)
            );
        }
    };
    difference(
        md,
        "a-hdr − a (trace headers on the wire)",
        Variant::PlainHeaders,
        Variant::Plain,
    );
    difference(
        md,
        "b − a-hdr (added by the mesh)",
        Variant::Mesh,
        Variant::PlainHeaders,
    );
    difference(
        md,
        "b − a (mesh and headers)",
        Variant::Mesh,
        Variant::Plain,
    );
    difference(
        md,
        "b − e (mesh over the hand-made stack)",
        Variant::Mesh,
        Variant::HandMade,
    );
    md.push('\n');
}

fn scale_section(md: &mut String, scale: Option<&ScaleReport>) {
    let _ = writeln!(md, "## Configuration scale\n");
    let Some(s) = scale else {
        let _ = writeln!(md, "Not run.\n");
        return;
    };
    let _ = writeln!(
        md,
        "{} clusters, {} endpoints ({} KiB of Istio YAML: a ServiceEntry and a DestinationRule \
         with breaker and outlier detection per cluster). Times are medians; memory is resident-set \
         growth per copy kept alive (approximate, with allocator slack) and heap bytes held \
         (counting allocator, exact).\n",
        s.clusters,
        s.endpoints,
        s.yaml_bytes / 1024
    );
    let _ = writeln!(md, "| what | value |\n|---|---:|");
    let _ = writeln!(md, "| parse + validate the YAML | {:.1} ms |", s.load_ms);
    let _ = writeln!(
        md,
        "| `Mesh::publish` into an empty mesh | {:.2} ms |",
        s.first_publish_ms
    );
    let _ = writeln!(
        md,
        "| `Mesh::publish` of the same config (all endpoints reused) | {:.2} ms |",
        s.republish_ms
    );
    let _ = writeln!(
        md,
        "| `Mesh::publish` with one endpoint moved | {:.2} ms |",
        s.one_change_publish_ms
    );
    let _ = writeln!(
        md,
        "| `Mesh::publish` of a new version of one cluster of 10,000 endpoints (1 % moved) beside \
         999 unchanged | {:.2} ms |",
        s.eds_10k_publish_ms
    );
    let _ = writeln!(
        md,
        "| memory of the parsed config (RSS growth / heap held) | {:.1} MiB / {:.1} MiB |",
        s.config_rss_kib as f64 / 1024.0,
        s.config_heap_kib as f64 / 1024.0
    );
    let _ = writeln!(
        md,
        "| memory of the applied config, runtime state (RSS growth / heap held) | {:.1} MiB / \
         {:.1} MiB |",
        s.publish_rss_kib as f64 / 1024.0,
        s.publish_heap_kib as f64 / 1024.0
    );
    let _ = writeln!(
        md,
        "| … of which outlier detection / per-cluster fixed cost (heap) | {:.1} MiB / {:.1} MiB |",
        s.publish_heap_kib
            .saturating_sub(s.publish_heap_kib_without_outlier) as f64
            / 1024.0,
        s.publish_heap_kib_without_endpoints as f64 / 1024.0
    );
    for (routes, ns) in &s.route_lookup_ns {
        let _ = writeln!(
            md,
            "| route lookup, {} routes (last route matches) | {} ns |",
            thousands(*routes as f64),
            thousands(*ns)
        );
    }
    md.push('\n');
}

fn method(md: &mut String, load: Option<&LoadReport>) {
    let _ = writeln!(md, "## Method\n");
    let nginx = load
        .and_then(|l| l.nginx.clone())
        .unwrap_or_else(|| "nginx (not run)".into());
    let _ = writeln!(
        md,
        "- Every variant sends `echo.Echo/Say` (a 5-byte message) to the same echo service over \
         loopback HTTP/2. Servers, nginx instances and each cell's client are separate \
         processes; CPU per call is the `utime + stime` growth in `/proc/<pid>/stat` of each \
         process during the measured run, divided by the calls.\n\
         - Rounds interleave the variants (a b c1 c2 a b c1 c2 …) under each load shape so that \
         drift of the machine hits all of them; histograms of all rounds are merged.\n\
         - Each cell warms up first (a fifth of its time, 0.2 s to 1 s, not recorded), then runs \
         for the cell's time; a closed loop keeps its calls in flight until then. The open loop schedules calls at a fixed \
         rate and measures each from its scheduled send time, so a stall shows as latency \
         (no coordinated omission). Latency goes into HDR histograms (3 significant digits).\n\
         - (b) is the mesh client stack (routing with a header match before the default route, \
         10 s timeout, 2 retries on unavailable/reset/connect-failure, circuit breaker, outlier \
         detection; no faults) built with `Mesh::new` from Istio YAML. Its server {}.\n\
         - (a-hdr) is (a) with a trivial client layer writing the headers the mesh's default \
         propagation writes (`traceparent`, `b3`, `x-request-id`, fresh random ids per call, \
         HPACK never-indexed as the mesh sends them) and a trivial server layer reading them: \
         b − a-hdr is what the mesh itself adds. (e) is what a Rust user would assemble by hand: \
         tonic with tower's own timeout (10 s), retry (2 retries on transport errors and \
         UNAVAILABLE, a TPS budget; the body collected to be replayable), ConcurrencyLimit and \
         the p2c balancer (least pending requests, behind a Buffer) over the same endpoint, and \
         the headers of (a-hdr); its server is (a-hdr)'s.\n\
         - (c) is {nginx}, one worker per instance, HTTP/2 cleartext in, `grpc_pass` with \
         upstream keep-alive out, per-connection request limits raised so nothing reconnects; \
         c1 = one hop (server-side sidecar), c2 = client-side and server-side sidecars.\n\
         - (d-tls) is plain tonic on both ends over rustls (TLS 1.3, ring, server \
         certificate only, self-signed for `localhost`); (d-mtls) is (b) with the mesh's mTLS \
         on both ends: the client's DestinationRule says `ISTIO_MUTUAL` (expecting the \
         server's SPIFFE ID), the server's PeerAuthentication says STRICT, and both present \
         SPIFFE workload certificates from one CA (TLS 1.3, rustls, ring). d-mtls ÷ d-tls is \
         what the mesh stacks and mutual authentication cost over tonic with TLS.\n",
        if variant::MESH_SERVER_STACK {
            "runs the mesh server stack"
        } else {
            "is plain tonic: the mesh server stack has not landed (hook `MESH_SERVER_STACK` in \
             `benches/src/variant.rs`), so (b) measures the client side only"
        },
    );
}

fn ratio(x: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b > 0.0 => format!("{:.2}×", x / b),
        _ => "—".into(),
    }
}

fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("−{out}") } else { out }
}

/// Draws p50/p90/p99 per variant, one panel per load shape, as an SVG file.
pub fn chart(load: &LoadReport, path: &Path) -> Result<(), String> {
    let shapes: Vec<Shape> = load.results.iter().fold(Vec::new(), |mut v, a| {
        if !v.contains(&a.shape) {
            v.push(a.shape);
        }
        v
    });
    let cols = 2usize;
    let rows_n = shapes.len().div_ceil(cols).max(1);
    let size = (1000u32, 380 * rows_n as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("chart {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((rows_n, cols));
    let colors = [
        RGBColor(66, 133, 244),
        RGBColor(251, 188, 5),
        RGBColor(219, 68, 55),
    ];
    let percentiles = ["p50", "p90", "p99"];
    for (panel, shape) in panels.iter().zip(&shapes) {
        let bars: Vec<&Aggregate> = load
            .results
            .iter()
            .filter(|a| a.shape == *shape && a.unavailable.is_none() && a.requests > 0)
            .collect();
        let values = |a: &Aggregate| {
            [a.latency_us.p50, a.latency_us.p90, a.latency_us.p99].map(|us| us as f64 / 1000.0)
        };
        let top = bars
            .iter()
            .flat_map(|a| values(a))
            .fold(0.0f64, f64::max)
            .max(0.001)
            * 1.15;
        let names: Vec<String> = bars.iter().map(|a| a.variant.clone()).collect();
        let mut chart = ChartBuilder::on(panel)
            .caption(shape_title(*shape), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..bars.len().max(1) as f64, 0f64..top)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(bars.len().max(1) * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 0.01 {
                    names.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("latency (ms)")
            .draw()
            .map_err(|e| err(&e))?;
        for (i, a) in bars.iter().enumerate() {
            for (k, v) in values(a).into_iter().enumerate() {
                let x0 = i as f64 + 0.15 + k as f64 * 0.23;
                let series = chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x0, 0.0), (x0 + 0.21, v)],
                        colors[k].filled(),
                    )))
                    .map_err(|e| err(&e))?;
                if i == 0 {
                    let color = colors[k];
                    series.label(percentiles[k]).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                    });
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
