//! Warm mappings: a segment mapping kept after its connection, for the next connection that
//! uses the same segment — on the client, to send it again to the same server process
//! ([`crate::client`]); on the server, to skip mapping it again when it comes back.
//!
//! Making and mapping a segment is most of what a connect costs: the memfd, the mapping, a page
//! fault (and on the client a zeroed page) for each page first touched, and at the end an unmap
//! with its TLB shootdown. A [`Shelf`] keeps at most [`WARM_MAX`] mappings, none much longer
//! than [`WARM_LIFE`]: the reactor sweeps the stale ones out, waking for it at most once a life
//! while there are any, so a process that stops connecting holds none after two lives.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use memmap2::MmapRaw;

use crate::reactor::{Reactor, Source, Token};
use crate::segment::Layout;

/// Mappings a shelf keeps at most.
const WARM_MAX: usize = 4;
/// How long a mapping stays on a shelf.
const WARM_LIFE: Duration = Duration::from_secs(1);

/// A kept mapping, and what it is kept for (`K`: whom it may go to).
struct Item<K> {
    key: K,
    map: MmapRaw,
    layout: Layout,
    since: Instant,
}

/// Mappings kept for reuse (see the module doc).
pub(crate) struct Shelf<K: Send + 'static> {
    items: Mutex<Vec<Item<K>>>,
    /// Whether a sweep is set for the reactor (then a new item sets none).
    sweep_set: AtomicBool,
    token: OnceLock<Option<(&'static Reactor, Token)>>,
    /// How many mappings were taken for reuse so far.
    reused: AtomicU64,
}

impl<K: Send + 'static> Shelf<K> {
    pub(crate) const fn new() -> Shelf<K> {
        Shelf {
            items: Mutex::new(Vec::new()),
            sweep_set: AtomicBool::new(false),
            token: OnceLock::new(),
            reused: AtomicU64::new(0),
        }
    }

    /// The items, the stale ones dropped (which unmaps them).
    fn items(&self) -> MutexGuard<'_, Vec<Item<K>>> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        items.retain(|k| now.duration_since(k.since) < WARM_LIFE);
        items
    }

    /// Keeps `map` for `key`, the oldest item going if the shelf is full.
    pub(crate) fn put(&'static self, key: K, map: MmapRaw, layout: Layout) {
        let since = Instant::now();
        let mut items = self.items();
        if items.len() == WARM_MAX {
            items.remove(0);
        }
        items.push(Item {
            key,
            map,
            layout,
            since,
        });
        drop(items);
        // AcqRel: one of the threads that put an item sets the sweep; the sweeper clears the
        // flag only under the lock, after it found nothing left.
        if !self.sweep_set.swap(true, Ordering::AcqRel) {
            self.sweep_at(since + WARM_LIFE);
        }
    }

    /// Takes the first item `fits`, if `reuse` accepts its mapping (else it stays on the shelf);
    /// `reuse` may take what it needs of the key.
    pub(crate) fn take<T>(
        &self,
        fits: impl Fn(&K, &Layout) -> bool,
        mut reuse: impl FnMut(&mut K, MmapRaw, Layout) -> Result<T, MmapRaw>,
    ) -> Option<T> {
        let mut items = self.items();
        for i in 0..items.len() {
            if !fits(&items[i].key, &items[i].layout) {
                continue;
            }
            let Item {
                mut key,
                map,
                layout,
                since,
            } = items.remove(i);
            match reuse(&mut key, map, layout) {
                Ok(t) => {
                    // Relaxed: a count for diagnostics and tests; it orders nothing.
                    self.reused.fetch_add(1, Ordering::Relaxed);
                    return Some(t);
                }
                Err(map) => items.insert(
                    i,
                    Item {
                        key,
                        map,
                        layout,
                        since,
                    },
                ),
            }
        }
        None
    }

    /// Whether an item `fits`.
    pub(crate) fn has(&self, fits: impl Fn(&K, &Layout) -> bool) -> bool {
        self.items().iter().any(|k| fits(&k.key, &k.layout))
    }

    pub(crate) fn len(&self) -> usize {
        self.items().len()
    }

    pub(crate) fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Lets every item go now.
    pub(crate) fn clear(&self) {
        let all = std::mem::take(&mut *self.items());
        drop(all);
    }

    /// Asks the reactor to sweep at `at` (the shelf's token made on first use).
    fn sweep_at(&'static self, at: Instant) {
        let token = self.token.get_or_init(|| {
            let reactor = Reactor::get().ok()?;
            Some((reactor, reactor.enlist(Arc::new(Sweeper(self))).ok()?))
        });
        if let Some((reactor, token)) = token {
            reactor.deadline(*token, at);
        }
    }
}

/// Lets a shelf's stale items go, on the reactor's thread.
struct Sweeper<K: Send + 'static>(&'static Shelf<K>);

impl<K: Send + 'static> Source for Sweeper<K> {
    fn ready(self: Arc<Self>, _events: u32) {}

    fn expired(self: Arc<Self>) {
        let shelf = self.0;
        let items = shelf.items();
        match items.iter().map(|k| k.since).min() {
            Some(oldest) => shelf.sweep_at(oldest + WARM_LIFE),
            None => shelf.sweep_set.store(false, Ordering::Release),
        }
    }
}
