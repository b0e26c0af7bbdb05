//! A memfd (or a pipe) with arbitrary header bytes, size and seals through
//! `Segment::attach`: refused for a reason that applies, attached exactly when none does.

#![no_main]

// The checks are shared with core-rs/tests/fuzz_corpus.rs, which replays this target's corpus in
// CI; including the module also installs its allocation-measuring global allocator.
#[path = "../../core-rs/tests/common_fuzz/mod.rs"]
mod common_fuzz;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common_fuzz::attach(data));
