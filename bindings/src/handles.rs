//! Handles the C surface gives out for tickets and commands: numbers, not pointers.
//!
//! A handle is a table index (its low 24 bits) and that entry's generation (its high 8 bits,
//! never 0, so that 0 is never a handle). A handle that was freed, forged, or is in use by a
//! call still running is refused with [`Status::InvalidArgument`], naming it — never
//! dereferenced; a bug in the caller cannot corrupt memory. (A generation wraps after 255
//! reuses of one entry, so a very old handle may alias a new one; recent misuse is caught.)
//!
//! Handles are also cheap where the caller is JavaScript: a `u32` crosses Deno's FFI without
//! allocating, where a pointer becomes a `BigInt` and a pointer object per command.

use std::sync::{Mutex, MutexGuard};

use shmcall_core::status::{Error, Status};

const INDEX_BITS: u32 = 24;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

/// A table of values named by handles; see the module doc.
pub struct Handles<T> {
    what: &'static str,
    table: Mutex<Table<T>>,
}

struct Table<T> {
    entries: Vec<Entry<T>>,
    /// Indexes of free entries, reused last in, first out.
    free: Vec<u32>,
}

struct Entry<T> {
    generation: u8,
    state: State<T>,
}

enum State<T> {
    Free,
    Held(T),
    /// Taken out by [`Handles::lend`] for a call that is running.
    Lent,
}

impl<T> std::fmt::Debug for Handles<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles")
            .field("what", &self.what)
            .field("live", &self.live())
            .finish()
    }
}

impl<T> Handles<T> {
    /// An empty table; `what` names its values in errors ("ticket", "command").
    pub const fn new(what: &'static str) -> Handles<T> {
        Handles {
            what,
            table: Mutex::new(Table {
                entries: Vec::new(),
                free: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table<T>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn not_live(&self, handle: u32) -> Error {
        Error::new(
            Status::InvalidArgument,
            format!("{} handle {handle} is not live", self.what),
        )
    }

    /// Holds `value` and returns its handle.
    pub fn insert(&self, value: T) -> Result<u32, Error> {
        let mut t = self.lock();
        let index = match t.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(t.entries.len()).unwrap_or(u32::MAX);
                if i > INDEX_MASK {
                    return Err(Error::new(
                        Status::InvalidArgument,
                        format!("more than {INDEX_MASK} {}s are live", self.what),
                    ));
                }
                t.entries.push(Entry {
                    generation: 0,
                    state: State::Free,
                });
                i
            }
        };
        let e = &mut t.entries[index as usize];
        e.generation = e.generation.checked_add(1).unwrap_or(1);
        e.state = State::Held(value);
        Ok(u32::from(e.generation) << INDEX_BITS | index)
    }

    /// The entry `handle` names, if its generation matches.
    fn entry<'t>(&self, t: &'t mut Table<T>, handle: u32) -> Result<&'t mut Entry<T>, Error> {
        let generation = (handle >> INDEX_BITS) as u8;
        match t.entries.get_mut((handle & INDEX_MASK) as usize) {
            Some(e) if e.generation == generation && generation != 0 => Ok(e),
            _ => Err(self.not_live(handle)),
        }
    }

    /// Takes the value out and frees its handle.
    pub fn remove(&self, handle: u32) -> Result<T, Error> {
        let mut t = self.lock();
        let e = self.entry(&mut t, handle)?;
        match std::mem::replace(&mut e.state, State::Free) {
            State::Held(v) => {
                t.free.push(handle & INDEX_MASK);
                Ok(v)
            }
            other => {
                e.state = other;
                Err(self.not_live(handle))
            }
        }
    }

    /// Runs `f` on the value, under the table's lock: for short work only.
    pub fn with<R>(&self, handle: u32, f: impl FnOnce(&mut T) -> R) -> Result<R, Error> {
        let mut t = self.lock();
        match &mut self.entry(&mut t, handle)?.state {
            State::Held(v) => Ok(f(v)),
            _ => Err(self.not_live(handle)),
        }
    }

    /// Takes the value out for a call that may block, keeping its handle: other uses of the
    /// handle are refused until [`Handles::give_back`].
    pub fn lend(&self, handle: u32) -> Result<T, Error> {
        let mut t = self.lock();
        let e = self.entry(&mut t, handle)?;
        match std::mem::replace(&mut e.state, State::Lent) {
            State::Held(v) => Ok(v),
            other => {
                e.state = other;
                Err(self.not_live(handle))
            }
        }
    }

    /// Puts back a value [`Handles::lend`] took out.
    pub fn give_back(&self, handle: u32, value: T) {
        let mut t = self.lock();
        if let Ok(e) = self.entry(&mut t, handle)
            && matches!(e.state, State::Lent)
        {
            e.state = State::Held(value);
        }
    }

    /// Values held now (lent ones included).
    pub fn live(&self) -> usize {
        let t = self.lock();
        t.entries.len() - t.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_name_values_until_freed_and_refuse_stale_or_forged_ones() {
        let h = Handles::new("ticket");
        let a = h.insert("a").unwrap();
        let b = h.insert("b").unwrap();
        assert_ne!(a, 0);
        assert_ne!(a, b);
        assert_eq!(h.with(a, |v| *v).unwrap(), "a");
        assert_eq!(h.remove(a).unwrap(), "a");
        let stale = h.remove(a).unwrap_err();
        assert_eq!(stale.status(), Status::InvalidArgument);
        assert!(stale.message().contains(&format!("ticket handle {a}")));
        // The entry is reused under a new generation: the old handle stays refused.
        let c = h.insert("c").unwrap();
        assert_eq!(c & INDEX_MASK, a & INDEX_MASK);
        assert_ne!(c, a);
        assert!(h.with(a, |_| ()).is_err());
        assert!(h.with(0, |_| ()).is_err(), "0 is never a handle");
        assert!(h.with(12345 << 8, |_| ()).is_err(), "forged");
        assert_eq!(h.live(), 2);
        assert_eq!(h.remove(b).unwrap(), "b");
        assert_eq!(h.remove(c).unwrap(), "c");
        assert_eq!(h.live(), 0);
    }

    #[test]
    fn a_lent_value_is_refused_to_others_until_given_back() {
        let h = Handles::new("ticket");
        let a = h.insert(String::from("a")).unwrap();
        let v = h.lend(a).unwrap();
        assert!(h.remove(a).is_err(), "freed while a call runs");
        assert!(h.lend(a).is_err(), "lent twice");
        h.give_back(a, v);
        assert_eq!(h.remove(a).unwrap(), "a");
    }

    #[test]
    fn generations_skip_zero_when_they_wrap() {
        let h = Handles::new("command");
        let mut last = 0;
        for _ in 0..600 {
            last = h.insert(()).unwrap();
            assert_ne!(last >> INDEX_BITS, 0);
            h.remove(last).unwrap();
        }
        assert_eq!(last & INDEX_MASK, 0, "one entry, reused");
    }
}
