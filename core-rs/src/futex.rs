//! The only module that makes futex system calls.
//!
//! Futex words that live in a shared segment must use the *shared* futex operations (no
//! `FUTEX_PRIVATE_FLAG`): the kernel then keys the wait queue by the page, not by the address
//! space, so a wake from the peer process reaches a sleeper here. Words that never leave the
//! process use the private operations, which are cheaper.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Whether a futex word is seen by other processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The word lives in memory shared with another process.
    Shared,
    /// The word lives in this process only.
    Private,
}

impl Scope {
    #[inline]
    fn op(self, op: libc::c_int) -> libc::c_int {
        match self {
            Scope::Shared => op,
            Scope::Private => op | libc::FUTEX_PRIVATE_FLAG,
        }
    }
}

/// Sleeps while `*word == expected`, for at most `timeout`.
///
/// Returns on a wake, a timeout, a signal, or at once when the word already differs; callers
/// re-check their condition in a loop, so the reason does not matter to them.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>, scope: Scope) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call (it is borrowed), and
    // `ts_ptr` is null or points to a timespec that outlives the call. FUTEX_WAIT only reads both.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            scope.op(libc::FUTEX_WAIT),
            expected,
            ts_ptr,
        );
    }
}

/// Wakes up to `count` threads sleeping on `word`; returns how many were woken.
pub fn wake(word: &AtomicU32, count: u32, scope: Scope) -> usize {
    let count = count.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: FUTEX_WAKE does not access the word's memory, it only uses its address as a key;
    // the reference guarantees the address is valid and aligned.
    let woken = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            scope.op(libc::FUTEX_WAKE),
            count,
        )
    };
    woken.max(0) as usize
}
