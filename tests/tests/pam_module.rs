//! `pam_agentkeys.so` in a real PAM stack (libpam-wrapper + `pamtester`) against the real
//! daemon on a private bus: login unlocks the owner's login-class credentials, logout
//! locks them, a password change keeps access, a wrong password unlocks nothing, a login
//! never waits on or fails because of the daemon, and the PAM socket takes nothing from
//! non-root, malformed, oversized or hanging peers.
//!
//! The stack (a service file in a temporary `PAM_WRAPPER_SERVICE_DIR`): `pam_matrix.so`
//! checks passwords (auth, password); then pam_wrapper's `pam_set_items.so` sets
//! `PAM_AUTHTOK`/`PAM_OLDAUTHTOK` from the environment; then our module, by absolute path,
//! with `socket=` at the test daemon's runtime directory. Why `pam_set_items`:
//! `pam_matrix` wipes the `PAM_AUTHTOK` string it read (pam_unix and pam_sss leave it
//! set), so a module after it would find it empty. The tests give it the same password
//! typed on stdin — or, on purpose, another one, which is how a password that is not the
//! login key's reaches the daemon while the login itself succeeds.
//!
//! A stack in which every module answers `PAM_IGNORE` fails (libpam's default status is
//! `PAM_PERM_DENIED`), so the session stack ends with `pam_permit.so`, as a real one ends
//! with pam_unix.
//!
//! The owner is the harness's test user (PAM_USER must map to a real uid for the daemon).
//! "Syslog capture": `PAM_WRAPPER_DEBUGLEVEL=2` makes pam_wrapper print what the module
//! sends to `pam_syslog` on pamtester's stderr (level 2 leaves out pam_wrapper's own trace
//! lines, which print item values including passwords).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agentkeys_tests::pam::PamWrapper;
use agentkeys_tests::{
    Daemon, EVENT_TIMEOUT, Out, TEST_USER, bin_dir, count, run, test_user, unique_secret,
};
use pam_agentkeys::wire::{self, Request, Status};

const SERVICE: &str = "login-test";
const EXIT_LOCKED: i32 = 7;

/// Set (to a socket path) only in the re-executed child of [`non_root_peer_is_refused`].
const PEER_MARKER: &str = "AGENTKEYS_PAM_PEER_SOCKET";

fn module() -> PathBuf {
    let p = bin_dir().join("libpam_agentkeys.so");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build --workspace --bins --lib, or -p pam_agentkeys)",
        p.display()
    );
    p
}

/// A daemon, a PAM configuration with [`SERVICE`], the test user and everything pamtester
/// printed (for the leak scan).
struct Rig {
    daemon: Daemon,
    pam: PamWrapper,
    uid: u32,
    pam_stderr: Vec<u8>,
    passwords: Vec<String>,
}

impl Rig {
    /// `None` (after a skip) when libpam-wrapper or the test user is unavailable.
    fn new(password: &str) -> Option<Rig> {
        let pam = PamWrapper::new_or_skip(&[])?;
        let uid = test_user()?;
        pam.add_entry(TEST_USER, password, SERVICE);
        let daemon = Daemon::start();
        let rig = Rig {
            daemon,
            pam,
            uid,
            pam_stderr: Vec::new(),
            passwords: vec![password.to_owned()],
        };
        rig.write_service(&rig.socket(), "timeout=10");
        Some(rig)
    }

    fn socket(&self) -> PathBuf {
        self.daemon.runtime_dir().join("pam.sock")
    }

    fn write_service(&self, socket: &Path, extra: &str) {
        let matrix = self.pam.matrix_line();
        let set_items = PamWrapper::set_items_module();
        let ours = format!(
            "{} socket={} debug {extra}",
            module().display(),
            socket.display()
        );
        self.pam.write_service(
            SERVICE,
            &format!(
                "auth     required {matrix}\n\
                 auth     optional {set_items}\n\
                 auth     optional {ours}\n\
                 account  required {matrix}\n\
                 password required {matrix}\n\
                 password optional {set_items}\n\
                 password optional {ours}\n\
                 session  optional {ours}\n\
                 session  required pam_permit.so\n",
                set_items = set_items.display()
            ),
        );
    }

    /// `pamtester SERVICE TEST_USER OPS…` with `stdin` typed, `items` as PAM_AUTHTOK /
    /// PAM_OLDAUTHTOK for the module.
    fn pamtester(&mut self, ops: &[&str], stdin: &str, items: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new("pamtester");
        cmd.arg(SERVICE).arg(TEST_USER).args(ops);
        for (k, v) in self.pam.env() {
            cmd.env(k, v);
        }
        cmd.env("PAM_WRAPPER_DEBUGLEVEL", "2");
        for (k, v) in items {
            cmd.env(k, v);
        }
        let out = run(cmd, Some(stdin.as_bytes()));
        self.pam_stderr.extend_from_slice(out.stderr.as_bytes());
        out
    }

    /// A login with `password` typed and handed on: authenticate + open_session.
    fn login(&mut self, password: &str) -> Out {
        self.login_handing(password, password)
    }

    /// A login where `typed` passes pam_matrix but `handed` is what our module gets.
    fn login_handing(&mut self, typed: &str, handed: &str) -> Out {
        self.remember(handed);
        let out = self.pamtester(
            &["authenticate", "open_session"],
            &format!("{typed}\n"),
            &[("PAM_AUTHTOK", handed)],
        );
        assert_eq!(out.code, 0, "login failed: {}", out.stderr);
        out
    }

    fn logout(&mut self) -> Out {
        let out = self.pamtester(&["close_session"], "", &[]);
        assert_eq!(out.code, 0, "logout failed: {}", out.stderr);
        out
    }

    fn change_password(&mut self, old: &str, new: &str) -> Out {
        self.remember(new);
        let out = self.pamtester(
            &["chauthtok"],
            &format!("{old}\n{new}\n{new}\n"),
            &[("PAM_OLDAUTHTOK", old), ("PAM_AUTHTOK", new)],
        );
        assert_eq!(out.code, 0, "chauthtok failed: {}", out.stderr);
        out
    }

    fn remember(&mut self, password: &str) {
        if !self.passwords.iter().any(|p| p == password) {
            self.passwords.push(password.to_owned());
        }
    }

    /// `agentkeysctl --owner UID ARGS` (root acting for the test user).
    fn ctl(&self, args: &[&str], stdin: Option<&[u8]>) -> Out {
        let owner = self.uid.to_string();
        let mut all = vec!["--owner", owner.as_str()];
        all.extend_from_slice(args);
        self.daemon.ctl_in(&all, stdin)
    }

    fn store_login(&self, name: &str, value: &str) -> Out {
        self.ctl(&["store", name, "--class", "login"], Some(value.as_bytes()))
    }

    fn read(&self, name: &str) -> Out {
        self.ctl(&["read", name], None)
    }

    /// No password ever written to the daemon's log or the module's syslog lines.
    fn assert_no_password_leaked(&self) {
        let log = self.daemon.log();
        for pw in &self.passwords {
            assert_eq!(
                count(log.as_bytes(), pw.as_bytes()),
                0,
                "password in the daemon log"
            );
            assert_eq!(
                count(&self.pam_stderr, pw.as_bytes()),
                0,
                "password in the module's syslog capture"
            );
        }
    }
}

fn password(tag: &str) -> String {
    unique_secret(tag)
}

#[test]
fn login_unlocks_login_class_credentials() {
    let pw = password("pw");
    let Some(mut rig) = Rig::new(&pw) else { return };
    // Locked before any login: not even storing one works.
    let out = rig.store_login("github", "ghp_before_login_0123456789");
    let err = out.fails_with(EXIT_LOCKED);
    assert!(err.contains("log in again"), "{err}");
    let out = rig.login(&pw);
    assert!(out.stderr.contains("agentkeysd: created"), "{}", out.stderr);
    rig.store_login("github", "ghp_login_class_0123456789").ok();
    assert_eq!(rig.read("github").ok(), "ghp_login_class_0123456789");
    let list = rig.ctl(&["--json", "list"], None).json();
    assert!(list.to_string().contains("\"login\""), "{list}");
    rig.assert_no_password_leaked();
}

#[test]
fn logout_locks_and_reads_answer_locked() {
    let pw = password("pw");
    let Some(mut rig) = Rig::new(&pw) else { return };
    rig.login(&pw);
    rig.store_login("github", "ghp_login_class_0123456789").ok();
    // Two sessions: the first logout keeps it unlocked, the last locks it.
    rig.login(&pw);
    rig.logout();
    assert_eq!(rig.read("github").ok(), "ghp_login_class_0123456789");
    rig.logout();
    let err = rig.read("github").fails_with(EXIT_LOCKED);
    assert!(err.contains("locked"), "{err}");
    assert!(
        err.contains("log in again: pam_agentkeys unlocks login-class credentials at login"),
        "{err}"
    );
    // Host-class credentials are not affected by logins.
    rig.ctl(&["store", "anthropic"], Some(b"sk-ant-host-class-0123"))
        .ok();
    assert_eq!(rig.read("anthropic").ok(), "sk-ant-host-class-0123");
    // Logging in again unlocks again.
    rig.login(&pw);
    assert_eq!(rig.read("github").ok(), "ghp_login_class_0123456789");
    rig.assert_no_password_leaked();
}

#[test]
fn password_change_keeps_access_and_the_old_password_unlocks_nothing() {
    let old = password("old");
    let new = password("new");
    let Some(mut rig) = Rig::new(&old) else {
        return;
    };
    rig.login(&old);
    rig.store_login("github", "ghp_login_class_0123456789").ok();
    rig.logout();
    // Changed while logged out: the daemon opens the key with the old password.
    let out = rig.change_password(&old, &new);
    assert!(out.stderr.contains("re-wrapped"), "{}", out.stderr);
    rig.login(&new);
    assert_eq!(rig.read("github").ok(), "ghp_login_class_0123456789");
    rig.logout();
    // The old password, handed over by a login that pam_matrix accepts, opens nothing.
    let out = rig.login_handing(&new, &old);
    assert!(out.stderr.contains("wrong password"), "{}", out.stderr);
    rig.read("github").fails_with(EXIT_LOCKED);
    rig.logout();
    // Changed again while logged in: the key in memory is re-wrapped.
    let newer = password("newer");
    rig.login(&new);
    rig.change_password(&new, &newer);
    rig.logout();
    rig.login(&newer);
    assert_eq!(rig.read("github").ok(), "ghp_login_class_0123456789");
    rig.assert_no_password_leaked();
}

#[test]
fn wrong_password_unlocks_nothing() {
    let pw = password("pw");
    let wrong = password("wrong");
    let Some(mut rig) = Rig::new(&pw) else { return };
    rig.login(&pw);
    rig.store_login("github", "ghp_login_class_0123456789").ok();
    rig.logout();
    // pam_matrix refuses it: the login fails, nothing is sent, nothing unlocks.
    rig.remember(&wrong);
    let out = rig.pamtester(
        &["authenticate", "open_session"],
        &format!("{wrong}\n"),
        &[("PAM_AUTHTOK", &wrong)],
    );
    assert_ne!(out.code, 0, "pam_matrix must refuse the wrong password");
    rig.read("github").fails_with(EXIT_LOCKED);
    // A wrong password that does reach the daemon (the login succeeded by other means):
    // the GCM tag fails, it stays locked, and the daemon says so in its log.
    let out = rig.login_handing(&pw, &wrong);
    assert!(out.stderr.contains("wrong password"), "{}", out.stderr);
    rig.read("github").fails_with(EXIT_LOCKED);
    assert!(
        rig.daemon.log().contains("did not open the login key"),
        "{}",
        rig.daemon.log()
    );
    let audit = rig
        .ctl(&["--json", "audit", "list"], None)
        .json()
        .to_string();
    assert!(audit.contains("login.unlock"), "{audit}");
    rig.assert_no_password_leaked();
}

#[test]
fn daemon_down_login_still_succeeds() {
    let pw = password("pw");
    let Some(mut rig) = Rig::new(&pw) else { return };
    rig.daemon.stop();
    assert!(
        !rig.socket().exists(),
        "the daemon removes its socket when it stops"
    );
    let out = rig.pamtester(
        &["authenticate", "open_session", "close_session"],
        &format!("{pw}\n"),
        &[("PAM_AUTHTOK", &pw)],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("not reachable"), "{}", out.stderr);
    let out = rig.pamtester(
        &["chauthtok"],
        &format!("{pw}\n{pw}x\n{pw}x\n"),
        &[("PAM_OLDAUTHTOK", &pw), ("PAM_AUTHTOK", &format!("{pw}x"))],
    );
    rig.remember(&format!("{pw}x"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    rig.assert_no_password_leaked();
}

#[test]
fn a_login_succeeds_with_pam_ignore_while_the_daemon_hangs() {
    let pw = password("pw");
    let Some(mut rig) = Rig::new(&pw) else { return };
    // A listener that accepts (the kernel does, from the backlog) and never answers.
    let dir = tempfile::tempdir().unwrap();
    let hung = dir.path().join("hung.sock");
    let _listener = UnixListener::bind(&hung).unwrap();
    rig.write_service(&hung, "timeout=1");
    let out = rig.pamtester(
        &["authenticate", "open_session"],
        &format!("{pw}\n"),
        &[("PAM_AUTHTOK", &pw)],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("no answer within"), "{}", out.stderr);
    rig.assert_no_password_leaked();
}

/// The child half of [`non_root_peer_is_refused`]: connects as whoever it runs as and
/// prints what happened. Does nothing unless the parent set [`PEER_MARKER`].
#[test]
fn child_connects_as_peer() {
    let Some(socket) = std::env::var_os(PEER_MARKER) else {
        return;
    };
    let req = Request::OpenSession {
        user: TEST_USER,
        password: b"not-a-real-password",
    };
    let result = pam_agentkeys::client::call(Path::new(&socket), &req, Duration::from_secs(10));
    match result {
        Ok(reply) => println!("PEER-RESULT reply {}", reply.status.as_str()),
        Err(e) => println!("PEER-RESULT error {e}"),
    }
}

fn as_test_user(socket: &Path) -> String {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        TEST_USER,
        "--regid",
        TEST_USER,
        "--init-groups",
        "--",
    ])
    .arg(std::env::current_exe().unwrap())
    .args(["--exact", "child_connects_as_peer", "--nocapture"])
    .env(PEER_MARKER, socket);
    let out = run(cmd, None);
    out.stdout()
        .lines()
        .find_map(|l| l.strip_prefix("PEER-RESULT ").map(str::to_owned))
        .unwrap_or_else(|| panic!("child printed no result: {}\n{}", out.stdout(), out.stderr))
}

#[test]
fn non_root_peer_is_refused() {
    let pw = password("pw");
    let Some(rig) = Rig::new(&pw) else { return };
    let socket = rig.socket();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "pam.sock must be 0600");
    // The file mode stops them first.
    let first = as_test_user(&socket);
    assert!(first.contains("Permission denied"), "{first}");
    // With the mode opened up, SO_PEERCRED still does.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let second = as_test_user(&socket);
    assert_eq!(second, "reply refused");
    assert!(rig.daemon.log().contains("refused a peer that is not root"));
    assert!(
        !rig.daemon.log().contains("login key created"),
        "nothing happened"
    );
}

fn raw_exchange(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn malformed_oversized_and_hanging_peers_get_nothing_and_the_daemon_keeps_serving() {
    let pw = password("pw");
    let Some(mut rig) = Rig::new(&pw) else { return };
    let socket = rig.socket();
    // Hanging peers: more than the daemon serves at once, each with half a header.
    let hung: Vec<UnixStream> = (0..12)
        .map(|_| {
            let mut s = UnixStream::connect(&socket).unwrap();
            let _ = s.write_all(b"AK");
            s
        })
        .collect();
    // Meanwhile the bus side keeps answering.
    rig.daemon.ctl(&["status"]).ok();
    // Each hung peer is closed by the daemon without a reply, within its deadline (those
    // past the connection limit at once, unread: a reset rather than an EOF).
    for mut s in hung {
        s.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        let mut buf = Vec::new();
        let got = s.read_to_end(&mut buf);
        let closed = match &got {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(closed && buf.is_empty(), "{got:?} {buf:?}");
    }
    // Garbage: answered Malformed.
    let reply = raw_exchange(&socket, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(wire::parse_reply(&reply).unwrap().status, Status::Malformed);
    // Oversized: refused from the header alone, the body is never awaited.
    let mut big = vec![b'A', b'K', 1, 1];
    big.extend_from_slice(&u32::MAX.to_be_bytes());
    let reply = raw_exchange(&socket, &big);
    assert_eq!(wire::parse_reply(&reply).unwrap().status, Status::Malformed);
    // A frame with a field running past its body.
    let reply = raw_exchange(&socket, &[b'A', b'K', 1, 2, 0, 0, 0, 3, 0, 9, b'x']);
    assert_eq!(wire::parse_reply(&reply).unwrap().status, Status::Malformed);
    // An unknown user: refused, nothing created.
    let mut frame = Vec::new();
    wire::encode_request(
        &Request::OpenSession {
            user: "no-such-user-agentkeys",
            password: b"x",
        },
        &mut frame,
    )
    .unwrap();
    let reply = raw_exchange(&socket, &frame);
    assert_eq!(wire::parse_reply(&reply).unwrap().status, Status::Refused);
    // None of that created or unlocked anything; a real login still works.
    let err = rig
        .store_login("github", "ghp_login_class_0123456789")
        .fails_with(EXIT_LOCKED);
    assert!(err.contains("locked"), "{err}");
    rig.login(&pw);
    rig.store_login("github", "ghp_login_class_0123456789").ok();
    assert_eq!(rig.read("github").ok(), "ghp_login_class_0123456789");
    rig.assert_no_password_leaked();
}

/// The `login.lock` rows of the audit log so far, as their details.
fn lock_rows(rig: &Rig) -> Vec<String> {
    let audit = rig.ctl(&["--json", "audit", "list"], None).json();
    audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "login.lock")
        .map(|r| r["detail"].to_string())
        .collect()
}

/// A session-bound grant lives exactly as long as the owner's sessions: two logins, the
/// first logout keeps it, the last ends it (gone: ungranting it finds nothing), and a
/// plain grant of the same agent survives. (Whether a grant lets an agent read is
/// `pairing_cli::grants_decide_what_an_agent_reads_and_usage_counts_it`; here the grant's
/// existence is what is asserted.)
#[test]
fn session_bound_grants_end_at_the_last_logout() {
    let pw = password("pw");
    let Some(mut rig) = Rig::new(&pw) else { return };
    rig.login(&pw);
    rig.login(&pw);
    rig.store_login("github", "ghp_login_class_0123456789").ok();
    rig.ctl(&["store", "npm"], Some(b"npm_host_class_0123456789"))
        .ok();
    rig.ctl(&["agent", "create", "ci-bot"], None).ok();
    let out = rig
        .ctl(&["grant", "ci-bot", "github", "--until-logout"], None)
        .ok();
    assert!(out.contains("until your last logout"), "{out}");
    rig.ctl(&["grant", "ci-bot", "npm"], None).ok();

    rig.logout();
    assert!(
        lock_rows(&rig).is_empty(),
        "the first of two logouts locked"
    );
    assert_eq!(rig.read("github").ok(), "ghp_login_class_0123456789");

    rig.logout();
    let rows = lock_rows(&rig);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].contains("session-bound grants ended=1"), "{rows:?}");
    let err = rig
        .ctl(&["ungrant", "ci-bot", "github"], None)
        .fails_with(4);
    assert!(err.contains("github"), "{err}");
    rig.ctl(&["ungrant", "ci-bot", "npm"], None).ok();
    rig.assert_no_password_leaked();
}

/// A restart forgets every session, so it ends every session-bound grant; and a
/// session-bound grant cannot be made for an owner with no session.
#[test]
fn a_restart_ends_session_bound_grants_and_none_is_made_without_a_session() {
    let pw = password("pw");
    let Some(mut rig) = Rig::new(&pw) else { return };
    rig.ctl(&["store", "npm"], Some(b"npm_host_class_0123456789"))
        .ok();
    rig.ctl(&["agent", "create", "ci-bot"], None).ok();
    let err = rig
        .ctl(&["grant", "ci-bot", "npm", "--until-logout"], None)
        .fails_with(2);
    assert!(err.contains("log in first"), "{err}");
    let err = rig.ctl(&["ungrant", "ci-bot", "npm"], None).fails_with(4);
    assert!(err.contains("npm"), "no grant was made: {err}");

    rig.login(&pw);
    rig.ctl(&["grant", "ci-bot", "npm", "--until-logout"], None)
        .ok();
    rig.daemon.restart();
    // A daemon row (no owner): root's --all view.
    let audit = rig
        .daemon
        .ctl(&["--json", "audit", "list", "--all"])
        .json()
        .to_string();
    assert!(audit.contains("session-bound grants ended=1"), "{audit}");
    rig.ctl(&["ungrant", "ci-bot", "npm"], None).fails_with(4);
    rig.assert_no_password_leaked();
}
