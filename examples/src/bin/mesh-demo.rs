//! The one-command demo of the proxyless mesh: bookinfo on loopback and live configuration
//! changes — canary splits, header routing, faults, retries, circuit breaking, outlier
//! ejection — each judged on what callers observed. Exits 0 only when every scenario behaved
//! as expected.
//!
//! `cargo run -p mesh-examples --bin mesh-demo` (add `--quick` for the short CI run).

use std::process::ExitCode;

use clap::Parser;
use mesh_examples::demo::{Demo, Pace, View};

/// Runs every demo scenario and prints a summary table.
#[derive(Debug, Parser)]
struct Args {
    /// Fewer requests and shorter waits, with wider tolerances (for CI).
    #[arg(long)]
    quick: bool,
    /// Print the Istio YAML each scenario applied after the summary.
    #[arg(long)]
    show_yaml: bool,
    /// Where to write the report: `applied.yaml` (the Istio YAML of every scenario) and
    /// `report.svg` (every call of every scenario, drawn).
    #[arg(long, default_value = "target/mesh-demo")]
    report_dir: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let pace = if args.quick { Pace::Quick } else { Pace::Full };
    let started = std::time::Instant::now();
    let mut view = View::new();
    let run = async {
        let demo = Demo::start(pace).await?;
        view.note(&format!(
            "bookinfo on loopback: productpage {}, reviews v1/v2/v3, ratings ×2",
            demo.topology().productpage
        ));
        Ok::<bool, mesh_examples::demo::DemoError>(demo.run(&mut view).await)
    };
    let outcome = tokio::select! {
        outcome = run => outcome,
        _ = tokio::signal::ctrl_c() => {
            // Dropping the demo aborts every server task; nothing outlives the process.
            eprintln!("\ninterrupted: every service stopped");
            return ExitCode::from(130);
        }
    };
    match outcome {
        Ok(all_passed) => {
            println!("\n{}", view.summary());
            let yaml = view.applied_yaml();
            if args.show_yaml {
                println!("{yaml}");
            }
            let files = [
                ("applied.yaml", yaml, "the Istio YAML of every scenario"),
                (
                    "report.svg",
                    mesh_examples::demo::report_svg(view.rows()),
                    "every call of every scenario, drawn",
                ),
            ];
            for (name, content, what) in files {
                let path = args.report_dir.join(name);
                match std::fs::create_dir_all(&args.report_dir)
                    .and_then(|()| std::fs::write(&path, content))
                {
                    Ok(()) => println!("{what}: {}", path.display()),
                    Err(e) => eprintln!("could not write {}: {e}", path.display()),
                }
            }
            println!("finished in {:.1} s", started.elapsed().as_secs_f64());
            if all_passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("the demo could not start: {e}");
            ExitCode::from(2)
        }
    }
}
