//! `agentkeysctl approve CODE [--yes]`: the owner's yes to an auth request.
//!
//! Steps, in order: parse the code locally (a typo costs no daemon call); `Fetch` the
//! request and show everything the owner should check, above all the OTP, which must match
//! the one on the agent's terminal; ask `Confirm? [y/N]` (`--yes` skips only this); then
//! `Approve`. When the daemon answers `Locked` it wants the owner to re-authenticate: the
//! login password is asked for without echo and handed over as a sealed memfd, never as
//! message bytes, and `Approve` is called once more. `--yes` never skips the password.

use std::collections::HashMap;
use std::str::FromStr;

use agentkeysd::api::ErrorKind;
use agentkeysd::api::proxies::ApprovalsProxy;
use agentkeysd::approvals::PairCode;
use clap::Args;
use zbus::Variant;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Exit, Subject, daemon_error};
use crate::output::{Out, hint, user_name};
use crate::requests::Request;
use crate::secret_input::{self, InputError};
use crate::time::now;

#[derive(Args, Debug)]
#[command(
    after_help = "The request is shown first: check that its OTP is the one the agent's \
terminal shows, and that the requester (uid, pid, executable) is the agent you started.
You may be asked for your login password (agentkeysd re-authenticates you through PAM,
at most every 5 minutes); --yes skips only the confirmation question, never that.
When stdin is not a terminal, the answer and then the password are read from it, one per line.
Examples:
  agentkeysctl approve ABCD-EFGH
  agentkeysctl approve abcdefgh --yes
  agentkeysctl pending                   (codes waiting for you)"
)]
pub struct ApproveArgs {
    /// The pair code the agent's terminal shows (ABCD-EFGH; case and dashes do not matter)
    pub code: String,

    /// Do not ask "Confirm?" (your password is still asked for when the daemon wants it)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub async fn run(g: &Global, args: &ApproveArgs, out: &mut Out) -> Result<(), CliError> {
    let code = parse_code(&args.code)?;
    let client = Client::connect(g).await?;
    let approvals = client.approvals().await?;
    let req = fetch(&client, &approvals, &code).await?;
    hint(req.summary(now()).trim_end_matches('\n'));
    if !args.yes {
        confirm(&code)?;
    }
    let op = client
        .op(format!("approve request {code}"), Subject::Other)
        .fix_for(
            ErrorKind::NotFound,
            "the request expired or was decided meanwhile (codes live 60 s): ask the agent's terminal for its new code",
        )
        .fix_for(
            ErrorKind::AlreadyConsumed,
            "it was decided already: agentkeysctl pending shows what still waits",
        )
        .fix_for(
            ErrorKind::Denied,
            format!(
                "try again: agentkeysctl approve {code} (the password is your login password; \
                 only the owner the request asks may approve it)"
            ),
        );
    match approvals.approve(&req.id, HashMap::new()).await {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::Locked => {
            approve_with_password(&approvals, &req.id, &op).await?;
        }
        Err(e) => return Err(daemon_error(e, &op)),
    }
    out.line(format!(
        "approved: {} for {} (request {})",
        req.type_name,
        req.subject(),
        req.id
    ))
}

/// The second `Approve`, with the login password as a sealed memfd.
async fn approve_with_password(
    approvals: &ApprovalsProxy<'_>,
    id: &str,
    op: &crate::errors::Op,
) -> Result<(), CliError> {
    let me = nix::unistd::geteuid().as_raw();
    let user = user_name(me).unwrap_or_else(|| format!("uid {me}"));
    let password =
        secret_input::ask_hidden(&format!("Password for {user}: ")).map_err(password_error)?;
    let fd = secret_input::sealed_memfd(&password, "the password")?;
    drop(password);
    let mut auth: HashMap<&str, Variant<'_>> = HashMap::new();
    auth.insert("password", Variant::from(zbus::Fd::from(&fd)));
    let result = approvals.approve(id, auth).await;
    drop(fd);
    result.map_err(|e| daemon_error(e, op))
}

fn password_error(e: InputError) -> CliError {
    let fix = "type your login password at the prompt, or pipe it in after the answer: \
               printf 'y\\n%s\\n' \"$PW\" | agentkeysctl approve CODE";
    match e {
        // The daemon answered Locked and nothing unlocks it: that is the exit code too.
        InputError::Empty => CliError::new(
            Exit::Locked,
            "approving needs your login password; none was given, nothing was approved",
        )
        .cause("agentkeysd re-authenticates the owner through PAM before an approval (at most every 5 minutes per login session)")
        .fix(fix),
        InputError::Cancelled => CliError::new(Exit::Error, "cancelled; nothing was approved"),
        InputError::TooLarge => CliError::usage("the password is too long").fix(fix),
        InputError::Mismatch => CliError::usage("the password entries differ").fix(fix),
        InputError::Read(err) => CliError::new(Exit::Error, "cannot read the password from stdin")
            .cause(err.to_string())
            .fix(fix),
        InputError::Tty(err) => {
            CliError::new(Exit::Error, "cannot read the password from the terminal")
                .cause(format!("/dev/tty: {err}"))
                .fix(fix)
        }
    }
}

/// `Confirm? [y/N]`: anything but y/yes is no.
fn confirm(code: &PairCode) -> Result<(), CliError> {
    let answer = secret_input::ask_line("Confirm? [y/N] ").map_err(|e| {
        CliError::new(Exit::Error, "cannot ask for confirmation")
            .cause(match e {
                InputError::Tty(err) => format!("/dev/tty: {err}"),
                InputError::Read(err) => format!("stdin: {err}"),
                _ => "the answer was not a line of text".to_owned(),
            })
            .fix(format!(
                "answer on a terminal, or pass --yes: agentkeysctl approve {code} --yes"
            ))
    })?;
    if answer.as_deref().is_some_and(is_yes) {
        return Ok(());
    }
    Err(CliError::new(Exit::Error, "not approved")
        .cause(match answer {
            None => "stdin ended before an answer".to_owned(),
            Some(_) => "you did not answer y".to_owned(),
        })
        .fix(format!(
            "the request stays pending until it expires; approve it with agentkeysctl approve {code} \
             (--yes skips the question), or refuse it: agentkeysctl deny {code}"
        )))
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// A pair code from the command line; a malformed one is a usage error (exit 2).
pub fn parse_code(arg: &str) -> Result<PairCode, CliError> {
    PairCode::from_str(arg).map_err(|e| {
        CliError::usage(format!("'{}' is not a pair code", crate::output::sanitize(arg)))
            .cause(e.to_string())
            .fix("copy the code the agent's terminal shows, e.g. ABCD-EFGH; agentkeysctl pending lists yours")
    })
}

/// `Fetch(code)`: the pending request the code names.
pub async fn fetch(
    client: &Client,
    approvals: &ApprovalsProxy<'_>,
    code: &PairCode,
) -> Result<Request, CliError> {
    let op = client
        .op(format!("find pending request {code}"), Subject::Other)
        .fix_for(
            ErrorKind::NotFound,
            "no pending request with that code: codes expire after 60 s; ask for a new one \
             (agentkeysctl pending lists the codes waiting for you)",
        )
        .fix_for(
            ErrorKind::Denied,
            "approve and deny from your own login session, not as a paired agent; root approves only its own requests",
        );
    let d = approvals
        .fetch(&code.to_string())
        .await
        .map_err(|e| daemon_error(e, &op))?;
    let req = Request::from_dict(&d);
    if req.id.is_empty() {
        return Err(CliError::new(
            Exit::Error,
            format!("agentkeysd described request {code} without its id"),
        )
        .fix("agentkeysctl and agentkeysd versions may differ; agentkeysctl status shows the daemon's"));
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn codes_are_checked_locally() {
        assert_eq!(parse_code("abcd-efgh").unwrap().to_string(), "ABCD-EFGH");
        assert_eq!(parse_code("ABCDEFGH").unwrap().to_string(), "ABCD-EFGH");
        for bad in ["", "ABCD", "ABCD-EFGU", "ABCD-EFGH-JK"] {
            assert_eq!(parse_code(bad).unwrap_err().exit(), Exit::Usage, "{bad:?}");
        }
    }

    #[test]
    fn only_y_or_yes_confirms() {
        for yes in ["y", "Y", "yes", " YES "] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "n", "no", "yy", "ja"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn yes_is_a_flag_and_the_code_is_required() {
        let cli = Cli::try_parse_from(["agentkeysctl", "approve", "ABCD-EFGH", "--yes"]).unwrap();
        assert!(matches!(cli.command, Command::Approve(ref a) if a.yes && a.code == "ABCD-EFGH"));
        assert!(Cli::try_parse_from(["agentkeysctl", "approve"]).is_err());
        assert!(Cli::try_parse_from(["agentkeysctl", "approve", "X", "--password", "p"]).is_err());
    }

    #[test]
    fn a_missing_password_leaves_the_request_locked() {
        assert_eq!(password_error(InputError::Empty).exit(), Exit::Locked);
    }
}
