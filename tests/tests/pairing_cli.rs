//! Pairing from the command line, end to end: the real daemon on a private bus, the real
//! `agentkeysctl` in two roles at once — `pair` where the agent runs, `approve`, `deny`,
//! `pending --watch` where its owner is — and then the paired agent acting with `--agent`.
//!
//! The D-Bus side of the same features is tested in `approvals.rs`; these tests assert
//! what a person sees: lines, exit codes (0 ok, 1 error, 2 usage, 3 denied, 4 not found,
//! 5 expired, 6 unreachable, 7 locked), files and their modes. Long-running commands are
//! child processes whose output is read line by line as it comes (an event, with a
//! generous timeout); nothing waits by sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Instant;

use agentkeys_tests::pam::PamWrapper;
use agentkeys_tests::{
    Daemon, DaemonOpts, EVENT_TIMEOUT, Out, bin, count, run, unique_secret, wait_timeout,
};
use agentkeysd::approvals::{fingerprint, public_key_of};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Pair codes that outlive any slow CI step (the default is 60 s; `pair` would renew an
/// expired code, and the test would approve a stale one).
const LONG_CODES: &str = "short_ttl_s = 600\n";

/// A daemon that approves without PAM (the PAM path has its own test).
fn daemon_without_pam(extra: &str) -> Daemon {
    Daemon::start_with(DaemonOpts {
        config: format!("[approvals]\nauthenticate = \"none\"\n{extra}"),
        ..Default::default()
    })
}

/// The agent's side: its own config directory (where `pair` stores the identity).
struct AgentHome {
    dir: tempfile::TempDir,
}

impl AgentHome {
    fn new() -> AgentHome {
        AgentHome {
            dir: tempfile::Builder::new()
                .prefix("agentkeys-xdg")
                .tempdir()
                .unwrap(),
        }
    }

    fn xdg(&self) -> &Path {
        self.dir.path()
    }

    fn agents_dir(&self) -> PathBuf {
        self.xdg().join("agentkeys").join("agents")
    }

    fn identity_path(&self, agent_id: &str) -> PathBuf {
        self.agents_dir().join(format!("{agent_id}.json"))
    }

    fn identity(&self, agent_id: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.identity_path(agent_id)).unwrap()).unwrap()
    }

    /// `agentkeysctl ARGS` with this home, to completion.
    fn ctl(&self, d: &Daemon, args: &[&str]) -> Out {
        let mut cmd = d.ctl_command(None, args);
        cmd.env("XDG_CONFIG_HOME", self.xdg());
        run(cmd, None)
    }

    /// `agentkeysctl ARGS` with this home, left running.
    fn spawn(&self, d: &Daemon, args: &[&str]) -> Proc {
        let mut cmd = d.ctl_command(None, args);
        cmd.env("XDG_CONFIG_HOME", self.xdg());
        Proc::spawn(cmd)
    }
}

/// A running command whose stdout and stderr are read line by line as they come.
struct Proc {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

/// What a [`Proc`] left when it ended.
struct Ended {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ended {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn lines_of(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Receives lines from `rx` (keeping them in `log`) until one satisfies `pred`.
fn wait_line(
    rx: &Receiver<String>,
    log: &mut Vec<String>,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push(line.clone());
                if pred(&line) {
                    return line;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "no {what} after {EVENT_TIMEOUT:?}; lines so far:\n{}",
                    log.join("\n")
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!(
                    "the stream closed before {what}; lines:\n{}",
                    log.join("\n")
                )
            }
        }
    }
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = lines_of(child.stdout.take().unwrap());
        let err = lines_of(child.stderr.take().unwrap());
        Proc {
            child,
            out,
            err,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    fn stdout_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.out, &mut self.stdout, what, pred)
    }

    fn stderr_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.err, &mut self.stderr, what, pred)
    }

    /// The next `Pair code: XXXX-XXXX   OTP: NNNNNN` line: (code, OTP).
    fn pair_code(&mut self) -> (String, String) {
        let line = self.stdout_line("'Pair code:' line", |l| parse_code_line(l).is_some());
        parse_code_line(&line).unwrap()
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for the end and collects everything it printed.
    fn finish(mut self) -> Ended {
        use std::os::unix::process::ExitStatusExt;
        let status = wait_timeout(&mut self.child, EVENT_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "did not end; stdout so far:\n{}\nstderr:\n{}",
                self.stdout.join("\n"),
                self.stderr.join("\n")
            )
        });
        // The pipes close with the process: the readers end on their own.
        for (rx, log) in [(&self.out, &mut self.stdout), (&self.err, &mut self.stderr)] {
            while let Ok(line) = rx.recv_timeout(EVENT_TIMEOUT) {
                log.push(line);
            }
        }
        let text = |v: &[String]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
        Ended {
            code: status.code(),
            signal: status.signal(),
            stdout: text(&self.stdout),
            stderr: text(&self.stderr),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_code_line(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("Pair code: ")?;
    let mut words = rest.split_whitespace();
    let code = words.next()?;
    (words.next()? == "OTP:").then_some(())?;
    let otp = words.next()?;
    let well_formed = code.len() == 9
        && code.as_bytes()[4] == b'-'
        && otp.len() == 6
        && otp.bytes().all(|b| b.is_ascii_digit());
    well_formed.then(|| (code.to_owned(), otp.to_owned()))
}

/// The value of the `key  value` line that `approve` shows for `key` (keys are padded).
fn field(shown: &str, key: &str) -> String {
    shown
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?;
            rest.starts_with("  ").then(|| rest.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{shown}"))
}

/// stdout and stderr of a finished command, together.
fn all(out: &Out) -> String {
    format!("{}{}", out.stdout(), out.stderr)
}

/// The codes `pending --json` lists.
fn pending_codes(d: &Daemon) -> Vec<String> {
    d.ctl(&["--json", "pending"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pair_code"].as_str().unwrap().to_owned())
        .collect()
}

/// Pairs `name` (scope `scope`) from `home`, approved by root without a password; returns
/// the agent id.
fn pair_approved(d: &Daemon, home: &AgentHome, name: &str, scope: &str) -> String {
    let mut pair = home.spawn(d, &["pair", "--name", name, "--scope", scope]);
    let (code, _) = pair.pair_code();
    d.ctl_in(&["approve", &code, "--yes"], None).ok();
    let ended = pair.finish();
    assert_eq!(ended.code, Some(0), "{}", ended.all());
    ended.stdout.lines().last().unwrap().to_owned()
}

/// A login session of the owner: a shell that leads a session of its own (`setsid`) and
/// runs one command at a time, as a person at one terminal would. The daemon caches a
/// successful re-authentication per login session.
struct LoginShell {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
    files: tempfile::TempDir,
    n: u32,
}

impl LoginShell {
    fn start(d: &Daemon) -> LoginShell {
        let mut child = Command::new("setsid")
            .args(["--wait", "sh"])
            .env("AGENTKEYS_BUS", &d.bus.address)
            .env("CTL", bin("agentkeysctl"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = lines_of(child.stdout.take().unwrap());
        let files = tempfile::Builder::new()
            .prefix("agentkeys-login")
            .tempdir()
            .unwrap();
        LoginShell {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            files,
            n: 0,
        }
    }

    /// `agentkeysctl ARGS < input` in this session. The input goes through a 0600 file,
    /// never through a command line.
    fn ctl(&mut self, args: &[&str], input: &[u8]) -> Out {
        self.n += 1;
        let n = self.n;
        let path = |what: &str| self.files.path().join(format!("{what}-{n}"));
        let (inp, out, err) = (path("in"), path("out"), path("err"));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&inp)
            .unwrap()
            .write_all(input)
            .unwrap();
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let argv: Vec<String> = args.iter().map(|a| quote(a)).collect();
        writeln!(
            self.stdin,
            "\"$CTL\" {} <{} >{} 2>{}; echo \"done-{n} $?\"",
            argv.join(" "),
            quote(inp.to_str().unwrap()),
            quote(out.to_str().unwrap()),
            quote(err.to_str().unwrap()),
        )
        .unwrap();
        self.stdin.flush().unwrap();
        let marker = format!("done-{n} ");
        let line = wait_line(&self.lines, &mut self.seen, &marker, |l| {
            l.starts_with(&marker)
        });
        let code = line[marker.len()..].trim().parse().unwrap();
        let result = Out {
            code,
            stdout: std::fs::read(&out).unwrap(),
            stderr: std::fs::read_to_string(&err).unwrap(),
        };
        for p in [inp, out, err] {
            std::fs::remove_file(p).unwrap();
        }
        result
    }
}

impl Drop for LoginShell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_agent_pairs_from_one_terminal_and_its_owner_approves_from_another() {
    let d = daemon_without_pam(LONG_CODES);
    let secret = unique_secret("pair-e2e");
    d.ctl_in(&["store", "anthropic"], Some(secret.as_bytes()))
        .ok();
    d.ctl_in(&["store", "github"], Some(b"ghp-not-for-the-agent"))
        .ok();
    let home = AgentHome::new();

    // The agent's terminal shows a code and an OTP, and waits.
    let mut pair = home.spawn(&d, &["pair", "--name", "ci-bot", "--scope", "anthropic"]);
    let (code, otp) = pair.pair_code();

    // The owner's terminal shows what to check, asks, approves.
    let approve = d.ctl_in(&["approve", &code], Some(b"y\n"));
    approve.ok();
    let shown = all(&approve);
    assert!(field(&shown, "OTP").starts_with(&otp), "{shown}");
    assert!(field(&shown, "type").starts_with("Pair ("), "{shown}");
    assert_eq!(field(&shown, "agent name"), "ci-bot");
    assert_eq!(field(&shown, "scope"), "anthropic");
    assert!(field(&shown, "request").starts_with(&code), "{shown}");
    assert!(
        approve.stdout().contains("approved: Pair for ci-bot"),
        "{shown}"
    );

    // The agent's side ends with its id on stdout.
    let ended = pair.finish();
    assert_eq!(ended.code, Some(0), "{}", ended.all());
    let agent_id = ended.stdout.lines().last().unwrap().to_owned();
    assert!(agent_id.starts_with("agt_"), "{}", ended.all());
    assert!(
        ended.stderr.contains("Paired: agent 'ci-bot'"),
        "{}",
        ended.stderr
    );

    // Its identity: a private file in a private directory, holding the key approve showed.
    let path = home.identity_path(&agent_id);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&home.agents_dir()), 0o700);
    let identity = home.identity(&agent_id);
    assert_eq!(identity["name"], "ci-bot");
    let seed_hex = identity["seed"].as_str().unwrap().to_owned();
    let session = identity["session"].as_str().unwrap().to_owned();
    let seed: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&seed_hex[i..i + 2], 16).unwrap())
        .collect();
    let key = fingerprint(&public_key_of(&seed.try_into().unwrap()));
    assert_eq!(field(&shown, "key"), key);

    // The agent acts with it: what it was granted, and nothing else.
    assert_eq!(
        home.ctl(&d, &["--agent", "ci-bot", "read", "anthropic"])
            .ok(),
        secret
    );
    let who = home.ctl(&d, &["--agent", "ci-bot", "whoami"]).ok();
    for needle in [
        agent_id.as_str(),
        "ci-bot",
        "anthropic",
        "session expires",
        "UTC",
    ] {
        assert!(who.contains(needle), "{needle:?} not in:\n{who}");
    }
    for hidden in [session.as_str(), seed_hex.as_str(), "ses_"] {
        assert!(!who.contains(hidden), "whoami shows {hidden:?}:\n{who}");
    }
    let refused = home.ctl(&d, &["--agent", "ci-bot", "read", "github"]);
    let err = refused.fails_with(3);
    assert!(refused.stdout.is_empty());
    assert!(err.contains("agentkeysctl grant ci-bot github"), "{err}");
}

#[test]
fn approving_asks_for_the_login_password_once_per_session_and_never_shows_it() {
    let password = unique_secret("login");
    let wrong = unique_secret("wrong");
    let Some(pam) = PamWrapper::new_or_skip(&[("root", &password)]) else {
        return;
    };
    let d = Daemon::start_with(DaemonOpts {
        config: format!("[approvals]\n{LONG_CODES}"),
        env: pam.env(),
        ..Default::default()
    });
    let home = AgentHome::new();
    let mut login = LoginShell::start(&d);
    let mut outputs: Vec<String> = Vec::new();

    // A wrong password: denied, and the request still waits.
    let mut pair = home.spawn(&d, &["pair", "--name", "ci-bot"]);
    let (code, _) = pair.pair_code();
    let input = format!("y\n{wrong}\n");
    let bad = login.ctl(&["approve", &code], input.as_bytes());
    let err = bad.fails_with(3);
    assert!(err.contains("wrong password"), "{err}");
    outputs.push(all(&bad));
    assert!(pending_codes(&d).contains(&code));

    // The right one approves.
    let input = format!("y\n{password}\n");
    let good = login.ctl(&["approve", &code], input.as_bytes());
    assert!(good.ok().contains("approved: Pair for ci-bot"));
    outputs.push(all(&good));
    let ended = pair.finish();
    assert_eq!(ended.code, Some(0), "{}", ended.all());
    outputs.push(ended.all());

    // Another request. A same-uid process in another session, without the password,
    // cannot approve it: locked (7), and the request still waits.
    let mut pair = home.spawn(&d, &["pair", "--name", "ci-bot-2"]);
    let (code, _) = pair.pair_code();
    let mut elsewhere = Command::new("setsid");
    elsewhere
        .arg("--wait")
        .arg(bin("agentkeysctl"))
        .args(["approve", &code])
        .env("AGENTKEYS_BUS", &d.bus.address);
    let locked = run(elsewhere, Some(b"y\n"));
    let err = locked.fails_with(7);
    assert!(err.contains("login password"), "{err}");
    outputs.push(all(&locked));
    assert!(pending_codes(&d).contains(&code));

    // The login session that gave the password a moment ago is not asked again.
    let cached = login.ctl(&["approve", &code], b"y\n");
    assert!(cached.ok().contains("approved: Pair for ci-bot-2"));
    assert!(!cached.stderr.contains("Password"), "{}", cached.stderr);
    outputs.push(all(&cached));
    let ended = pair.finish();
    assert_eq!(ended.code, Some(0), "{}", ended.all());
    outputs.push(ended.all());

    // Neither password is anywhere: not in what any command printed, not in the log.
    outputs.push(d.log());
    for text in &outputs {
        for pw in [&password, &wrong] {
            assert_eq!(
                count(text.as_bytes(), pw.as_bytes()),
                0,
                "a password leaked:\n{text}"
            );
        }
    }
}

#[test]
fn a_denied_pairing_ends_the_agents_wait_with_exit_3_and_a_reason() {
    let d = daemon_without_pam(LONG_CODES);
    let home = AgentHome::new();
    let mut pair = home.spawn(&d, &["pair", "--name", "ci-bot"]);
    let (code, _) = pair.pair_code();
    let denied = d.ctl(&["deny", &code]).ok();
    assert!(denied.contains("denied: Pair for ci-bot"), "{denied}");
    let ended = pair.finish();
    assert_eq!(ended.code, Some(3), "{}", ended.all());
    for needle in [
        "error: the owner denied the pairing",
        &format!("  cause: uid 0 (root) answered no to request {code}"),
        "  fix:   ",
    ] {
        assert!(
            ended.stderr.contains(needle),
            "{needle:?} not in:\n{}",
            ended.stderr
        );
    }
    assert!(
        !home.agents_dir().exists() || std::fs::read_dir(home.agents_dir()).unwrap().count() == 0
    );
}

#[test]
fn pair_shows_a_new_code_when_the_old_one_expires() {
    let d = daemon_without_pam("short_ttl_s = 1\n");
    let home = AgentHome::new();
    let mut pair = home.spawn(&d, &["pair", "--name", "ci-bot"]);
    let (first, _) = pair.pair_code();
    let (second, _) = pair.pair_code();
    assert_ne!(first, second);
    pair.stderr_line("the renewal notice", |l| {
        l.contains(&format!("The code {first} expired without a decision"))
    });
    // Ctrl-C stops waiting: exit 130, and the request simply expires.
    pair.signal(Signal::SIGINT);
    let ended = pair.finish();
    assert_eq!(ended.code, Some(130), "{}", ended.all());
    assert!(
        ended.stderr.contains("error: stopped waiting for approval"),
        "{}",
        ended.stderr
    );
}

#[test]
fn a_revoked_agent_recovers_with_a_new_key_and_reads_again() {
    let d = daemon_without_pam(LONG_CODES);
    let secret = unique_secret("recover");
    d.ctl_in(&["store", "anthropic"], Some(secret.as_bytes()))
        .ok();
    let home = AgentHome::new();
    let agent_id = pair_approved(&d, &home, "ci-bot", "anthropic");
    let old_seed = home.identity(&agent_id)["seed"].clone();
    d.ctl(&["agent", "revoke", "ci-bot"]).ok();
    home.ctl(&d, &["--agent", "ci-bot", "read", "anthropic"])
        .fails_with(3);

    let mut pair = home.spawn(&d, &["pair", "--recover", "ci-bot"]);
    let (code, otp) = pair.pair_code();
    let approve = d.ctl_in(&["approve", &code], Some(b"y\n"));
    approve.ok();
    let shown = all(&approve);
    assert!(field(&shown, "type").starts_with("Recover ("), "{shown}");
    assert_eq!(field(&shown, "takes over"), "ci-bot");
    assert_eq!(field(&shown, "agent id"), agent_id);
    assert!(field(&shown, "OTP").starts_with(&otp), "{shown}");
    let ended = pair.finish();
    assert_eq!(ended.code, Some(0), "{}", ended.all());
    assert_eq!(ended.stdout.lines().last(), Some(agent_id.as_str()));

    // Same agent, same file, a new key; found by its name as before.
    let identity = home.identity(&agent_id);
    assert_eq!(identity["name"], "ci-bot");
    assert_ne!(identity["seed"], old_seed);
    assert_eq!(
        home.ctl(&d, &["--agent", "ci-bot", "read", "anthropic"])
            .ok(),
        secret
    );
}

#[test]
fn recovering_an_unknown_agent_exits_4_and_says_how_to_name_it() {
    let d = daemon_without_pam(LONG_CODES);
    let home = AgentHome::new();
    let out = home.ctl(&d, &["pair", "--recover", "nobody"]);
    let err = out.fails_with(4);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("'nobody'"), "{err}");
    let fix = err.lines().find(|l| l.starts_with("  fix:   ")).unwrap();
    for needle in ["agt_", "agentkeysctl agent link"] {
        assert!(fix.contains(needle), "{needle:?} not in:\n{err}");
    }
    assert!(
        !home.agents_dir().exists() || std::fs::read_dir(home.agents_dir()).unwrap().count() == 0
    );
}

#[test]
fn a_revoked_agent_is_told_when_by_whom_and_how_to_recover() {
    let d = daemon_without_pam(LONG_CODES);
    d.ctl_in(&["store", "anthropic"], Some(b"sk-ant-revoked-0001"))
        .ok();
    let home = AgentHome::new();
    pair_approved(&d, &home, "ci-bot", "anthropic");
    home.ctl(&d, &["--agent", "ci-bot", "read", "anthropic"])
        .ok();
    d.ctl(&["agent", "revoke", "ci-bot"]).ok();
    let out = home.ctl(&d, &["--agent", "ci-bot", "read", "anthropic"]);
    let err = out.fails_with(3);
    assert!(out.stdout.is_empty());
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("error: access denied — agent 'ci-bot' was revoked"),
        "{err}"
    );
    let cause = lines.iter().find(|l| l.starts_with("  cause: ")).unwrap();
    assert!(
        cause.contains("revoked at") && cause.contains("by uid 0"),
        "{err}"
    );
    let fix = lines.iter().find(|l| l.starts_with("  fix:   ")).unwrap();
    assert!(fix.contains("agentkeysctl pair --recover"), "{err}");
}

#[test]
fn grants_decide_what_an_agent_reads_and_usage_counts_it() {
    let d = daemon_without_pam(LONG_CODES);
    d.ctl_in(&["store", "anthropic"], Some(b"sk-ant-granted-0001"))
        .ok();
    d.ctl_in(&["store", "github"], Some(b"ghp-once-0001")).ok();
    let home = AgentHome::new();
    pair_approved(&d, &home, "ci-bot", "anthropic");
    let read = |name: &str| home.ctl(&d, &["--agent", "ci-bot", "read", name]);

    // Once: one read, then denied.
    let granted = d.ctl(&["grant", "ci-bot", "github", "--mode", "once"]).ok();
    assert!(granted.contains("github"), "{granted}");
    assert_eq!(read("github").ok(), "ghp-once-0001");
    read("github").fails_with(3);
    assert_eq!(read("anthropic").ok(), "sk-ant-granted-0001");

    // Usage: per agent and credential, reads and denials; the read just served counts
    // (Usage writes queued read rows first).
    let usage = d.ctl(&["--json", "usage"]).json();
    let row = |cred: &str| {
        usage
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["agent"] == "ci-bot" && r["credential"] == cred)
            .unwrap_or_else(|| panic!("no usage row for {cred}: {usage}"))
            .clone()
    };
    assert_eq!(
        (
            row("github")["reads"].as_u64(),
            row("github")["denials"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        (
            row("anthropic")["reads"].as_u64(),
            row("anthropic")["denials"].as_u64()
        ),
        (Some(1), Some(0))
    );
    let table = d.ctl(&["usage", "ci-bot"]).ok();
    assert!(table.starts_with("AGENT"), "{table}");

    // Ungrant: denied from the next read on.
    d.ctl(&["ungrant", "ci-bot", "anthropic"]).ok();
    read("anthropic").fails_with(3);

    // A credential that does not exist, a mode that does not exist.
    let err = d.ctl(&["grant", "ci-bot", "no-such-key"]).fails_with(4);
    assert!(err.contains("no-such-key"), "{err}");
    d.ctl(&["grant", "ci-bot", "github", "--mode", "sometimes"])
        .fails_with(2);
}

#[test]
fn pending_watch_shows_each_new_request_in_full_and_its_decision() {
    let d = daemon_without_pam(LONG_CODES);
    let home = AgentHome::new();
    let mut watch = Proc::spawn(d.ctl_command(None, &["pending", "--watch"]));
    // Subscribed (and listed) once it says it waits.
    watch.stderr_line("the waiting notice", |l| l.contains("waiting for requests"));

    let mut pair = home.spawn(&d, &["pair", "--name", "watched", "--scope", "github"]);
    let (code, otp) = pair.pair_code();
    let opened = watch.stdout_line("the opened line", |l| l.contains(&code));
    for needle in [
        "opened".to_owned(),
        "Pair".to_owned(),
        "watched".to_owned(),
        "scope github".to_owned(),
        format!("OTP {otp}"),
    ] {
        assert!(opened.contains(&needle), "{needle:?} not in {opened:?}");
    }

    d.ctl(&["deny", &code]).ok();
    let decided = watch.stdout_line("the decision line", |l| !l.starts_with("opened"));
    assert!(
        decided.starts_with(&format!("denied or expired {code}")),
        "{decided:?}"
    );
    assert_eq!(pair.finish().code, Some(3));

    watch.signal(Signal::SIGTERM);
    let ended = watch.finish();
    assert_eq!(
        (ended.code, ended.signal),
        (Some(0), None),
        "{}",
        ended.all()
    );
}

#[test]
fn status_says_loudly_when_approvals_need_no_password() {
    let d = daemon_without_pam("");
    let st = d.ctl(&["status"]);
    let text = st.ok();
    let line = text.lines().find(|l| l.starts_with("approvals")).unwrap();
    assert!(line.contains("WARNING"), "{text}");
    assert!(line.contains("approvals.authenticate = \"none\""), "{text}");
    assert!(st.stderr.contains("WARNING"), "{}", st.stderr);
    let json = d.ctl(&["--json", "status"]);
    let v = json.json();
    assert_eq!(v["approvals_authenticate"], "none");
    assert_eq!(v["session_ttl_s"], 14_400);
    assert!(json.stderr.contains("WARNING"), "{}", json.stderr);

    let d = Daemon::start();
    let st = d.ctl(&["status"]);
    assert!(st.ok().contains("re-authentication via PAM"));
    assert!(!st.stderr.contains("WARNING"), "{}", st.stderr);
    assert_eq!(
        d.ctl(&["--json", "status"]).json()["approvals_authenticate"],
        "pam"
    );
}
