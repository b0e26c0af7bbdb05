//! Replays every input of the fuzz corpus (`fuzz/corpus/<target>/`) and of the fixed crashes
//! (`fuzz/regressions/<target>/`) through the checks the fuzz targets run, so that CI, which has
//! no fuzzer, still holds the code to everything the fuzzer once reached. Inputs of bugs not yet
//! fixed wait in `fuzz/known-bugs/<target>/`, each replayed by an ignored test; once the bug is
//! fixed, the input moves to `regressions/` and its test goes.

mod common_fuzz;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file under `fuzz/<kind>/<target>/` for both kinds, sorted so that failures repeat.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no inputs for {target} under {}",
        fuzz_dir().display()
    );
    for path in files {
        let data = std::fs::read(&path).unwrap();
        // Name the input on failure: the panic message alone does not say which file it was.
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails its check", path.display());
    }
}

#[test]
fn every_frames_input_parses_within_its_ceiling_and_round_trips() {
    replay("frames", common_fuzz::frames);
}

#[test]
fn every_geometry_input_lays_out_apart_inside_the_segment() {
    replay("geometry", common_fuzz::geometry);
}

#[test]
fn every_attach_input_is_refused_for_a_reason_or_attached_whole() {
    replay("attach", common_fuzz::attach);
}

#[test]
fn every_queue_input_is_read_as_the_list_layout_says_or_refused() {
    replay("queue", common_fuzz::queue);
}
