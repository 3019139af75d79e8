//! The demo's quick run is part of the test suite: every scenario must behave as expected
//! against the real services it starts on loopback.

use mesh_examples::demo::{Demo, Pace, View};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_demo_scenario_behaves_as_expected() {
    let demo = Demo::start(Pace::Quick).await.expect("the demo starts");
    let mut view = View::new();
    let all_passed = demo.run(&mut view).await;
    assert!(all_passed, "\n{}", view.summary());
    for row in view.rows() {
        assert!(
            row.applied.iter().any(|yaml| yaml.contains("kind: ")),
            "{} shows the Istio YAML it applied",
            row.name
        );
    }
    assert!(
        view.rows().len() >= 9,
        "every scenario ran:\n{}",
        view.summary()
    );
}
