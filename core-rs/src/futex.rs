//! The only module that makes futex system calls.
//!
//! Futex words that live in a shared segment must use the *shared* futex operations (no
//! `FUTEX_PRIVATE_FLAG`): the kernel then keys the wait queue by the page, not by the address
//! space, so a wake from the peer process reaches a sleeper here. Words that never leave the
//! process use the private operations, which are cheaper.
//!
//! [`wait_either`] sleeps on a shared word and a private word at once (`futex_waitv`, Linux
//! 5.16): a thread waiting for a peer's answer is woken by the peer through the shared word, and
//! by its own process through the private one, which no peer can touch — so a peer that rewrites
//! the shared word can never keep a local close from ending the wait (docs/architecture.md,
//! "Sleep flags").

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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

fn timespec(t: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    }
}

/// Sleeps while `*word == expected`, for at most `timeout`.
///
/// Returns on a wake, a timeout, a signal, or at once when the word already differs; callers
/// re-check their condition in a loop, so the reason does not matter to them.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>, scope: Scope) {
    let ts = timeout.map(timespec);
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

/// One entry of `futex_waitv`'s array (`struct futex_waitv` of `<linux/futex.h>`).
#[repr(C)]
struct WaitV {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `FUTEX2_SIZE_U32`: the word is 32 bits.
const FUTEX2_SIZE_U32: u32 = 0x02;
/// `FUTEX2_PRIVATE`: the same bit as `FUTEX_PRIVATE_FLAG`.
const FUTEX2_PRIVATE: u32 = libc::FUTEX_PRIVATE_FLAG as u32;

/// Set once `futex_waitv` answered `ENOSYS` (a kernel older than 5.16).
static NO_WAITV: AtomicBool = AtomicBool::new(false);

/// How long one sleep lasts where `futex_waitv` is missing: the private word cannot wake the
/// sleeper there, so it looks at it this often (only while it waits for an answer).
const FALLBACK_NAP: Duration = Duration::from_millis(10);

/// Sleeps while `*shared == expected` (a word in a segment) and `*local == seen` (a word of this
/// process), for at most `timeout`; a wake on either ends it. Returns at once when either word
/// already differs. Callers re-check their condition in a loop.
///
/// Where the kernel lacks `futex_waitv`, it sleeps on `shared` alone, for at most
/// [`FALLBACK_NAP`] at a time, and reads `local` between naps.
pub fn wait_either(
    shared: &AtomicU32,
    expected: u32,
    local: &AtomicU32,
    seen: u32,
    timeout: Option<Duration>,
) {
    if !NO_WAITV.load(Ordering::Relaxed) {
        let waiters = [
            WaitV {
                val: u64::from(expected),
                uaddr: shared.as_ptr() as u64,
                flags: FUTEX2_SIZE_U32,
                reserved: 0,
            },
            WaitV {
                val: u64::from(seen),
                uaddr: local.as_ptr() as u64,
                flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
                reserved: 0,
            },
        ];
        // futex_waitv takes an absolute deadline on the given clock.
        let deadline = timeout.map(|t| {
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `now` is a valid timespec to write.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
            let at = Duration::new(now.tv_sec as u64, now.tv_nsec as u32).saturating_add(t);
            timespec(at)
        });
        let deadline_ptr = deadline
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `waiters` is an array of two valid `futex_waitv` entries whose addresses are
        // aligned u32 words that the borrows keep valid for the call; `deadline_ptr` is null or
        // points to a timespec that outlives the call. The kernel only reads them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                waiters.as_ptr(),
                2 as libc::c_uint,
                0 as libc::c_uint,
                deadline_ptr,
                libc::CLOCK_MONOTONIC,
            )
        };
        if rc >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
            return;
        }
        NO_WAITV.store(true, Ordering::Relaxed);
    }
    if local.load(Ordering::Acquire) != seen {
        return;
    }
    let nap = timeout.map_or(FALLBACK_NAP, |t| t.min(FALLBACK_NAP));
    wait(shared, expected, Some(nap), Scope::Shared);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn wait_either_ends_on_a_wake_of_the_private_word() {
        let words = Arc::new((AtomicU32::new(1), AtomicU32::new(0)));
        let sleeper = {
            let words = words.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                while words.1.load(Ordering::Acquire) == 0 {
                    wait_either(&words.0, 1, &words.1, 0, Some(Duration::from_secs(5)));
                }
                start.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        words.1.store(1, Ordering::Release);
        wake(&words.1, u32::MAX, Scope::Private);
        assert!(sleeper.join().unwrap() < Duration::from_secs(4));
    }

    #[test]
    fn wait_either_returns_at_once_when_a_word_differs() {
        let (shared, local) = (AtomicU32::new(2), AtomicU32::new(0));
        let start = Instant::now();
        wait_either(&shared, 1, &local, 0, Some(Duration::from_secs(5)));
        wait_either(
            &AtomicU32::new(1),
            1,
            &local,
            7,
            Some(Duration::from_secs(5)),
        );
        assert!(start.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn wait_either_times_out() {
        let (shared, local) = (AtomicU32::new(1), AtomicU32::new(0));
        let start = Instant::now();
        wait_either(&shared, 1, &local, 0, Some(Duration::from_millis(30)));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(25) && took < Duration::from_secs(4));
    }
}
