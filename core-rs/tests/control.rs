//! The control channel under hostile traffic, and who may reach it (docs/protocol.md): a real
//! `Server` runs in this process and is spoken to through raw Unix sockets, so that frames and
//! descriptors no `Client` would send can be sent, and the server's descriptors counted.

use std::ffi::OsStr;
use std::fs::{File, Permissions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrLike, UnixAddr, sendmsg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, User, fork, geteuid, pipe2};
use shmcall_core::channel::send_with_fd;
use shmcall_core::segment::Segment;
use shmcall_core::wire::{self, HEADER_LEN, MAX_PAYLOAD, Message, WireError};
use shmcall_core::{
    Call, Client, Command, ConnInfo, ConnectOptions, Copying, Error, Geometry, Handler,
    PROTOCOL_MAJOR, PROTOCOL_MINOR, ServeOptions, Server, Status,
};

/// Upper bound of any single wait.
const WAIT: Duration = Duration::from_secs(10);

/// A test that counts the process's descriptors holds this for writing; every other test holds
/// it for reading, so that no other test opens or closes descriptors while it counts.
static FDS: RwLock<()> = RwLock::new(());

#[allow(dead_code, reason = "held only to be dropped")]
enum FdLock {
    Shared(RwLockReadGuard<'static, ()>),
    Sole(RwLockWriteGuard<'static, ()>),
}

/// A refusal the handler heard: the peer's uid (if known), the status, the reason.
type Refusal = (Option<u32>, Status, String);

/// What the server's handler saw.
#[derive(Default)]
struct Seen {
    opened: Mutex<Vec<ConnInfo>>,
    execs: AtomicUsize,
    closed: AtomicUsize,
    refused: Mutex<Vec<Refusal>>,
}

/// Records every call, and echoes every command.
struct Counting(Arc<Seen>);

impl Handler for Counting {
    type Context = ();

    fn open(&self, conn: &ConnInfo) -> Result<(), Error> {
        self.0.opened.lock().unwrap().push(*conn);
        Ok(())
    }

    fn exec(&self, mut command: Command, _: &ConnInfo, _: &()) {
        self.0.execs.fetch_add(1, Ordering::SeqCst);
        let (input, mut output) = command.areas();
        let data = input.to_vec();
        output.write(&data);
        command.finish(0, data.len());
    }

    fn close(&self, _: &ConnInfo, _: &()) {
        self.0.closed.fetch_add(1, Ordering::SeqCst);
    }

    fn refused(&self, peer: Option<&ConnInfo>, why: &Error) {
        let r = (peer.map(|p| p.uid), why.status(), why.message().to_string());
        self.0.refused.lock().unwrap().push(r);
    }
}

/// A server on its own directory and ic id.
struct Fixture {
    server: Server,
    seen: Arc<Seen>,
    ic_id: String,
    sock_dir: PathBuf,
    dir: PathBuf,
    /// Let go only after `drop` closed the server, whose threads hold descriptors until then.
    _fds: FdLock,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.close();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        Fixture::build(tag, ServeOptions::default(), false)
    }

    /// `options.socket_dir`, when given, is taken relative to the fixture's own directory.
    /// With `count_fds`, no other test runs until this one ends.
    fn build(tag: &str, mut options: ServeOptions, count_fds: bool) -> Fixture {
        let fds = match count_fds {
            true => FdLock::Sole(FDS.write().unwrap_or_else(|p| p.into_inner())),
            false => FdLock::Shared(FDS.read().unwrap_or_else(|p| p.into_inner())),
        };
        let name = format!("shmcall-control-{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let sock_dir = dir.join(options.socket_dir.unwrap_or_default());
        options.socket_dir = Some(sock_dir.clone());
        let seen = Arc::new(Seen::default());
        let server = Server::serve(tag, Counting(seen.clone()), options).expect("serve");
        let ic_id = tag.to_string();
        let _fds = fds;
        Fixture {
            server,
            seen,
            ic_id,
            sock_dir,
            dir,
            _fds,
        }
    }

    fn raw(&self) -> UnixStream {
        UnixStream::connect(self.server.socket_path()).expect("connect to the server's socket")
    }

    fn hello(&self) -> Vec<u8> {
        wire::encode(&Message::Hello {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
            ic_id: self.ic_id.clone(),
            geometry: Geometry::default(),
        })
    }

    fn opened(&self) -> usize {
        self.seen.opened.lock().unwrap().len()
    }

    fn closed(&self) -> usize {
        self.seen.closed.load(Ordering::SeqCst)
    }

    fn refusals(&self) -> Vec<Refusal> {
        self.seen.refused.lock().unwrap().clone()
    }

    /// Waits for the `n`th refusal and returns it.
    fn refusal(&self, n: usize) -> Refusal {
        until(&format!("refusal {n}"), || self.refusals().len() >= n);
        self.refusals()[n - 1].clone()
    }

    /// A well-behaved client makes a round trip: what came before did not break the server.
    fn serves_a_client(&self) {
        let socket_dir = Some(self.sock_dir.clone());
        let options = ConnectOptions {
            socket_dir,
            ..ConnectOptions::default()
        };
        let client = Client::connect(&self.ic_id, &options).expect("a well-behaved client");
        let mut call = Call::default();
        (call.code, call.input, call.output_len) = (1, &b"still serving"[..], 16);
        let out = client.execute(&call, &mut Copying).expect("a round trip");
        assert_eq!(out.output, b"still serving");
    }
}

/// Polls `done` until it holds; panics naming `what` after `WAIT`.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every frame the server sends until it closes the socket; panics if it keeps it open.
fn until_closed(stream: &UnixStream) -> Vec<Message> {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut bytes = Vec::new();
    match (&*stream).read_to_end(&mut bytes) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close the socket within {WAIT:?}: {e}"),
    }
    let (mut rest, mut frames) = (bytes.as_slice(), Vec::new());
    loop {
        match wire::read_message(&mut rest) {
            Ok(m) => frames.push(m),
            Err(WireError::Closed) => return frames,
            Err(e) => panic!("the server sent a bad frame: {e}; before it {frames:?}"),
        }
    }
}

/// The one refusal the server sent before closing the socket.
fn refused_then_closed(stream: &UnixStream) -> (Status, String) {
    match until_closed(stream).as_slice() {
        [Message::Refuse { status, reason }] => (
            Status::from_code(*status).expect("a library status"),
            reason.clone(),
        ),
        other => panic!("expected one refusal, then the end; got {other:?}"),
    }
}

/// Sends `bytes` first (then ends our side if `eof`), and checks that the server refuses them
/// as `why`, tells the handler so, closes the socket, and opens nothing.
fn refuses(fx: &Fixture, bytes: &[u8], eof: bool, why: &str) {
    let n = fx.refusals().len() + 1;
    let s = fx.raw();
    (&s).write_all(bytes).unwrap();
    if eof {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let (status, reason) = refused_then_closed(&s);
    assert!(reason.contains(why), "{reason:?} does not say {why:?}");
    assert_eq!(status, Status::ProtocolViolation, "{reason}");
    let me = Some(geteuid().as_raw());
    assert_eq!(fx.refusal(n), (me, status, reason));
    assert_eq!(fx.opened(), 0, "open ran for a refused client");
}

#[test]
fn a_truncated_header_or_a_short_payload_is_refused_and_the_server_serves_on() {
    let fx = Fixture::new("truncated");
    let hello = fx.hello();
    refuses(&fx, &hello[..5], true, "ended inside a frame");
    refuses(&fx, &hello[..hello.len() - 3], true, "ended inside a frame");
    fx.serves_a_client();
}

#[test]
fn a_frame_beyond_its_kinds_ceiling_is_refused_without_waiting_for_its_payload() {
    let fx = Fixture::new("oversized");
    // Headers only, and our side left open: a server that waited for the payload would hang.
    let mut hello = fx.hello();
    hello[4..8].copy_from_slice(&4096u32.to_le_bytes());
    let why = "4096 bytes exceeds the maximum";
    refuses(&fx, &hello[..HEADER_LEN], false, why);
    let mut exec = wire::encode_exec(1, 1, 0, 0, b"");
    exec[4..8].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
    let why = format!("{} bytes exceeds the maximum", MAX_PAYLOAD + 1);
    refuses(&fx, &exec[..HEADER_LEN], false, &why);
    fx.serves_a_client();
}

#[test]
fn a_wrong_magic_or_an_unknown_kind_is_refused_by_name_and_the_server_serves_on() {
    let fx = Fixture::new("magic");
    let mut bad_magic = fx.hello();
    bad_magic[..2].copy_from_slice(&0xbeefu16.to_le_bytes());
    refuses(&fx, &bad_magic, false, "magic 0xbeef is not 0x4353");
    let mut unknown = fx.hello();
    unknown[2] = 99;
    refuses(&fx, &unknown, false, "kind 99 is unknown");
    fx.serves_a_client();
}

/// Where this process's descriptors point.
fn open_fds() -> Vec<String> {
    let entries = std::fs::read_dir("/proc/self/fd").unwrap();
    let links = entries.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok());
    links.map(|p| p.display().to_string()).collect()
}

fn segment_size() -> u64 {
    Geometry::default().layout().unwrap().size
}

const SEALED: SealFlag = SealFlag::F_SEAL_SHRINK.union(SealFlag::F_SEAL_GROW);

fn memfd(size: u64, seals: SealFlag) -> OwnedFd {
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    let file = File::from(memfd_create("control-test", flags).unwrap());
    file.set_len(size).unwrap();
    fcntl(file.as_fd(), FcntlArg::F_ADD_SEALS(seals)).unwrap();
    file.into()
}

fn plain_file(fx: &Fixture) -> OwnedFd {
    let file = File::create(fx.dir.join("plain")).unwrap();
    file.set_len(segment_size()).unwrap();
    file.into()
}

/// Sends `frame` with every descriptor in `fds` attached (and no control message if none).
fn send_with_fds(stream: &UnixStream, frame: &[u8], fds: &[OwnedFd]) {
    let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [std::io::IoSlice::new(frame)];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsg = &cmsg[..usize::from(!raw.is_empty())];
    let sent = sendmsg::<()>(stream.as_raw_fd(), &iov, cmsg, MsgFlags::empty(), None).unwrap();
    (&*stream).write_all(&frame[sent..]).unwrap();
}

/// Sends a hello carrying `fds` and checks that the server refuses it as `why` and keeps
/// nothing: once our copies and our socket are closed, the process has no more descriptors
/// than before they were made.
fn refused_keeping_nothing(fx: &Fixture, fds: Vec<OwnedFd>, why: &str) {
    let n = fx.refusals().len() + 1;
    let before = open_fds().len() - fds.len();
    let s = fx.raw();
    send_with_fds(&s, &fx.hello(), &fds);
    drop(fds);
    let (status, reason) = refused_then_closed(&s);
    drop(s);
    let heard = fx.refusal(n);
    // The server drops the connection's socket after telling the handler: wait for that.
    let deadline = Instant::now() + WAIT;
    while open_fds().len() > before {
        let now = open_fds();
        let (kept, late) = (now.len() - before, Instant::now() >= deadline);
        assert!(!late, "{why:?}: {kept} kept, of {now:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(reason.contains(why), "{reason:?} ({status}), not {why:?}");
    assert_eq!(status, Status::ProtocolViolation, "{reason}");
    assert_eq!(heard.2, reason, "the handler heard another reason");
}

#[test]
fn hello_descriptors_of_the_wrong_kind_are_refused_each_by_name_and_none_is_kept() {
    let fx = Fixture::build("wrong-fds", ServeOptions::default(), true);
    let size = segment_size();
    let (pipe, _) = pipe2(OFlag::O_CLOEXEC).unwrap();
    refused_keeping_nothing(&fx, vec![pipe], "is not a memfd");
    let unsealed = memfd(size, SealFlag::empty());
    let why = "not sealed against shrinking and growing";
    refused_keeping_nothing(&fx, vec![unsealed], why);
    let why = format!("is 4096 bytes but its geometry needs {size}");
    refused_keeping_nothing(&fx, vec![memfd(4096, SEALED)], &why);
    refused_keeping_nothing(&fx, vec![plain_file(&fx)], "segment");
    assert_eq!(fx.opened(), 0);
    fx.serves_a_client();
}

#[test]
fn a_regular_file_is_refused_as_not_a_memfd() {
    let fx = Fixture::build("plain-fd", ServeOptions::default(), true);
    refused_keeping_nothing(&fx, vec![plain_file(&fx)], "is not a memfd");
}

#[test]
fn more_descriptors_than_a_hello_carries_are_refused_by_name_and_none_is_kept() {
    let fx = Fixture::build("five-fds", ServeOptions::default(), true);
    let five = (0..5).map(|_| memfd(segment_size(), SEALED)).collect();
    refused_keeping_nothing(&fx, five, "carried 5 descriptors instead of one segment");
    fx.serves_a_client();
}

#[test]
fn a_hello_without_a_descriptor_or_with_two_is_refused_and_none_is_kept() {
    let fx = Fixture::build("fd-count", ServeOptions::default(), true);
    refused_keeping_nothing(&fx, vec![], "carried 0 descriptors");
    let two = vec![memfd(segment_size(), SEALED), memfd(segment_size(), SEALED)];
    refused_keeping_nothing(&fx, two, "carried 2 descriptors");
    assert_eq!(fx.opened(), 0);
    fx.serves_a_client();
}

/// Takes `stream` through the handshake, on a fresh segment.
fn welcomed(fx: &Fixture, stream: &UnixStream) -> Segment {
    let (segment, fd) = Segment::create(&Geometry::default(), "raw", PROTOCOL_MAJOR).unwrap();
    send_with_fd(stream, &fx.hello(), fd.as_fd()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    match wire::read_message(&mut &*stream) {
        Ok(Message::Welcome { major, .. }) => assert_eq!(major, PROTOCOL_MAJOR),
        other => panic!("expected a welcome, got {other:?}"),
    }
    segment
}

#[test]
fn a_second_hello_drops_the_connection_and_later_frames_run_nothing() {
    let fx = Fixture::new("hello-twice");
    let s = fx.raw();
    let _segment = welcomed(&fx, &s);
    assert_eq!(fx.opened(), 1);
    let (_, again) = Segment::create(&Geometry::default(), "again", PROTOCOL_MAJOR).unwrap();
    send_with_fd(&s, &fx.hello(), again.as_fd()).unwrap();
    let (status, reason) = refused_then_closed(&s);
    assert_eq!(status, Status::ProtocolViolation);
    let why = "unexpected hello frame after the handshake";
    assert!(reason.contains(why), "{reason}");
    until("close after the violation", || fx.closed() == 1);
    assert_eq!(fx.refusal(1).2, reason);
    // The server shut the socket down: a backup command cannot even be sent.
    let exec = wire::encode_exec(1, 1, 0, 8, b"late");
    assert!((&s).write_all(&exec).is_err(), "a late command was taken");
    fx.serves_a_client();
    let execs = fx.seen.execs.load(Ordering::SeqCst);
    assert_eq!(execs, 1, "only the good client's command ran");
    assert_eq!((fx.opened(), fx.refusals().len()), (2, 1));
}

#[test]
fn frames_after_a_refusal_are_not_taken() {
    let fx = Fixture::new("after-refusal");
    let s = fx.raw();
    (&s).write_all(&[0u8; HEADER_LEN]).unwrap();
    refused_then_closed(&s);
    fx.refusal(1);
    let (_, fd) = Segment::create(&Geometry::default(), "late", PROTOCOL_MAJOR).unwrap();
    let late = send_with_fd(&s, &fx.hello(), fd.as_fd());
    assert!(late.is_err(), "a hello after the refusal was taken");
    fx.serves_a_client();
    assert_eq!((fx.opened(), fx.refusals().len()), (1, 1));
}

/// Handshakes that stall: nothing sent, half a header, a header and half a payload.
fn stalled(fx: &Fixture) -> [UnixStream; 3] {
    let hello = fx.hello();
    [0, 4, HEADER_LEN + 4].map(|cut| {
        let s = fx.raw();
        (&s).write_all(&hello[..cut]).unwrap();
        s
    })
}

fn with_handshake_timeout(tag: &str, timeout: Duration) -> Fixture {
    let options = ServeOptions {
        handshake_timeout: timeout,
        ..ServeOptions::default()
    };
    Fixture::build(tag, options, false)
}

#[test]
fn a_handshake_that_never_completes_ends_at_its_deadline_while_others_are_served() {
    let timeout = Duration::from_millis(1500);
    let fx = with_handshake_timeout("stall", timeout);
    let start = Instant::now();
    let stalls = stalled(&fx);
    fx.serves_a_client();
    assert_eq!(
        fx.refusals(),
        [],
        "a stalled handshake ended before its deadline"
    );
    for s in &stalls {
        refused_then_closed(s);
        let took = start.elapsed();
        let bound = timeout + Duration::from_secs(3);
        assert!(took >= timeout && took < bound, "ended after {took:?}");
    }
    fx.refusal(3);
    assert_eq!((fx.opened(), fx.refusals().len()), (1, 3));
}

#[test]
fn a_handshake_past_its_deadline_is_refused_with_a_reason_that_says_so() {
    let fx = with_handshake_timeout("deadline", Duration::from_millis(200));
    let told: Vec<_> = stalled(&fx).iter().map(refused_then_closed).collect();
    fx.refusal(3);
    for (n, (status, reason)) in told.iter().enumerate() {
        let ok = reason.contains("within the handshake's deadline")
            && *status == Status::ProtocolViolation;
        assert!(ok, "stall {n}: {reason:?} ({status}); all told {told:?}");
    }
}

/// The uid and gid of `shmcall-test`, created if absent; `None`, with the reason printed, when
/// this process cannot act as another user.
fn other_user() -> Option<(u32, u32)> {
    if !geteuid().is_root() {
        eprintln!("skipped: only root can run a client as another uid");
        return None;
    }
    static USER: OnceLock<(u32, u32)> = OnceLock::new();
    Some(*USER.get_or_init(|| {
        let find = || {
            let user = User::from_name("shmcall-test").ok().flatten()?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        };
        if let Some(ids) = find() {
            return ids;
        }
        let out = Process::new("useradd")
            .args("--system --no-create-home --shell /usr/sbin/nologin shmcall-test".split(' '))
            .output();
        // Another process may have made it meanwhile: trust the user database, not the status.
        find().unwrap_or_else(|| panic!("cannot create the user shmcall-test: {out:?}"))
    }))
}

/// A forked child, killed and reaped unless it was reaped already.
struct Forked(Option<Pid>);

impl Drop for Forked {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

/// Connects to `path` as another user: a forked child takes `uid` and `gid` and calls `connect`
/// on a socket made here, then exits. The kernel records the credentials of the process that
/// connects, so the server sees `uid`; the socket, shared with the child, is then ours to use.
fn connect_as((uid, gid): (u32, u32), path: &Path) -> Result<UnixStream, Errno> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let flags = SockFlag::SOCK_CLOEXEC;
    let sock = socket(AddressFamily::Unix, SockType::Stream, flags, None).unwrap();
    let addr = UnixAddr::new(path).unwrap();
    let (addr_ptr, addr_len) = (SockaddrLike::as_ptr(&addr), addr.len());
    const NO_UID: i32 = 255;
    // SAFETY: the child below makes only raw system calls on memory prepared before the fork,
    // all async-signal-safe, so no lock another thread held at the fork can stop it.
    let mut child = match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            // SAFETY: plain system calls with valid arguments (`addr` and `sock` live on), and
            // `_exit` ends the child without running the parent's destructors or exit hooks.
            unsafe {
                let code = if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>()) != 0
                    || libc::syscall(libc::SYS_setgid, libc::c_long::from(gid)) != 0
                    || libc::syscall(libc::SYS_setuid, libc::c_long::from(uid)) != 0
                {
                    NO_UID
                } else if libc::connect(sock.as_raw_fd(), addr_ptr, addr_len) != 0 {
                    Errno::last_raw()
                } else {
                    0
                };
                libc::_exit(code)
            }
        }
        ForkResult::Parent { child } => Forked(Some(child)),
    };
    let mut status = None;
    until("the forked child's exit", || {
        let pid = child.0.expect("not reaped yet");
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::StillAlive => {}
            reaped => (status, child.0) = (Some(reaped), None),
        }
        status.is_some()
    });
    match status.unwrap() {
        WaitStatus::Exited(_, 0) => Ok(UnixStream::from(sock)),
        WaitStatus::Exited(_, NO_UID) => panic!("the forked child could not take uid {uid}"),
        WaitStatus::Exited(_, errno) => Err(Errno::from_raw(errno)),
        other => panic!("the forked child ended with {other:?}"),
    }
}

/// A server whose socket directory the library creates, inside the fixture's own directory,
/// which anyone may traverse: the library's directory is then the only barrier.
fn own_dir_fixture(tag: &str, allow_uids: Vec<u32>) -> Fixture {
    let mut options = ServeOptions::default();
    (options.socket_dir, options.allow_uids) = (Some("sock".into()), allow_uids);
    let fx = Fixture::build(tag, options, false);
    std::fs::set_permissions(&fx.dir, Permissions::from_mode(0o711)).unwrap();
    fx
}

/// Sets the modes of the socket directory and the socket.
fn chmod(fx: &Fixture, dir: u32, socket: u32) {
    std::fs::set_permissions(&fx.sock_dir, Permissions::from_mode(dir)).unwrap();
    std::fs::set_permissions(fx.server.socket_path(), Permissions::from_mode(socket)).unwrap();
}

/// Runs `shmcall-peer` as another user, and returns what it printed.
fn peer_as((uid, gid): (u32, u32), args: &[&OsStr]) -> String {
    struct Reaped(Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut peer = Process::new(env!("CARGO_BIN_EXE_shmcall-peer"));
    // With stdin closed, it exits once it has said how connecting went.
    peer.args(args).uid(uid).gid(gid);
    peer.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut peer = Reaped(peer.spawn().expect("spawn shmcall-peer"));
    until("the peer's exit", || peer.0.try_wait().unwrap().is_some());
    let (mut out, mut stdout) = (String::new(), peer.0.stdout.take().unwrap());
    stdout.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_socket_is_owner_only_and_another_uid_cannot_reach_it() {
    let Some(other) = other_user() else { return };
    let fx = own_dir_fixture("private", Vec::new());
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(&fx.sock_dir), 0o700, "socket directory");
    assert_eq!(mode(fx.server.socket_path()), 0o600, "socket");
    let path = fx.server.socket_path();
    let err = connect_as(other, path).unwrap_err();
    assert_eq!(err, Errno::EACCES, "through the directory");
    // The library's own client, run as that uid, refuses the directory before connecting.
    let args = ["client", &fx.ic_id, "--dir", fx.sock_dir.to_str().unwrap()];
    let out = peer_as(other, &args.map(OsStr::new));
    assert!(out.starts_with("error PERMISSION_DENIED"), "{out}");
    let why = format!("owned by uid 0 rather than {}", other.0);
    assert!(out.contains(&why), "{out}");
    // Past the directory, the socket's own mode stops it.
    chmod(&fx, 0o711, 0o600);
    let err = connect_as(other, path).unwrap_err();
    assert_eq!(err, Errno::EACCES, "through the socket");
    chmod(&fx, 0o700, 0o600);
    fx.serves_a_client();
    assert_eq!(fx.refusals(), [], "the server heard from another uid");
}

#[test]
fn another_uid_that_reaches_the_socket_is_refused_by_its_credentials() {
    let Some(other) = other_user() else { return };
    let fx = own_dir_fixture("creds", Vec::new());
    chmod(&fx, 0o711, 0o666);
    let s = connect_as(other, fx.server.socket_path()).expect("connect through the opened path");
    // No hello: the server decides on the kernel's credentials alone.
    let (status, reason) = refused_then_closed(&s);
    assert_eq!(status, Status::PermissionDenied, "{reason}");
    let why = format!("runs as uid {}", other.0);
    assert!(reason.contains(&why), "{reason}");
    assert_eq!(fx.refusal(1), (Some(other.0), status, reason));
    assert_eq!(fx.opened(), 0);
    chmod(&fx, 0o700, 0o600);
    fx.serves_a_client();
}

#[test]
fn another_uid_on_the_allow_list_is_served() {
    let Some(other) = other_user() else { return };
    let fx = own_dir_fixture("allowed", vec![other.0]);
    // The allow-list opens the way itself: the directory to traversal (not listing), the
    // socket to all; the credential check decides.
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(&fx.sock_dir), 0o711, "socket directory");
    assert_eq!(mode(fx.server.socket_path()), 0o666, "socket");
    // The library's own client, run as that uid and allow-listing the server's, is served.
    let dir = fx.sock_dir.to_str().unwrap();
    let args = ["client", &fx.ic_id, "--dir", dir, "--allow-uid", "0"];
    let out = peer_as(other, &args.map(OsStr::new));
    assert!(out.starts_with("ready"), "{out}");
    until("close of the peer's connection", || fx.closed() == 1);
    // Without allow-listing the server's uid, it refuses the directory of another user.
    let unlisted: Vec<&OsStr> = args[..4].iter().map(OsStr::new).collect();
    let out = peer_as(other, &unlisted);
    assert!(out.starts_with("error PERMISSION_DENIED"), "{out}");
    let s = connect_as(other, fx.server.socket_path()).expect("connect through the opened path");
    let _segment = welcomed(&fx, &s);
    let conn = fx.seen.opened.lock().unwrap()[0];
    assert_eq!((conn.uid, conn.gid), other);
    // A command over the control channel makes a round trip on that connection.
    let exec = wire::encode_exec(7, 1, 0, 8, b"allowed");
    (&s).write_all(&exec).unwrap();
    let reply = match wire::read_message(&mut &s) {
        Ok(Message::Reply(r)) => (r.token, r.status, r.output),
        other => panic!("expected a reply, got {other:?}"),
    };
    assert_eq!(reply, (7, 0, b"allowed".to_vec()));
    drop(s);
    until("close of the allowed connection", || fx.closed() == 2);
    assert_eq!(fx.refusals(), []);
}
