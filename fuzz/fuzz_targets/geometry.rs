//! Arbitrary geometries through `Geometry::layout`: refused exactly when invalid; when
//! accepted, every slot inside the segment and apart from the others, and `Layout::locate`
//! finding exactly the slot starts.

#![no_main]

// The checks are shared with core-rs/tests/fuzz_corpus.rs, which replays this target's corpus in
// CI; including the module also installs its allocation-measuring global allocator.
#[path = "../../core-rs/tests/common_fuzz/mod.rs"]
mod common_fuzz;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common_fuzz::geometry(data));
