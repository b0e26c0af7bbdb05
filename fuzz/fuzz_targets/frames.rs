//! Arbitrary bytes read as a stream of control-channel frames: every answer is the one the
//! header calls for, within its kind's allocation ceiling, and every message re-encodes to itself.

#![no_main]

// The checks are shared with core-rs/tests/fuzz_corpus.rs, which replays this target's corpus in
// CI; including the module also installs its allocation-measuring global allocator.
#[path = "../../core-rs/tests/common_fuzz/mod.rs"]
mod common_fuzz;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common_fuzz::frames(data));
