//! The only `unsafe` of the module: the `pam_sm_*` entry points libpam calls, the libpam
//! functions they use (`pam_get_item`, `pam_set_data`, `pam_get_data`, `pam_syslog`), a
//! non-blocking `connect`, the peer's uid (`SO_PEERCRED`), `send` without `SIGPIPE`, and a
//! volatile wipe.
//!
//! Soundness rests on these facts, all local to this file:
//! - a [`Pam`] wraps the non-null handle libpam passed to the entry point that built it and
//!   lives only for that call (it borrows a local), so it never outlives the handle;
//! - data handed to `pam_set_data` is a leaked `Box<Kept>` whose only owner from then on
//!   is libpam: [`cleanup`] (called by libpam at `pam_end` or on replacement) rebuilds and
//!   drops it exactly once, and [`Pam::with_kept_password`] only borrows it;
//! - no entry point unwinds into C: each runs its body under `catch_unwind`.
//!
//! Linking: `-l:libpam.so.0` (the runtime library of Debian's `libpam0g`, always installed)
//! instead of the `libpam.so` development symlink that only `libpam0g-dev` ships, as the
//! daemon's PAM client does.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::atomic::{Ordering, compiler_fence};

use crate::args::Args;
use crate::secret::{Kept, Secret};

// Values from Linux-PAM's <security/_pam_types.h> (the ABI of libpam.so.0).
pub const PAM_SUCCESS: c_int = 0;
pub const PAM_IGNORE: c_int = 25;
const PAM_SERVICE: c_int = 1;
const PAM_USER: c_int = 2;
const PAM_AUTHTOK: c_int = 6;
const PAM_OLDAUTHTOK: c_int = 7;
/// `pam_chauthtok`'s second pass, when the new password is set (the first is a check).
pub const PAM_UPDATE_AUTHTOK: c_int = 0x2000;

pub const LOG_WARNING: c_int = libc::LOG_WARNING;
pub const LOG_NOTICE: c_int = libc::LOG_NOTICE;
pub const LOG_INFO: c_int = libc::LOG_INFO;
pub const LOG_DEBUG: c_int = libc::LOG_DEBUG;

/// The name our kept password is stored under in the PAM handle.
const DATA_NAME: &CStr = c"pam_agentkeys.password";

/// libpam's opaque handle.
#[repr(C)]
pub struct PamHandle {
    _private: [u8; 0],
}

type Cleanup = unsafe extern "C" fn(*mut PamHandle, *mut c_void, c_int);

#[link(name = "libpam.so.0", kind = "dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    fn pam_get_item(pamh: *const PamHandle, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_set_data(
        pamh: *mut PamHandle,
        name: *const c_char,
        data: *mut c_void,
        cleanup: Option<Cleanup>,
    ) -> c_int;
    fn pam_get_data(pamh: *const PamHandle, name: *const c_char, data: *mut *const c_void)
    -> c_int;
    fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
}

/// Which password item to read.
#[derive(Debug, Clone, Copy)]
pub enum Token {
    /// `PAM_AUTHTOK`: the password typed for this login (auth) or the new one (password).
    Current,
    /// `PAM_OLDAUTHTOK`: the old password during a change.
    Old,
}

/// The handle of one entry-point call.
#[derive(Debug)]
pub struct Pam<'a> {
    handle: NonNull<PamHandle>,
    _call: PhantomData<&'a ()>,
}

impl Pam<'_> {
    fn item_ptr(&self, item: c_int) -> Option<NonNull<c_char>> {
        let mut out: *const c_void = ptr::null();
        // SAFETY: the handle is valid for this call (module docs); `out` is a valid
        // location for the pointer libpam writes. The item stays owned by libpam.
        let rc = unsafe { pam_get_item(self.handle.as_ptr(), item, &mut out) };
        if rc != PAM_SUCCESS {
            return None;
        }
        NonNull::new(out.cast_mut().cast::<c_char>())
    }

    /// A string item (user, service) as bytes, copied.
    fn string_item(&self, item: c_int) -> Option<Vec<u8>> {
        let p = self.item_ptr(item)?;
        // SAFETY: string items are NUL-terminated C strings owned by libpam, valid until
        // the item is set again, which nothing does during this call.
        let s = unsafe { CStr::from_ptr(p.as_ptr()) };
        Some(s.to_bytes().to_vec())
    }

    /// `PAM_USER`, if set and UTF-8. Never prompts (unlike `pam_get_user`).
    pub fn user(&self) -> Option<String> {
        String::from_utf8(self.string_item(PAM_USER)?).ok()
    }

    /// `PAM_SERVICE` (for logs).
    pub fn service(&self) -> String {
        self.string_item(PAM_SERVICE)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// A password item, copied into a wiped-on-drop buffer. `None` when no earlier module
    /// set it (this module never prompts).
    pub fn token(&self, which: Token) -> Option<Secret> {
        let item = match which {
            Token::Current => PAM_AUTHTOK,
            Token::Old => PAM_OLDAUTHTOK,
        };
        let p = self.item_ptr(item)?;
        // SAFETY: as in `string_item`; libpam wipes its own copy at `pam_end`.
        let s = unsafe { CStr::from_ptr(p.as_ptr()) };
        Some(Secret::copy_of(s.to_bytes()))
    }

    /// Keeps `kept` (a password and its user) in the handle until `pam_end` (or
    /// [`Pam::forget_password`]); [`cleanup`] wipes it. False when libpam refused (then it
    /// is wiped here).
    pub fn keep_password(&self, kept: Kept) -> bool {
        let data = Box::into_raw(Box::new(kept)).cast::<c_void>();
        // SAFETY: handle valid; name is a static C string; on success libpam owns `data`
        // and calls `cleanup` with it exactly once.
        let rc = unsafe {
            pam_set_data(
                self.handle.as_ptr(),
                DATA_NAME.as_ptr(),
                data,
                Some(cleanup),
            )
        };
        if rc != PAM_SUCCESS {
            // SAFETY: libpam did not take `data`; we made it with Box::into_raw above.
            drop(unsafe { Box::from_raw(data.cast::<Kept>()) });
            return false;
        }
        true
    }

    /// Runs `f` with what [`Pam::keep_password`] kept, if anything.
    pub fn with_kept_password<T>(&self, f: impl FnOnce(Option<&Kept>) -> T) -> T {
        let mut out: *const c_void = ptr::null();
        // SAFETY: handle valid; `out` is a valid location.
        let rc = unsafe { pam_get_data(self.handle.as_ptr(), DATA_NAME.as_ptr(), &mut out) };
        if rc != PAM_SUCCESS || out.is_null() {
            return f(None);
        }
        // SAFETY: the only data stored under DATA_NAME is a `Box<Kept>` (keep_password),
        // alive until libpam calls `cleanup`, which cannot happen during this borrow: only
        // `pam_set_data`/`pam_end` do that, and neither runs inside `f`.
        let kept = unsafe { &*out.cast::<Kept>() };
        f(Some(kept))
    }

    /// Drops (and so wipes) the kept password now instead of at `pam_end`.
    pub fn forget_password(&self) {
        // SAFETY: handle valid; replacing the entry makes libpam call `cleanup` on the old
        // data (PAM_DATA_REPLACE); NULL data with no cleanup is a valid entry.
        let _ = unsafe {
            pam_set_data(
                self.handle.as_ptr(),
                DATA_NAME.as_ptr(),
                ptr::null_mut(),
                None,
            )
        };
    }

    /// Logs `msg` through `pam_syslog` (syslog, `LOG_AUTHPRIV`, prefixed with the module
    /// and service). Callers never put a secret in `msg`.
    pub fn log(&self, priority: c_int, msg: &str) {
        let text = CString::new(msg.replace('\0', "?")).unwrap_or_default();
        // SAFETY: handle valid; the format is a static "%s" and its one argument a
        // NUL-terminated string that outlives the call.
        unsafe {
            pam_syslog(
                self.handle.as_ptr(),
                priority,
                c"%s".as_ptr(),
                text.as_ptr(),
            )
        };
    }
}

/// libpam's cleanup of our data: rebuild the box and drop it (the `Secret` wipes itself).
unsafe extern "C" fn cleanup(_pamh: *mut PamHandle, data: *mut c_void, _status: c_int) {
    if data.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the only data registered with this cleanup is a `Box<Kept>` leaked by
        // `keep_password`, and libpam calls cleanup once per registration.
        drop(unsafe { Box::from_raw(data.cast::<Kept>()) });
    }));
}

/// The module arguments of this call.
fn module_args(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    let n = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() {
        return Vec::new();
    }
    (0..n)
        .filter_map(|i| {
            // SAFETY: libpam passes `argc` valid pointers in `argv`, so `argv + i` (i < argc)
            // stays inside that array.
            let slot = unsafe { argv.add(i) };
            // SAFETY: `slot` points to one of those `argc` initialized pointers.
            let p = unsafe { *slot };
            if p.is_null() {
                return None;
            }
            // SAFETY: each is a NUL-terminated string owned by libpam for the call.
            let s = unsafe { CStr::from_ptr(p) };
            Some(s.to_string_lossy().into_owned())
        })
        .collect()
}

type Body = fn(&Pam<'_>, c_int, &Args);

/// Runs `body` for one entry point: never unwinds into C, never fails the stack.
fn entry(
    pamh: *mut PamHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
    body: Body,
) -> c_int {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(handle) = NonNull::new(pamh) else {
            return;
        };
        let pam = Pam {
            handle,
            _call: PhantomData,
        };
        let args = Args::parse(&module_args(argc, argv));
        for unknown in &args.unknown {
            pam.log(
                LOG_WARNING,
                &format!("unknown module argument '{unknown}' ignored"),
            );
        }
        body(&pam, flags, &args);
    }));
    PAM_IGNORE
}

/// # Safety
/// Called by libpam with a valid handle and `argc` module arguments in `argv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_authenticate(
    pamh: *mut PamHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    entry(pamh, flags, argc, argv, crate::module::authenticate)
}

/// # Safety
/// As [`pam_sm_authenticate`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_setcred(
    pamh: *mut PamHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    entry(pamh, flags, argc, argv, crate::module::setcred)
}

/// # Safety
/// As [`pam_sm_authenticate`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_open_session(
    pamh: *mut PamHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    entry(pamh, flags, argc, argv, crate::module::open_session)
}

/// # Safety
/// As [`pam_sm_authenticate`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_close_session(
    pamh: *mut PamHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    entry(pamh, flags, argc, argv, crate::module::close_session)
}

/// # Safety
/// As [`pam_sm_authenticate`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_chauthtok(
    pamh: *mut PamHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    entry(pamh, flags, argc, argv, crate::module::chauthtok)
}

/// Overwrites `buf` with zeros in a way the compiler may not elide.
pub fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference.
        unsafe { ptr::write_volatile(b, 0) };
    }
    compiler_fence(Ordering::SeqCst);
}

/// Connects to the unix socket `path` without ever blocking: a listener whose backlog is
/// full (a hung daemon) answers `WouldBlock` at once. The stream returned is blocking.
pub fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    // SAFETY: plain syscall with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain old data; all zeros is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path empty, too long or with NUL",
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes; `fd` is an open socket.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            ptr::from_ref(&addr).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// The uid of the process that created the peer end of `stream` (`SO_PEERCRED`; for a
/// listening socket: whoever called `listen`), as the kernel recorded it.
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    // SAFETY: ucred is plain old data; all zeros is a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the fd is an open socket; `cred` is a valid, writable ucred of `len` bytes
    // and `len` a valid in/out length, as getsockopt(SO_PEERCRED) requires.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            ptr::from_mut(&mut cred).cast::<c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::other("SO_PEERCRED returned a short ucred"));
    }
    Ok(cred.uid)
}

/// One `send` with `MSG_NOSIGNAL`: a daemon that went away must not `SIGPIPE` the login
/// process (which may not ignore it). Honours the socket's send timeout.
pub fn send_nosignal(stream: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes; the fd is an open socket.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buf.as_ptr().cast::<c_void>(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
