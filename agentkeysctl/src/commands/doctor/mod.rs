//! `agentkeysctl doctor`: is this host ready for agentkeysd, and if not, what to do.
//!
//! One check per file, run in a fixed order: first what the kernel offers the sandbox
//! (asked for real through `agentkeysd::sandbox::probe`), then the daemon on the bus, then
//! the installed files. Every check yields one [`Finding`]: a status, a one-line detail
//! (the problem and its cause), and for a warning or a failure the fix. A check never
//! stops the others; the daemon being down fails one line, not the command.
//!
//! Statuses: `ok`; `warn` (works, but something is weaker or missing that a careful admin
//! would want); `fail` (something agentkeysd or its runner needs is broken or absent);
//! `skip` (the check cannot be made here, with the reason). Exit status 0 when no check
//! failed — warnings do not fail — and 1 when any did; `--json` prints the same findings as
//! an array of `{check, status, detail, fix?}`.
//!
//! Kernel facts (`/proc`, `/sys`) are always read from the running system; `--root DIR`
//! moves only the installed-file checks (D-Bus policy, PAM, SELinux module store, state
//! directory) under DIR, for tests and for inspecting an image.

mod cgroups;
mod daemon;
mod dbus_policy;
mod landlock;
mod memfd_secret;
mod pam_module;
mod pam_stack;
mod seccomp;
mod selinux;
mod state_dir;
mod user_namespaces;

use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use crate::cli::Global;
use crate::errors::{CliError, Exit};
use crate::output::{Out, sanitize};

/// What `agentkeysctl doctor --help` teaches.
const AFTER_HELP: &str = "\
Checks, in order:
  memfd_secret     the kernel gives secret memory outside its direct map
  landlock         the Landlock ABI the runner can confine agents with (7 is the newest)
  user_namespaces  a user namespace can be created (probed for real, in a child)
  cgroups          where the memory, pids and cpu controllers are (cgroup v2, or v1)
  seccomp          seccomp filter mode with the actions the runner's policy uses
  daemon           agentkeysd answers on the bus, and its version matches this CLI
  dbus_policy      the D-Bus policy for dev.agentkeys.Daemon1 is installed
  pam_module       pam_agentkeys.so is in the distribution's PAM directory
  pam_stack        /etc/pam.d/agentkeys exists; the login stack uses pam_agentkeys
  selinux          SELinux mode, and the agentkeysd module where SELinux enforces
  state_dir        /var/lib/agentkeys is root-owned 0700, master.key 0600

Each line reads: status, check, finding; a `fix:` line follows every warning and
failure. Statuses: ok, warn (works, but weaker than it should be), FAIL (broken),
skip (cannot be checked here, with the reason).

Exit status: 0 when no check failed (warnings do not fail), 1 when any failed.

Examples:
  agentkeysctl doctor
  agentkeysctl doctor --json | jq '.[] | select(.status != \"ok\")'
  agentkeysctl doctor --root /mnt/image      (installed files under /mnt/image)";

#[derive(Args, Debug)]
#[command(
    long_about = "Check that this host is ready for agentkeysd: kernel features the sandbox \
                  needs, the daemon on the bus, and the installed D-Bus policy, PAM module, \
                  SELinux mode and state directory. Every failing check prints its fix.",
    after_help = AFTER_HELP
)]
pub struct DoctorArgs {
    /// Look for installed files (D-Bus policy, PAM, SELinux modules, /var/lib/agentkeys)
    /// under DIR instead of /; kernel facts always come from the running system
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

impl Status {
    /// The word in `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }

    /// The word in the human output: a failure stands out.
    fn label(self) -> &'static str {
        match self {
            Status::Fail => "FAIL",
            other => other.as_str(),
        }
    }
}

/// The outcome of one check. Warnings and failures always carry a fix: the constructors
/// make it impossible to build one without.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            check,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            check,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn skip(check: &'static str, reason: impl Into<String>) -> Finding {
        Finding {
            check,
            status: Status::Skip,
            detail: reason.into(),
            fix: None,
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "check": self.check,
            "status": self.status.as_str(),
            "detail": self.detail,
        });
        if let (Some(fix), Some(obj)) = (&self.fix, v.as_object_mut()) {
            obj.insert("fix".to_owned(), Value::String(fix.clone()));
        }
        v
    }
}

/// Where the installed-file checks look.
#[derive(Debug, Clone)]
pub struct Root(PathBuf);

impl Root {
    /// `/etc/pam.d/agentkeys` under the root.
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.0.join(absolute.trim_start_matches('/'))
    }
}

pub async fn run(g: &Global, args: &DoctorArgs, out: &mut Out) -> Result<(), CliError> {
    let root = Root(args.root.clone());
    if !root.0.is_dir() {
        return Err(
            CliError::usage(format!("--root {} is not a directory", args.root.display()))
                .fix("pass the directory the system to check is installed under, or drop --root"),
        );
    }
    // Kernel first: these are what the runner cannot do without. They run before any bus
    // connection exists, so the user-namespace probe forks a process with no I/O threads.
    let findings = vec![
        memfd_secret::check(),
        landlock::check(),
        user_namespaces::check(),
        cgroups::check(),
        seccomp::check(),
        daemon::check(g).await,
        dbus_policy::check(&root),
        pam_module::check(&root),
        pam_stack::check(&root),
        selinux::check(&root),
        state_dir::check(&root),
    ];
    if out.json {
        out.json(&Value::Array(
            findings.iter().map(Finding::to_json).collect(),
        ))?;
    } else {
        out.bytes(render(&findings).as_bytes())?;
    }
    out.flush()?;
    verdict(&findings)
}

/// One aligned line per finding, a `fix:` line under each that has one, and a summary.
pub fn render(findings: &[Finding]) -> String {
    let width = findings
        .iter()
        .map(|f| f.check.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for f in findings {
        text.push_str(&format!(
            "{:<4}  {:<width$}  {}\n",
            f.status.label(),
            f.check,
            sanitize(&f.detail)
        ));
        if let Some(fix) = &f.fix {
            text.push_str(&format!(
                "{:<4}  {:<width$}  fix: {}\n",
                "",
                "",
                sanitize(fix)
            ));
        }
    }
    let count = |s: Status| findings.iter().filter(|f| f.status == s).count();
    text.push_str(&format!(
        "{} checks: {} ok, {} warn, {} failed, {} skipped\n",
        findings.len(),
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Skip),
    ));
    text
}

/// Exit 1 when any check failed, naming them on stderr.
fn verdict(findings: &[Finding]) -> Result<(), CliError> {
    let failed: Vec<&str> = findings
        .iter()
        .filter(|f| f.status == Status::Fail)
        .map(|f| f.check)
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(CliError::new(
        Exit::Error,
        format!(
            "{} of {} checks failed: {}",
            failed.len(),
            findings.len(),
            failed.join(", ")
        ),
    )
    .fix("apply the fix printed with each failed check, then run agentkeysctl doctor again"))
}

/// `ENOENT` → "missing", anything else → the error text, for details.
pub fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "missing".to_owned(),
        std::io::ErrorKind::PermissionDenied => "not readable by this user".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Finding> {
        vec![
            Finding::ok("landlock", "ABI 7"),
            Finding::fail("daemon", "cannot reach agentkeysd", "start it"),
            Finding::warn("pam_stack", "not referenced", "add the lines"),
            Finding::skip("selinux", "not active"),
        ]
    }

    #[test]
    fn human_output_is_aligned_with_fixes_under_their_check() {
        let text = render(&sample());
        assert_eq!(
            text,
            "ok    landlock   ABI 7\n\
             FAIL  daemon     cannot reach agentkeysd\n\
             \x20                fix: start it\n\
             warn  pam_stack  not referenced\n\
             \x20                fix: add the lines\n\
             skip  selinux    not active\n\
             4 checks: 1 ok, 1 warn, 1 failed, 1 skipped\n"
        );
    }

    #[test]
    fn json_has_a_fix_only_where_there_is_one() {
        let v: Vec<Value> = sample().iter().map(Finding::to_json).collect();
        assert_eq!(
            v.first().cloned().unwrap_or_default(),
            json!({"check": "landlock", "status": "ok", "detail": "ABI 7"})
        );
        assert_eq!(
            v.get(1).cloned().unwrap_or_default(),
            json!({"check": "daemon", "status": "fail", "detail": "cannot reach agentkeysd", "fix": "start it"})
        );
    }

    #[test]
    fn only_failures_fail_the_command() {
        let e = verdict(&sample()).unwrap_err();
        assert_eq!(e.exit(), Exit::Error);
        let fine = [
            Finding::ok("a", "x"),
            Finding::warn("b", "y", "z"),
            Finding::skip("c", "w"),
        ];
        assert!(verdict(&fine).is_ok());
    }

    #[test]
    fn details_cannot_carry_escape_sequences() {
        let text = render(&[Finding::fail("x", "a\x1b[2Jb", "c\nd")]);
        assert!(!text.contains('\x1b'));
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn root_joins_absolute_paths() {
        let r = Root(PathBuf::from("/tmp/img"));
        assert_eq!(
            r.path("/etc/pam.d/agentkeys"),
            std::path::Path::new("/tmp/img/etc/pam.d/agentkeys")
        );
    }
}
