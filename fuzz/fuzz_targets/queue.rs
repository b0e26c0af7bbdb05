//! Arbitrary bytes read as a consumer's list (what a host can make a consumer read) and as the
//! inputs of posts and registrations (what a client can make a host parse): every list is read as
//! its layout says or refused as a violation, and every input parsed or refused as it should be.

#![no_main]

// The checks are shared with core-rs/tests/fuzz_corpus.rs, which replays this target's corpus in
// CI; including the module also installs its allocation-measuring global allocator.
#[path = "../../core-rs/tests/common_fuzz/mod.rs"]
mod common_fuzz;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common_fuzz::queue(data));
