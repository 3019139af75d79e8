//! The targets RESULTS.md judges, each with its measured value and an honest verdict.

use super::{Inputs, Verdict, thousands};
use crate::{
    cell::Shape,
    compare::Aggregate,
    instr::InstrReport,
    scale::ScaleReport,
    variant::{self, Variant},
};

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
