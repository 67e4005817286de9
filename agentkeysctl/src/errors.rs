//! Exit codes and errors as the user sees them: problem → cause → fix (STYLE §10).
//!
//! Every failure of a command becomes a [`CliError`]; `main` prints it to stderr and exits
//! with its [`Exit`] code. Daemon errors are mapped in one place, [`daemon_error`], from the
//! small public set (`dev.agentkeys.Error.*`) plus the transport's own failures. No text
//! here ever contains a secret: the daemon's messages never do, and local errors only name
//! flags, names and sizes.

use std::fmt;
use std::io::{self, Write};

use agentkeysd::api::{Error as ApiError, ErrorKind};

/// The documented exit codes (see `agentkeysctl --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Error = 1,
    Usage = 2,
    Denied = 3,
    NotFound = 4,
    Expired = 5,
    Unreachable = 6,
    Locked = 7,
    /// Ctrl-C while waiting (`pair`): 128 + SIGINT, as a shell reports it.
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The exit-code table printed after the top-level `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit status:
    0  success
    1  error (also: a single-use credential was already used; an internal daemon error;
       doctor: a check failed — warnings alone exit 0)
    2  usage: bad flags or arguments, bad input, or the daemon rejected an argument
    3  access denied (also: the owner denied a pairing; a wrong password at approve)
    4  not found
    5  expired (also: pair --timeout passed without a decision)
    6  daemon unreachable (not running, not on this bus, shutting down, not answering)
    7  locked (the owner's login key is not loaded; approve without the password it needs)
  130  interrupted: Ctrl-C while `pair` waits for approval

`run` exits with the sandboxed command's own status once it ran: its exit code, 128+N
when signal N ended it, 137 when the run was killed (revoked agent, withdrawn grant,
cancel, --timeout), 127 when the command could not be executed. Before the command runs,
the codes above apply.

Secrets are never taken from the command line: `store` reads them from the terminal
without echo, or from stdin:
  printf %s \"$KEY\" | agentkeysctl store openai
  agentkeysctl store openai < keyfile

An agent pairs from its own terminal and its owner approves:
  agentkeysctl pair --name ci-bot --scope github     (agent side: shows a code and an OTP)
  agentkeysctl approve ABCD-EFGH                     (owner side: check the OTP, confirm)
  agentkeysctl grant ci-bot github
  AGENTKEYS_AGENT=ci-bot agentkeysctl read github    (agent side, with its stored identity)";

/// The rule every credential, agent and alias name follows, for error messages.
pub const NAME_RULE: &str =
    "names are 1–64 characters from a-z 0-9 . _ - starting with a letter or digit";

/// How a command failed.
#[derive(Debug)]
pub enum CliError {
    /// Stdout was closed by its reader (`agentkeysctl list | head -1`): a clean exit, silent.
    BrokenPipe,
    /// A failure to report as problem → cause → fix.
    Report(Report),
    /// `run`: the sandboxed command's own exit status, passed through silently.
    Status(u8),
}

/// One failure, in the words the user reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub exit: Exit,
    pub problem: String,
    pub cause: Option<String>,
    pub fix: Option<String>,
}

impl CliError {
    pub fn new(exit: Exit, problem: impl Into<String>) -> Self {
        CliError::Report(Report {
            exit,
            problem: problem.into(),
            cause: None,
            fix: None,
        })
    }

    /// Bad local input: exit 2.
    pub fn usage(problem: impl Into<String>) -> Self {
        Self::new(Exit::Usage, problem)
    }

    pub fn cause(mut self, cause: impl Into<String>) -> Self {
        if let CliError::Report(r) = &mut self {
            r.cause = Some(cause.into());
        }
        self
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        if let CliError::Report(r) = &mut self {
            r.fix = Some(fix.into());
        }
        self
    }

    pub fn exit(&self) -> Exit {
        match self {
            CliError::BrokenPipe => Exit::Ok,
            CliError::Report(r) => r.exit,
            CliError::Status(_) => Exit::Error,
        }
    }

    /// A failed write to stdout: a broken pipe is a clean exit, anything else an error.
    pub fn stdout(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::new(Exit::Error, "cannot write to stdout")
                .cause(err.to_string())
                .fix("check where stdout goes (a full disk, a closed terminal)")
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.problem)?;
        if let Some(c) = &self.cause {
            write!(f, "\n  cause: {c}")?;
        }
        if let Some(x) = &self.fix {
            write!(f, "\n  fix:   {x}")?;
        }
        Ok(())
    }
}

/// Prints the outcome of a command and turns it into the process exit code.
pub fn finish(result: Result<(), CliError>) -> u8 {
    let Err(err) = result else {
        return Exit::Ok.code();
    };
    if let CliError::Status(code) = err {
        return code;
    }
    if let CliError::Report(r) = &err {
        // Nowhere left to report a failure to write stderr; the exit code still says it.
        let _ = writeln!(io::stderr().lock(), "{r}");
    }
    err.exit().code()
}

/// Prints a clap error (or `--help`/`--version`) and returns its exit code: 2 for usage
/// errors, 0 for help and version. A closed stdout is not an error here either.
pub fn clap_exit(err: &clap::Error) -> u8 {
    let _ = err.print();
    if err.use_stderr() {
        Exit::Usage.code()
    } else {
        Exit::Ok.code()
    }
}

/// The exit code for a public daemon error kind (transport errors: see [`transport_exit`]).
pub fn exit_for_kind(kind: ErrorKind) -> Exit {
    match kind {
        ErrorKind::Denied => Exit::Denied,
        ErrorKind::NotFound => Exit::NotFound,
        ErrorKind::Expired => Exit::Expired,
        ErrorKind::AlreadyConsumed => Exit::Error,
        ErrorKind::InvalidArgument => Exit::Usage,
        ErrorKind::Locked => Exit::Locked,
        ErrorKind::Unavailable => Exit::Unreachable,
        ErrorKind::Internal => Exit::Error,
        ErrorKind::Transport => Exit::Unreachable,
    }
}

/// What a transport failure means for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportClass {
    /// The bus or the daemon cannot be reached, or did not answer.
    Unreachable,
    /// The bus policy refused the call.
    Denied,
    /// The daemon does not know the method or interface: versions differ.
    Unsupported,
    /// Anything else (a malformed reply…).
    Other,
}

impl TransportClass {
    pub fn exit(self) -> Exit {
        match self {
            TransportClass::Unreachable => Exit::Unreachable,
            TransportClass::Denied => Exit::Denied,
            TransportClass::Unsupported | TransportClass::Other => Exit::Error,
        }
    }
}

/// Classifies a D-Bus error name sent by the bus (not by agentkeysd).
pub fn classify_error_name(name: &str) -> TransportClass {
    const PREFIX: &str = "org.freedesktop.DBus.Error.";
    let Some(short) = name.strip_prefix(PREFIX) else {
        return TransportClass::Other;
    };
    match short {
        "ServiceUnknown" | "NameHasNoOwner" | "NoReply" | "Timeout" | "TimedOut" | "NoServer"
        | "Disconnected" | "NoNetwork" => TransportClass::Unreachable,
        s if s.starts_with("Spawn.") => TransportClass::Unreachable,
        "AccessDenied" | "AuthFailed" => TransportClass::Denied,
        "UnknownMethod" | "UnknownInterface" | "UnknownObject" | "UnknownProperty" => {
            TransportClass::Unsupported
        }
        _ => TransportClass::Other,
    }
}

/// Classifies a transport-level zbus error.
pub fn classify_transport(err: &zbus::Error) -> TransportClass {
    match err {
        zbus::Error::InputOutput(_) | zbus::Error::Connection(..) | zbus::Error::Handshake(_) => {
            TransportClass::Unreachable
        }
        zbus::Error::MethodError(name, _, _) => classify_error_name(name.as_str()),
        zbus::Error::FDO(e) => match e.as_ref() {
            zbus::fdo::Error::ZBus(inner) => classify_transport(inner),
            other => classify_error_name(zbus::DBusError::name(other).as_str()),
        },
        zbus::Error::InterfaceNotFound => TransportClass::Unsupported,
        _ => TransportClass::Other,
    }
}

/// The exit code for a transport failure.
pub fn transport_exit(err: &zbus::Error) -> Exit {
    classify_transport(err).exit()
}

/// The exit code for any error a proxy call returns.
pub fn exit_for(err: &ApiError) -> Exit {
    match err {
        ApiError::ZBus(e) => transport_exit(e),
        other => exit_for_kind(other.kind()),
    }
}

/// What a command was doing when the daemon said no; turns the daemon's answer into
/// problem → cause → fix.
#[derive(Debug, Clone)]
pub struct Op {
    /// "read credential 'github'": completes "cannot …".
    pub action: String,
    pub subject: Subject,
    /// "uid 1000 (alice)": whose objects the call addressed.
    pub owner: String,
    /// " --owner alice" when the user passed it, so suggested commands carry it.
    pub owner_flag: String,
    /// The bus as a phrase ("the system bus"), for "cannot reach agentkeysd on …".
    pub bus: String,
    /// Command-specific fixes that replace the generic one for a kind.
    fixes: Vec<(ErrorKind, String)>,
}

/// The object a call was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Credential(String),
    Agent(String),
    Other,
}

impl Op {
    pub fn new(
        action: impl Into<String>,
        subject: Subject,
        owner: String,
        owner_flag: String,
        bus: String,
    ) -> Self {
        Op {
            action: action.into(),
            subject,
            owner,
            owner_flag,
            bus,
            fixes: Vec::new(),
        }
    }

    /// Uses `fix` instead of the generic fix when the daemon answers `kind`.
    pub fn fix_for(mut self, kind: ErrorKind, fix: impl Into<String>) -> Self {
        self.fixes.push((kind, fix.into()));
        self
    }

    fn fix_override(&self, kind: ErrorKind) -> Option<String> {
        self.fixes
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, f)| f.clone())
    }
}

/// The one mapping from a daemon (or bus) error to what the user reads and the exit code.
pub fn daemon_error(err: ApiError, op: &Op) -> CliError {
    let exit = exit_for(&err);
    let kind = err.kind();
    let msg = err.message();
    let report = match &err {
        ApiError::ZBus(e) => transport_report(e, op, exit),
        _ => kind_report(kind, &msg, op, exit),
    };
    let report = match op.fix_override(kind) {
        Some(fix) if !matches!(err, ApiError::ZBus(_)) => Report {
            fix: Some(fix),
            ..report
        },
        _ => report,
    };
    CliError::Report(report)
}

fn report(exit: Exit, problem: String, cause: String, fix: String) -> Report {
    Report {
        exit,
        problem,
        cause: Some(cause),
        fix: Some(fix),
    }
}

fn kind_report(kind: ErrorKind, msg: &str, op: &Op, exit: Exit) -> Report {
    let of = &op.owner_flag;
    match (kind, &op.subject) {
        (ErrorKind::NotFound, Subject::Credential(n)) => report(
            exit,
            format!("credential '{n}' not found"),
            format!("the daemon has no credential '{n}' for {}", op.owner),
            format!("list what exists with: agentkeysctl list{of}"),
        ),
        (ErrorKind::NotFound, Subject::Agent(a)) => report(
            exit,
            format!("agent '{a}' not found"),
            format!(
                "{} has no agent with the id, name, alias or e-mail '{a}'",
                op.owner
            ),
            format!("list agents with: agentkeysctl agent list{of}"),
        ),
        (ErrorKind::NotFound, Subject::Other) => report(
            exit,
            format!("cannot {}: not found", op.action),
            msg.to_owned(),
            format!("check the name, then retry; agentkeysctl list{of} shows what exists"),
        ),
        // The daemon answers Denied for a revoked agent too; that needs another fix. The
        // approve it names carries no --owner: the owner approves from their own login.
        (ErrorKind::Denied, Subject::Agent(a)) if msg.contains("revoked") => report(
            exit,
            format!("access denied — agent '{a}' was revoked"),
            msg.to_owned(),
            format!(
                "pair it again: agentkeysctl pair --recover {a}, then agentkeysctl approve <code>"
            ),
        ),
        (ErrorKind::Denied, _) => report(
            exit,
            format!("access denied — cannot {}", op.action),
            msg.to_owned(),
            if of.is_empty() {
                "act only on your own credentials and agents; root may act for another owner with --owner USER".to_owned()
            } else {
                format!(
                    "only root may act for another owner: drop --owner, or run it as root: sudo agentkeysctl{of} …"
                )
            },
        ),
        (ErrorKind::Expired, Subject::Credential(n)) => report(
            exit,
            format!("credential '{n}' has expired"),
            msg.to_owned(),
            format!("store a fresh value with: agentkeysctl store{of} {n} --replace"),
        ),
        (ErrorKind::Expired, _) => report(
            exit,
            format!("cannot {}: expired", op.action),
            msg.to_owned(),
            "start over; what you referred to is no longer valid".to_owned(),
        ),
        (ErrorKind::AlreadyConsumed, Subject::Credential(n)) => report(
            exit,
            format!("credential '{n}' was single-use and has been used"),
            msg.to_owned(),
            format!("store a new value with: agentkeysctl store{of} {n} --replace"),
        ),
        (ErrorKind::AlreadyConsumed, _) => report(
            exit,
            format!("cannot {}: already used", op.action),
            msg.to_owned(),
            "it was single-use; start over".to_owned(),
        ),
        (ErrorKind::InvalidArgument, _) => report(
            exit,
            format!("agentkeysd rejected the request to {}", op.action),
            msg.to_owned(),
            format!("{NAME_RULE}; see agentkeysctl help"),
        ),
        (ErrorKind::Locked, Subject::Credential(n)) => report(
            exit,
            format!("cannot {}: credential '{n}' is locked", op.action),
            msg.to_owned(),
            "log in again: pam_agentkeys unlocks login-class credentials at login".to_owned(),
        ),
        (ErrorKind::Locked, _) => report(
            exit,
            format!("cannot {}: it is locked", op.action),
            msg.to_owned(),
            format!(
                "log in as {} (pam_agentkeys unlocks login-protected credentials at login), then retry",
                op.owner
            ),
        ),
        (ErrorKind::Unavailable, _) => report(
            exit,
            format!("agentkeysd cannot {} right now", op.action),
            msg.to_owned(),
            "retry once agentkeysd is back: systemctl status agentkeysd".to_owned(),
        ),
        (ErrorKind::Internal, _) | (ErrorKind::Transport, _) => report(
            exit,
            format!("agentkeysd failed to {}", op.action),
            msg.to_owned(),
            "see the daemon's log: journalctl -u agentkeysd".to_owned(),
        ),
    }
}

fn transport_report(err: &zbus::Error, op: &Op, exit: Exit) -> Report {
    let detail = err.to_string();
    match classify_transport(err) {
        TransportClass::Unreachable => unreachable_report(&op.bus, detail),
        TransportClass::Denied => report(
            exit,
            format!("access denied — {} refused the call to {}", op.bus, op.action),
            detail,
            "the D-Bus policy for dev.agentkeys.Daemon1 does not allow this user; check the policy file installed with agentkeysd".to_owned(),
        ),
        TransportClass::Unsupported => report(
            exit,
            format!("agentkeysd does not support the request to {}", op.action),
            detail,
            "agentkeysctl and agentkeysd versions differ; install matching versions (agentkeysctl status shows the daemon's)".to_owned(),
        ),
        TransportClass::Other => report(
            exit,
            format!("talking to agentkeysd failed while trying to {}", op.action),
            detail,
            "retry; if it persists, see the daemon's log: journalctl -u agentkeysd".to_owned(),
        ),
    }
}

/// Exit 6: the bus answered, but agentkeysd is not on it (or stopped answering).
pub fn unreachable_report(bus: &str, detail: String) -> Report {
    report(
        Exit::Unreachable,
        format!("cannot reach agentkeysd on {bus}"),
        detail,
        "start it (sudo systemctl start agentkeysd), or point --bus / AGENTKEYS_BUS at the bus it runs on".to_owned(),
    )
}

/// Exit 6: the bus itself cannot be reached.
pub fn bus_unreachable_report(bus: &str, detail: String) -> Report {
    report(
        Exit::Unreachable,
        format!("cannot reach agentkeysd: cannot connect to {bus}"),
        detail,
        "check that D-Bus runs there, or point --bus / AGENTKEYS_BUS at the bus agentkeysd runs on (system, session or unix:path=…)".to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn op() -> Op {
        Op::new(
            "read credential 'github'",
            Subject::Credential("github".into()),
            "uid 1000 (alice)".into(),
            String::new(),
            "the system bus".into(),
        )
    }

    fn report_of(e: CliError) -> Report {
        match e {
            CliError::Report(r) => r,
            CliError::BrokenPipe | CliError::Status(_) => panic!("expected a report"),
        }
    }

    #[test]
    fn every_public_error_kind_has_its_documented_exit_code() {
        let cases = [
            (ApiError::Denied("x".into()), 3),
            (ApiError::NotFound("x".into()), 4),
            (ApiError::Expired("x".into()), 5),
            (ApiError::AlreadyConsumed("x".into()), 1),
            (ApiError::InvalidArgument("x".into()), 2),
            (ApiError::Locked("x".into()), 7),
            (ApiError::Unavailable("x".into()), 6),
            (ApiError::Internal("x".into()), 1),
        ];
        for (err, code) in cases {
            let kind = err.kind();
            assert_eq!(exit_for(&err).code(), code, "{kind:?}");
            assert_eq!(daemon_error(err, &op()).exit().code(), code, "{kind:?}");
        }
    }

    #[test]
    fn unreachable_daemon_and_bus_exit_6() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::NotFound,
            io::ErrorKind::TimedOut,
        ] {
            let e = ApiError::ZBus(zbus::Error::InputOutput(Arc::new(io::Error::from(kind))));
            assert_eq!(exit_for(&e), Exit::Unreachable, "{kind:?}");
        }
        for fdo in [
            zbus::fdo::Error::ServiceUnknown("x".into()),
            zbus::fdo::Error::NameHasNoOwner("x".into()),
            zbus::fdo::Error::NoReply("x".into()),
            zbus::fdo::Error::Timeout("x".into()),
            zbus::fdo::Error::TimedOut("x".into()),
            zbus::fdo::Error::SpawnChildExited("x".into()),
        ] {
            let e = ApiError::ZBus(zbus::Error::FDO(Box::new(fdo)));
            assert_eq!(exit_for(&e), Exit::Unreachable);
        }
        let r = report_of(daemon_error(
            ApiError::ZBus(zbus::Error::FDO(Box::new(
                zbus::fdo::Error::ServiceUnknown("gone".into()),
            ))),
            &op(),
        ));
        assert_eq!(r.exit, Exit::Unreachable);
        assert!(
            r.problem
                .contains("cannot reach agentkeysd on the system bus")
        );
    }

    #[test]
    fn bus_policy_denial_exits_3_and_version_mismatch_exits_1() {
        let denied = ApiError::ZBus(zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied(
            "no".into(),
        ))));
        assert_eq!(exit_for(&denied), Exit::Denied);
        let unknown = ApiError::ZBus(zbus::Error::FDO(Box::new(zbus::fdo::Error::UnknownMethod(
            "no".into(),
        ))));
        assert_eq!(exit_for(&unknown), Exit::Error);
        assert_eq!(
            exit_for(&ApiError::ZBus(zbus::Error::InvalidReply)),
            Exit::Error
        );
    }

    #[test]
    fn error_names_from_the_bus_are_classified() {
        assert_eq!(
            classify_error_name("org.freedesktop.DBus.Error.NameHasNoOwner"),
            TransportClass::Unreachable
        );
        assert_eq!(
            classify_error_name("org.freedesktop.DBus.Error.Spawn.ExecFailed"),
            TransportClass::Unreachable
        );
        assert_eq!(
            classify_error_name("org.freedesktop.DBus.Error.AccessDenied"),
            TransportClass::Denied
        );
        assert_eq!(
            classify_error_name("org.freedesktop.DBus.Error.UnknownInterface"),
            TransportClass::Unsupported
        );
        assert_eq!(
            classify_error_name("com.example.Weird"),
            TransportClass::Other
        );
    }

    #[test]
    fn not_found_reads_as_problem_cause_fix() {
        let r = report_of(daemon_error(
            ApiError::NotFound("credential not found".into()),
            &op(),
        ));
        assert_eq!(
            r.to_string(),
            "error: credential 'github' not found\n  \
             cause: the daemon has no credential 'github' for uid 1000 (alice)\n  \
             fix:   list what exists with: agentkeysctl list"
        );
    }

    #[test]
    fn commands_can_override_the_fix_for_a_kind() {
        let op = op().fix_for(ErrorKind::InvalidArgument, "pass --replace");
        let r = report_of(daemon_error(
            ApiError::InvalidArgument("exists".into()),
            &op,
        ));
        assert_eq!(r.fix.as_deref(), Some("pass --replace"));
        assert_eq!(r.cause.as_deref(), Some("exists"));
        assert_eq!(r.exit, Exit::Usage);
    }

    #[test]
    fn a_revoked_agent_is_approved_again_without_owner() {
        let mut op = op();
        op.subject = Subject::Agent("ci-bot".into());
        op.owner_flag = " --owner alice".into();
        let r = report_of(daemon_error(
            ApiError::Denied("agent is revoked".into()),
            &op,
        ));
        assert_eq!(
            r.fix.as_deref(),
            Some(
                "pair it again: agentkeysctl pair --recover ci-bot, then agentkeysctl approve <code>"
            )
        );
    }

    #[test]
    fn broken_pipe_is_a_clean_silent_exit() {
        let e = CliError::stdout(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(e, CliError::BrokenPipe));
        assert_eq!(e.exit(), Exit::Ok);
        let other = CliError::stdout(io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!(other.exit(), Exit::Error);
    }

    #[test]
    fn local_usage_errors_exit_2() {
        assert_eq!(CliError::usage("bad").exit().code(), 2);
    }
}
