//! A seconds-long smoke of the load tool, for CI: `mesh-bench compare` on variants a, a-hdr,
//! b, e, d-tls and d-mtls (real server and client processes over loopback), then `mesh-bench report` on
//! its output.
//! Never the full benchmark.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs, path::PathBuf, process::Command};

use mesh_benches::{cell::Shape, compare::LoadReport};

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_short_comparison_of_plain_tonic_the_baselines_the_mesh_tls_and_mtls_produces_sane_numbers() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("mesh-bench-smoke-{}", std::process::id())));
    fs::create_dir_all(&dir.0).unwrap();
    let json = dir.0.join("load.json");
    let status = Command::new(env!("CARGO_BIN_EXE_mesh-bench"))
        .args(["compare", "--rounds", "1", "--secs", "0.5"])
        .args([
            "--variants",
            "a,a-hdr,b,e,d-tls,d-mtls",
            "--shapes",
            "c2,open100",
        ])
        .arg("--work-dir")
        .arg(dir.0.join("work"))
        .arg("--json")
        .arg(&json)
        .status()
        .unwrap();
    assert!(status.success(), "mesh-bench compare: {status}");
    let report: LoadReport = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report.results.len(), 12, "6 variants × 2 shapes");

    for r in &report.results {
        let at = format!("{} {}", r.variant, r.shape);
        assert_eq!(r.unavailable, None, "{at}");
        assert!(r.requests >= 10, "{at}: {} calls", r.requests);
        assert_eq!(r.failures, 0, "{at}");
        let l = r.latency_us;
        assert!(
            0 < l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max,
            "{at}: {l:?}"
        );
        assert!(
            l.p50 < 1_000_000,
            "{at}: p50 of a second on loopback: {l:?}"
        );
        assert!(r.throughput > 0.0, "{at}");
        if let Shape::Open(rate) = r.shape {
            // The open loop sends on schedule whatever the latency: rate × duration calls.
            let expected = f64::from(rate) * report.secs_per_cell;
            assert!(
                (r.requests as f64 - expected).abs() <= 1.0,
                "{at}: {} calls, expected {expected}",
                r.requests
            );
        }
        for role in ["client", "server"] {
            assert!(
                r.cpu_us_per_request.contains_key(role),
                "{at}: no CPU for {role}: {:?}",
                r.cpu_us_per_request
            );
            let rss = r.rss_kib.get(role).copied().unwrap_or_default();
            assert!(rss > 1024, "{at}: {role} RSS {rss} KiB");
        }
        // A client that did work used CPU (at least one 10 ms tick over the cell).
        assert!(r.cpu_us_per_request["client"] > 0.0, "{at}");
    }

    let md = dir.0.join("RESULTS.md");
    let svg = dir.0.join("latency.svg");
    let status = Command::new(env!("CARGO_BIN_EXE_mesh-bench"))
        .arg("report")
        .arg("--load")
        .arg(&json)
        .args(["--smoke", "the CI smoke test"])
        .arg("--out")
        .arg(&md)
        .arg("--svg")
        .arg(&svg)
        .status()
        .unwrap();
    assert!(status.success(), "mesh-bench report: {status}");
    let md = fs::read_to_string(md).unwrap();
    assert!(md.contains("SMOKE RUN"), "{md}");
    assert!(
        md.contains("| mesh p50 / plain p50, concurrency 1 |"),
        "{md}"
    );
    assert!(md.contains("### closed loop, concurrency 2"), "{md}");
    // d-mtls is measured under both shapes and compared with d-tls.
    assert_eq!(md.matches("\nd-mtls ÷ d-tls").count(), 2, "{md}");
    assert!(!md.contains("not yet available"), "{md}");
    // The honest baselines are measured and compared.
    assert!(md.contains("| a-hdr | plain tonic + trace headers"), "{md}");
    assert!(
        md.contains("| mesh throughput / a-hdr throughput, concurrency 64 |"),
        "{md}"
    );
    let svg = fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("open loop, 100 calls/s"));
}
