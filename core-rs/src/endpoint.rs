//! Where a server listens: ic id rules, the owner-only socket directory, the socket path, and
//! the lock that tells a live server from a stale socket.
//!
//! The directory is `$SHMCALL_DIR` when set, else `$XDG_RUNTIME_DIR/shmcall`, else
//! `/tmp/shmcall-<uid>`. It is created with mode 0700 and refused unless it is a real directory
//! (not a symlink) owned by this user with no group or other permissions: only its owner can
//! reach the sockets in it. A server holds an exclusive `flock` on `<name>.lock` for its whole
//! life; the kernel drops that lock when the process dies, however it dies, so "the lock is
//! free" means "no live server", and a socket file left behind is stale and may be replaced.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::status::{Error, Status};
use crate::wire::MAX_IC_ID;

/// Environment variable that overrides the socket directory.
pub const DIR_ENV: &str = "SHMCALL_DIR";

/// Longest socket path `sockaddr_un` can hold (108 bytes including the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A shortened socket name keeps this many characters of a long ic id…
const SHORT_PREFIX: usize = 32;
/// …followed by `~` and 16 hex digits of a hash of the whole id.
const SHORT_SUFFIX: usize = 17;

/// Checks an ic id: 1 to 100 characters of `[A-Za-z0-9._-]`.
pub fn validate_ic_id(ic_id: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if ic_id.is_empty() || ic_id.len() > MAX_IC_ID || !ic_id.chars().all(ok_char) {
        return Err(Error::new(
            Status::InvalidArgument,
            format!(
                "ic id {ic_id:?} is invalid: it must be 1 to {MAX_IC_ID} characters of A-Z, a-z, 0-9, '.', '_' or '-'"
            ),
        ));
    }
    Ok(())
}

/// Who besides its owner a socket directory serves: nobody (the default), other users a
/// server allow-lists, or — on a client's side — a directory of another user whose server the
/// client allow-lists.
#[derive(Clone, Copy, Debug, Default)]
pub struct Access<'a> {
    /// A server with an allow-list: others may traverse the directory (mode 0711, still not
    /// list it) and connect to its socket (mode 0666); the server's credential check decides.
    pub shared: bool,
    /// A client's allow-listed server users: a directory owned by one of them is accepted if
    /// only its owner can write it.
    pub owners: &'a [u32],
}

/// The socket directory — `chosen` if given, else the default described in the module doc —
/// created if missing, and checked to be writable by its owner only and, unless `access` says
/// otherwise, reachable by its owner only.
pub fn socket_dir(chosen: Option<&Path>, access: Access<'_>) -> Result<PathBuf, Error> {
    prepare_dir(dir_path(chosen), access)
}

/// The socket directory's path — `chosen` if given, else the default described in the module
/// doc — without touching the file system.
fn dir_path(chosen: Option<&Path>) -> PathBuf {
    match chosen
        .map(|d| d.as_os_str().to_owned())
        .or_else(|| std::env::var_os(DIR_ENV))
    {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(d) if !d.is_empty() => Path::new(&d).join("shmcall"),
            _ => PathBuf::from(format!("/tmp/shmcall-{}", nix::unistd::geteuid())),
        },
    }
}

/// Creates the directory `dir` if missing and checks it (see [`socket_dir`]).
fn prepare_dir(dir: PathBuf, access: Access<'_>) -> Result<PathBuf, Error> {
    let cannot_inspect = |e| {
        Error::io(
            &format!("cannot inspect the socket directory {}", dir.display()),
            e,
        )
    };
    let inspect = || fs::symlink_metadata(&dir).map_err(cannot_inspect);
    // Looked at first: it is there on every connect but the first, and a look is one system
    // call where a create that fails and a look are two.
    let mut meta = match fs::symlink_metadata(&dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mode = if access.shared { 0o711 } else { 0o700 };
            match DirBuilder::new().mode(mode).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::io(
                        &format!("cannot create the socket directory {}", dir.display()),
                        e,
                    ));
                }
            }
            inspect()?
        }
        Err(e) => return Err(cannot_inspect(e)),
    };
    let uid = nix::unistd::geteuid().as_raw();
    if access.shared && meta.is_dir() && meta.uid() == uid && meta.mode() & 0o777 == 0o700 {
        // Our own private directory, opened for traversal only: the umask may also have
        // narrowed a fresh one.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711))
            .map_err(|e| Error::io("cannot open the socket directory for traversal", e))?;
        meta = inspect()?;
    }
    let bits = meta.mode() & 0o777;
    let ours = meta.uid() == uid;
    let unsafe_dir = if !meta.file_type().is_dir() {
        Some("it is not a directory".to_string())
    } else if !ours && !access.owners.contains(&meta.uid()) {
        Some(format!(
            "it is owned by uid {} rather than {uid}",
            meta.uid()
        ))
    } else if bits & 0o022 != 0 {
        Some(format!(
            "its mode is {bits:o}, which lets others write in it"
        ))
    } else if ours && !access.shared && bits & 0o077 != 0 {
        Some(format!("its mode is {bits:o}, which lets others in"))
    } else if ours && access.shared && bits & 0o066 != 0 {
        Some(format!("its mode is {bits:o}, which lets others list it"))
    } else {
        None
    };
    if let Some(why) = unsafe_dir {
        return Err(Error::new(
            Status::PermissionDenied,
            format!(
                "Cannot use {} as the socket directory as {why}; it must be a directory of this user with mode 0700 (0711 for a server with allow_uids)",
                dir.display()
            ),
        ));
    }
    Ok(dir)
}

/// A server's files for one ic id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The ic id.
    pub ic_id: String,
    /// The Unix socket clients connect to.
    pub socket: PathBuf,
    /// The lock file a live server holds.
    pub lock: PathBuf,
}

/// FNV-1a, 64 bits (Fowler, Noll, Vo): a stable hash to shorten long ic ids in paths.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Endpoint {
    /// The files for `ic_id` in `dir`. When the socket path would not fit `sockaddr_un`, the
    /// file name is the id's first 32 characters and a hash of the whole id; the hello still
    /// carries the whole id, which the server checks.
    pub fn in_dir(dir: &Path, ic_id: &str) -> Result<Endpoint, Error> {
        validate_ic_id(ic_id)?;
        let fits =
            |name: &str| dir.as_os_str().len() + 1 + name.len() + ".sock".len() <= MAX_SOCKET_PATH;
        let mut name = ic_id.to_string();
        // Only an id longer than its shortened form gains by it (ic ids are ASCII: checked
        // above, so the cut falls between characters).
        if !fits(&name) && ic_id.len() > SHORT_PREFIX + SHORT_SUFFIX {
            name = format!(
                "{}~{:016x}",
                &ic_id[..SHORT_PREFIX],
                fnv1a64(ic_id.as_bytes())
            );
        }
        if !fits(&name) {
            let socket = dir.join(format!("{name}.sock"));
            let room = MAX_SOCKET_PATH.saturating_sub(1 + name.len() + ".sock".len());
            return Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "the socket path {} is {} bytes, and a Unix socket address holds at most {MAX_SOCKET_PATH}: use a socket directory of at most {room} bytes for ic id '{ic_id}' (the socketDir option or {DIR_ENV})",
                    socket.display(),
                    socket.as_os_str().len()
                ),
            ));
        }
        let socket = dir.join(format!("{name}.sock"));
        Ok(Endpoint {
            ic_id: ic_id.to_string(),
            lock: dir.join(format!("{name}.lock")),
            socket,
        })
    }

    /// The files for `ic_id` in `dir`, or in the default socket directory.
    pub fn for_ic_id(
        ic_id: &str,
        dir: Option<&Path>,
        access: Access<'_>,
    ) -> Result<Endpoint, Error> {
        // The path is checked before the directory is made: one that cannot serve is not left
        // behind.
        let dir = dir_path(dir);
        let endpoint = Endpoint::in_dir(&dir, ic_id)?;
        prepare_dir(dir, access)?;
        Ok(endpoint)
    }

    /// Takes the server lock, or says which live server holds it.
    pub fn lock(&self) -> Result<ServerLock, Error> {
        // A lock held by a process that is not alive belongs to a client removing a dead
        // server's files (see `remove_if_stale`) or to a server writing its pid: it is let go
        // within microseconds, so we look again for a while before calling the server live.
        let patience = Instant::now() + Duration::from_millis(100);
        loop {
            match self.take(true)? {
                Taken::Locked(mut lock) => {
                    lock.file
                        .set_len(0)
                        .map_err(|e| Error::io("cannot write the lock file", e))?;
                    write!(lock.file, "{}", std::process::id())
                        .map_err(|e| Error::io("cannot write the lock file", e))?;
                    return Ok(lock);
                }
                Taken::Held { pid: Some(pid) } if alive(pid) || Instant::now() >= patience => {
                    return Err(Error::new(
                        Status::AlreadyServed,
                        format!(
                            "Cannot serve '{}' as a live server (pid {pid}) already serves it at {}",
                            self.ic_id,
                            self.socket.display()
                        ),
                    ));
                }
                Taken::Held { .. } | Taken::Replaced if Instant::now() < patience => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Taken::Held { .. } | Taken::Replaced => {
                    return Err(Error::new(
                        Status::AlreadyServed,
                        format!(
                            "Cannot serve '{}' as another process holds its lock {}",
                            self.ic_id,
                            self.lock.display()
                        ),
                    ));
                }
                Taken::Absent => unreachable!("the lock file is created"),
            }
        }
    }

    /// Removes the socket and lock files of a server that died without removing them (kill -9
    /// leaves them): only when no live server holds the lock, and while holding it ourselves,
    /// so a live or starting server's files are never touched. Returns whether it removed them.
    pub fn remove_if_stale(&self) -> bool {
        // Dropping the lock removes both files while it is still held.
        matches!(self.take(false), Ok(Taken::Locked(_)))
    }

    /// [`Endpoint::remove_if_stale`] once server `pid` has closed a connection: a server
    /// killed outright closes its connections and its lock file one by one as it exits, so
    /// while that process is exiting (or already gone) its lock is waited for: microseconds
    /// as a rule, bounded at 2 s for a machine starved of CPU. A server that closed the
    /// connection and lives on keeps its files, and this returns at once.
    pub fn remove_after_death(&self, pid: i32) -> bool {
        let patience = Instant::now() + Duration::from_secs(2);
        loop {
            match self.remove_after_death_step(pid) {
                Some(removed) => return removed,
                None if Instant::now() >= patience => return false,
                None => std::thread::sleep(Duration::from_micros(100)),
            }
        }
    }

    /// One look of [`Endpoint::remove_after_death`], for a caller that must not wait (the
    /// reactor): `Some(removed)` once decided, `None` while the dying server still holds its
    /// lock (look again soon).
    pub fn remove_after_death_step(&self, pid: i32) -> Option<bool> {
        match self.take(false) {
            Ok(Taken::Locked(_)) => Some(true),
            Ok(Taken::Held { pid: Some(p) }) if p == pid && (exiting(p) || !alive(p)) => None,
            Ok(Taken::Replaced) => None,
            _ => Some(false),
        }
    }

    /// One attempt at the lock file: locked (and still the file the path names), held by
    /// someone else, replaced under us, or absent (only when not `create`).
    fn take(&self, create: bool) -> Result<Taken, Error> {
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&self.lock)
        {
            Ok(file) => file,
            Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Taken::Absent);
            }
            Err(e) => {
                return Err(Error::io(
                    &format!("cannot open the lock file {}", self.lock.display()),
                    e,
                ));
            }
        };
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Ok(Taken::Held {
                    pid: pid.trim().parse().ok(),
                });
            }
            Err((_, e)) => return Err(Error::io("cannot lock the lock file", e)),
        };
        // A previous holder may have unlinked the file we opened just before we locked it:
        // then the path names a new file (or none), and this lock guards nothing.
        let same = match (file.metadata(), fs::metadata(&self.lock)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if !same {
            return Ok(Taken::Replaced);
        }
        Ok(Taken::Locked(ServerLock {
            file,
            endpoint: self.clone(),
        }))
    }
}

/// What one attempt at a lock file found.
enum Taken {
    Locked(ServerLock),
    Held { pid: Option<i32> },
    Replaced,
    Absent,
}

/// Whether process `pid` is on its way out: the kernel sets `PF_EXITING` (0x4, the ninth
/// field of `/proc/<pid>/stat`) as the process begins to exit, before it closes its files.
fn exiting(pid: i32) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The command name, in parentheses, may itself hold spaces and parentheses: the fields
    // that follow start after the last ')': state, ppid, pgrp, session, tty_nr, tpgid, flags.
    let Some(rest) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
        return false;
    };
    rest.split_whitespace()
        .nth(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_EXITING != 0)
}

/// Whether process `pid` exists. A zombie counts as alive, which errs on the side of "live":
/// its files, and so its lock, are already closed, so it holds no lock to be mistaken about.
fn alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) != Err(Errno::ESRCH)
}

/// Held by a live server; dropping it removes the socket and the lock file.
#[derive(Debug)]
pub struct ServerLock {
    file: Flock<File>,
    endpoint: Endpoint,
}

impl ServerLock {
    /// Removes a stale socket file, which only a lock holder may do.
    pub fn clear_stale_socket(&self) -> Result<(), Error> {
        match fs::remove_file(&self.endpoint.socket) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(
                &format!(
                    "cannot remove the stale socket {}",
                    self.endpoint.socket.display()
                ),
                e,
            )),
        }
    }

    /// Restricts the socket to its owner (the directory already does; this is the second
    /// lock), or — for a server with an allow-list (`shared`) — opens it to all, leaving the
    /// decision to the server's check of each client's credentials.
    pub fn restrict_socket(&self, shared: bool) -> Result<(), Error> {
        let mode = if shared { 0o666 } else { 0o600 };
        fs::set_permissions(&self.endpoint.socket, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(&format!("cannot set the socket's mode to {mode:o}"), e))
    }
}

impl Drop for ServerLock {
    fn drop(&mut self) {
        // Remove the files while still holding the lock, so no new server's files are removed.
        let _ = fs::remove_file(&self.endpoint.socket);
        let _ = fs::remove_file(&self.endpoint.lock);
        let _ = self.file.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ic_ids_outside_the_alphabet_or_length_are_refused_by_name() {
        for bad in ["", "a/b", "a b", "é", &"x".repeat(101)] {
            let e = validate_ic_id(bad).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument);
            assert!(e.message().contains(&format!("{bad:?}")), "{}", e.message());
        }
        for good in ["a", "kv.store_1-x", &"x".repeat(100)] {
            validate_ic_id(good).unwrap();
        }
    }

    #[test]
    fn a_long_ic_id_gets_a_short_stable_distinct_socket_name() {
        let dir = Path::new("/run/user/1000/shmcall");
        let a = Endpoint::in_dir(dir, &"a".repeat(100)).unwrap();
        let b = Endpoint::in_dir(dir, &format!("{}b", "a".repeat(99))).unwrap();
        assert!(a.socket.as_os_str().len() <= MAX_SOCKET_PATH);
        assert_ne!(a.socket, b.socket);
        assert_eq!(a, Endpoint::in_dir(dir, &"a".repeat(100)).unwrap());
        assert_eq!(
            Endpoint::in_dir(dir, "kv").unwrap().socket,
            dir.join("kv.sock")
        );
    }

    #[test]
    fn a_socket_directory_too_long_for_any_name_is_refused_naming_the_path_and_limit() {
        // Every id length around the shortened form's: none may panic, and each either fits
        // or is refused with the path and the room there is.
        for dir_len in [60, 80, 90, 100, 105, 106, 120, 300] {
            let dir = PathBuf::from(format!("/{}", "d".repeat(dir_len - 1)));
            for id_len in [1, 5, 31, 32, 33, 48, 49, 50, 100] {
                let id = "i".repeat(id_len);
                match Endpoint::in_dir(&dir, &id) {
                    Ok(e) => assert!(e.socket.as_os_str().len() <= MAX_SOCKET_PATH),
                    Err(e) => {
                        assert_eq!(e.status(), Status::InvalidArgument);
                        let m = e.message();
                        assert!(m.contains(&dir.display().to_string()), "{m}");
                        assert!(m.contains("at most 107"), "{m}");
                        assert!(m.contains(&format!("'{id}'")), "{m}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_socket_directory_that_cannot_serve_is_not_made() {
        let dir = std::env::temp_dir().join(format!(
            "shmcall-long-{}-{}",
            std::process::id(),
            "d".repeat(100)
        ));
        let err = Endpoint::for_ic_id("kv", Some(&dir), Access::default()).unwrap_err();
        let made = dir.exists();
        let _ = fs::remove_dir(&dir);
        assert_eq!(err.status(), Status::InvalidArgument);
        assert!(!made, "{} was made", dir.display());
    }
}
