//! Test harness: a private `dbus-daemon` with a system-bus-like policy, the real
//! `agentkeysd` on it with a temporary state directory, and the real `agentkeysctl`.
//!
//! Waiting is by events, never by sleeping: the bus prints its address when it listens,
//! the daemon sends `READY=1` to a `NOTIFY_SOCKET` the harness binds, exits are `waitpid`.
//! Kernel tests probe first and call [`skip`], which fails in strict mode
//! (`AGENTKEYS_TEST_STRICT=1`, set by `scripts/test` and CI).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod mcp;
pub mod pam;
pub mod proc_mem;
pub mod runs;
pub mod sandbox;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for an event before it fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Name of the second, unprivileged user the isolation tests run as.
pub const TEST_USER: &str = "agentkeys-test";

/// Skips a test with a reason; a failure in strict mode.
pub fn skip(reason: &str) {
    if std::env::var("AGENTKEYS_TEST_STRICT").is_ok_and(|v| v == "1") {
        panic!("skipped in strict mode (AGENTKEYS_TEST_STRICT=1): {reason}");
    }
    eprintln!("skipped: {reason}");
}

/// Directory holding the workspace's binaries (`agentkeysd`, `agentkeysctl`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AGENTKEYS_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test-binary> → target/<profile>
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap()
    } else {
        dir
    };
    dir.to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins), or set AGENTKEYS_BIN_DIR",
        p.display()
    );
    p
}

/// The bus policy agentkeysd ships (`systemd/dev.agentkeys.Daemon1.conf`), which every
/// test bus includes.
pub const SHIPPED_POLICY: &str = include_str!("../../systemd/dev.agentkeys.Daemon1.conf");
pub const SHIPPED_POLICY_NAME: &str = "dev.agentkeys.Daemon1.conf";

/// A private system-like `dbus-daemon`, killed on drop.
#[derive(Debug)]
pub struct Bus {
    child: Child,
    pub address: String,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bus {
    pub fn start() -> Bus {
        Self::start_with_config("")
    }

    /// A bus whose configuration ends with `extra` (busconfig elements), e.g. a
    /// `<servicedir>`.
    pub fn start_with_config(extra: &str) -> Bus {
        let dir = tempfile::Builder::new()
            .prefix("agentkeys-bus")
            .tempdir()
            .unwrap();
        // Other users (the isolation tests) must reach the socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("bus.sock");
        let conf = include_str!("../data/bus.conf.in")
            .replace("@SOCKET@", socket.to_str().unwrap())
            .replace("@EXTRA@", extra);
        let conf_path = dir.path().join("bus.conf");
        std::fs::write(&conf_path, conf).unwrap();
        // The policy the packages install, so that every test runs under it.
        std::fs::write(dir.path().join(SHIPPED_POLICY_NAME), SHIPPED_POLICY).unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf_path.display()))
            .args(["--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect(
                "dbus-daemon (Debian package dbus) must be installed; scripts/test installs it",
            );
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("unix:"), "dbus-daemon printed {line:?}");
        Bus {
            child,
            address: line.trim().to_owned(),
            socket,
            _dir: dir,
        }
    }

    /// A zbus client connection to this bus.
    pub async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await
            .unwrap()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Options for starting a daemon.
#[derive(Debug, Clone, Default)]
pub struct DaemonOpts {
    /// Extra TOML written to the daemon's configuration file.
    pub config: String,
    /// Extra environment for the daemon.
    pub env: Vec<(String, String)>,
    /// cgroup directories the daemon's process moves itself into (`0` to each one's
    /// `cgroup.procs`) before it execs `agentkeysd`, as if it had been started there.
    pub cgroups: Vec<PathBuf>,
}

/// `sh -c` script: `JOIN_AND_EXEC sh PROGRAM GROUP… --ARGS…`: joins each GROUP (the
/// arguments up to the first that starts with `-`), then execs PROGRAM with the rest.
const JOIN_AND_EXEC: &str = r#"prog=$1; shift
while [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; do
  echo 0 >"$1/cgroup.procs" || exit 97; shift
done
exec "$prog" "$@""#;

/// A running (or stopped) `agentkeysd` on a [`Bus`], with its own state directory.
#[derive(Debug)]
pub struct Daemon {
    pub bus: Bus,
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub opts: DaemonOpts,
    /// How long the last start took from spawn to READY=1.
    pub last_ready: Duration,
    starts: u32,
    /// The `NOTIFY_SOCKET` of the current start, and every message read from it.
    notify: Option<UnixDatagram>,
    pub notified: Vec<String>,
}

impl Daemon {
    /// A bus and a daemon on it, ready.
    pub fn start() -> Daemon {
        Self::start_with(DaemonOpts::default())
    }

    pub fn start_with(opts: DaemonOpts) -> Daemon {
        let bus = Bus::start();
        let dir = tempfile::Builder::new()
            .prefix("agentkeys-state")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut d = Daemon {
            bus,
            dir,
            child: None,
            opts,
            last_ready: Duration::ZERO,
            starts: 0,
            notify: None,
            notified: Vec::new(),
        };
        d.spawn_ready()
            .unwrap_or_else(|e| panic!("daemon did not start: {e}"));
        d
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("agentkeysd.toml")
    }
    pub fn db_path(&self) -> PathBuf {
        self.state_dir().join("agentkeys.db")
    }
    /// Everything the daemon wrote to stderr, across all its starts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agentkeysd.log")
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon not running").id()
    }

    /// The command line that starts this daemon.
    pub fn command(&self) -> Command {
        self.command_with_state(&self.state_dir())
    }

    /// The command line of a daemon on the same bus with another state directory.
    pub fn command_with_state(&self, state_dir: &Path) -> Command {
        self.command_for(&self.bus.address, state_dir)
    }

    /// The command line of a daemon with this one's configuration on `bus` and `state_dir`.
    pub fn command_for(&self, bus: &str, state_dir: &Path) -> Command {
        std::fs::write(self.config_path(), &self.opts.config).unwrap();
        let mut cmd = if self.opts.cgroups.is_empty() {
            Command::new(bin("agentkeysd"))
        } else {
            let mut sh = Command::new("sh");
            sh.args(["-c", JOIN_AND_EXEC, "sh"])
                .arg(bin("agentkeysd"))
                .args(&self.opts.cgroups);
            sh
        };
        cmd.arg("--bus")
            .arg(bus)
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--runtime-dir")
            .arg(self.runtime_dir())
            .arg("--config")
            .arg(self.config_path())
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("AGENTKEYS_BUS")
            // A watchdog only where a test asks for one (the test runner may run under one).
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("AGENTKEYS_LOG", "info")
            .stdin(Stdio::null());
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the daemon and waits for READY=1; on failure returns its exit status and log.
    pub fn spawn_ready(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "daemon already running");
        self.starts += 1;
        let notify = self.dir.path().join(format!("notify-{}.sock", self.starts));
        let sock = UnixDatagram::bind(&notify).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let t0 = Instant::now();
        let mut child = self
            .command()
            .env("NOTIFY_SOCKET", &notify)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let ready = msg.lines().any(|l| l == "READY=1");
                    self.notified.push(msg);
                    if ready {
                        self.last_ready = t0.elapsed();
                        self.child = Some(child);
                        self.notify = Some(sock);
                        return Ok(());
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("notify socket: {e}"),
            }
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!(
                    "agentkeysd exited with {status} before READY=1; log:\n{}",
                    self.log()
                ));
            }
            if t0.elapsed() > EVENT_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "agentkeysd not ready after {EVENT_TIMEOUT:?}; log:\n{}",
                    self.log()
                ));
            }
        }
    }

    /// SIGTERM and wait; returns the exit status. What the daemon sent to its
    /// `NOTIFY_SOCKET` meanwhile lands in [`Daemon::notified`].
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon not running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status =
            wait_timeout(&mut child, EVENT_TIMEOUT).expect("daemon did not stop after SIGTERM");
        if let Some(sock) = self.notify.take() {
            sock.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                self.notified
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        status
    }

    /// The next message the running daemon sends to its `NOTIFY_SOCKET`, waiting at most
    /// `timeout`; also recorded in [`Daemon::notified`].
    pub fn next_notification(&mut self, timeout: Duration) -> Option<String> {
        let sock = self.notify.as_ref().expect("daemon not running");
        sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.notified.push(msg.clone());
                Some(msg)
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                None
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon not running");
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn restart(&mut self) {
        if self.child.is_some() {
            assert!(self.stop().success());
        }
        self.spawn_ready()
            .unwrap_or_else(|e| panic!("daemon did not restart: {e}"));
    }

    /// `agentkeysctl ARGS` on this bus, as root, no stdin.
    pub fn ctl(&self, args: &[&str]) -> Out {
        self.ctl_in(args, None)
    }

    /// `agentkeysctl ARGS` with `stdin` piped in.
    pub fn ctl_in(&self, args: &[&str], stdin: Option<&[u8]>) -> Out {
        run(self.ctl_command(None, args), stdin)
    }

    /// `agentkeysctl ARGS` as another user (through setpriv).
    pub fn ctl_as(&self, user: &str, args: &[&str], stdin: Option<&[u8]>) -> Out {
        run(self.ctl_command(Some(user), args), stdin)
    }

    pub fn ctl_command(&self, user: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = match user {
            None => Command::new(bin("agentkeysctl")),
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", u, "--regid", u, "--init-groups", "--"])
                    .arg(bin("agentkeysctl"));
                c
            }
        };
        cmd.args(args).env("AGENTKEYS_BUS", &self.bus.address);
        cmd
    }

    /// A zbus connection to the daemon's bus, as root.
    pub async fn connect(&self) -> zbus::Connection {
        self.bus.connect().await
    }
}

impl Drop for Daemon {
    /// Stops the daemon as systemd would (SIGTERM), so that it removes what it made (its warm
    /// runners' cgroups); SIGKILL if it is not gone within 3 s.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            while matches!(c.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The result of a CLI run.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// Asserts exit 0 and returns stdout.
    pub fn ok(&self) -> String {
        assert_eq!(
            self.code,
            0,
            "expected success; stderr:\n{}\nstdout:\n{}",
            self.stderr,
            self.stdout()
        );
        self.stdout()
    }
    /// Asserts the exit code and returns stderr.
    pub fn fails_with(&self, code: i32) -> String {
        assert_eq!(
            self.code,
            code,
            "expected exit {code}; stderr:\n{}\nstdout:\n{}",
            self.stderr,
            self.stdout()
        );
        self.stderr.clone()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout()))
    }
}

pub fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Out {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        let mut si = child.stdin.take().unwrap();
        si.write_all(input).unwrap();
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Out {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Waits for `child` at most `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if t0.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the calling test again, alone, in a login session of its own (as `setsid` gives
/// a login shell). Answers `true` inside that re-run, where the test goes on, and `false`
/// in the first run, once the re-run has passed. For tests whose daemon keys something
/// on the caller's login session: under a PID namespace whose session leader lies
/// outside it, as in CI, the test process's own session cannot be told at all.
pub fn in_own_session(test: &str) -> bool {
    const MARK: &str = "AGENTKEYS_TEST_OWN_SESSION";
    if std::env::var_os(MARK).is_some() {
        let me = nix::unistd::getpid();
        assert_eq!(
            nix::unistd::getsid(None).unwrap(),
            me,
            "not a session leader"
        );
        return true;
    }
    let mut rerun = Command::new("setsid");
    rerun
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(MARK, "1");
    let out = run(rerun, None);
    let stdout = out.stdout();
    assert!(
        out.code == 0 && stdout.contains("1 passed"),
        "{test} in a session of its own: exit {}\n{stdout}\n{}",
        out.code,
        out.stderr
    );
    false
}

/// Makes sure [`TEST_USER`] exists (creating it needs root); returns its uid, or None
/// (after [`skip`]) when it cannot.
pub fn test_user() -> Option<u32> {
    if let Ok(Some(u)) = nix::unistd::User::from_name(TEST_USER) {
        return Some(u.uid.as_raw());
    }
    if !nix::unistd::Uid::effective().is_root() {
        skip("isolation tests need root to create the test user");
        return None;
    }
    // Serialize concurrent test processes creating the same user.
    let lock = std::fs::File::create("/tmp/agentkeys-test-useradd.lock").unwrap();
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    if let Ok(Some(u)) = nix::unistd::User::from_name(TEST_USER) {
        return Some(u.uid.as_raw());
    }
    let st = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            TEST_USER,
        ])
        .status()
        .expect("useradd (Debian package passwd)");
    assert!(st.success(), "useradd {TEST_USER} failed");
    Some(
        nix::unistd::User::from_name(TEST_USER)
            .unwrap()
            .unwrap()
            .uid
            .as_raw(),
    )
}

/// A random printable secret that no other test uses, for leak scans.
pub fn unique_secret(tag: &str) -> String {
    let mut b = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("sk-{tag}-{hex}")
}

/// Counts occurrences of `needle` in `hay`.
pub fn count(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || hay.len() < needle.len() {
        return 0;
    }
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Counts `needle` in a file (0 when it does not exist).
pub fn count_in_file(path: &Path, needle: &[u8]) -> usize {
    std::fs::read(path).map(|b| count(&b, needle)).unwrap_or(0)
}
