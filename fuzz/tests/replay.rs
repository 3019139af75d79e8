//! Replays every committed corpus input (`seeds/<target>/*`) through its target's body: what CI
//! runs instead of a fuzzing session. An input that once crashed a target stays here as a
//! regression test.

use std::path::Path;

#[test]
fn every_committed_input_passes_its_target() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (name, target) in mesh_fuzz::TARGETS {
        let dir = seeds.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a readable directory entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{} has no inputs", dir.display());
        for input in inputs {
            let data = std::fs::read(&input).expect("a readable input");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} fails on {}", input.display());
        }
    }
}
