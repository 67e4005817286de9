//! `agentkeysctl pair`: the child side of pairing (DESIGN §4). Run it where the agent
//! runs; the owner approves from their own session with `agentkeysctl approve CODE`.
//!
//! Steps, in order:
//! 1. Check the arguments and build the canonical details locally (a bad name costs no
//!    daemon call), and find the config directory before anything is asked of the owner.
//! 2. Make the agent's key: a 32-byte Ed25519 seed from getrandom, kept in `Zeroizing`.
//! 3. `Open` the request; show `Pair code: …   OTP: …` on stdout (flushed) and on stderr
//!    what the owner must run.
//! 4. `Await` the decision in slices of at most 30 s. An expired code is replaced by a new
//!    request with the same key and details; denied is exit 3; Ctrl-C is exit 130 (the
//!    request simply expires).
//! 5. Verify the daemon's signature over exactly the request we opened (id, type, our
//!    details bytes, our key, approver, created, nonce) with the host key `Open` named.
//!    A signature that does not verify is refused and nothing is stored.
//! 6. Store the identity atomically (0600, see [`crate::identity`]) under the name the
//!    approval carries (when recovering, the only place it is learnt), and print the agent
//!    id.

mod decision;

use std::time::{Duration, Instant};

use agentkeysd::api::ErrorKind;
use agentkeysd::api::dict::Dict;
use agentkeysd::api::names::valid_name;
use agentkeysd::api::proxies::ApprovalsProxy;
use agentkeysd::approvals::{
    Details, MAX_SCOPE_NAMES, PUBLIC_KEY_LEN, Pair, Recover, State, encode, public_key_of,
};
use clap::Args;
use serde_json::json;
use tokio::signal::unix::{Signal, SignalKind, signal};
use zeroize::Zeroizing;

use crate::cli::Global;
use crate::client::{Client, Owner};
use crate::errors::{CliError, Exit, NAME_RULE, Subject, daemon_error};
use crate::identity::{self, Identity, IdentityError, SEED_LEN};
use crate::output::{Out, describe_uid, format_utc, hint, sanitize};
use crate::time::now;

use decision::{Decision, Opened, Opening, outcome, parse_opened, verify_approval};

#[derive(Args, Debug)]
#[command(
    after_help = "Run this where the agent runs. It prints a pair code and an OTP, then \
waits; the owner approves from their own login:
  agentkeysctl approve ABCD-EFGH
and checks that the OTP they see is the one shown here. When the code expires (60 s)
a new one is shown. On approval the agent's key and session are stored in
~/.config/agentkeys/agents/<agent_id>.json (0600) and the agent id is printed.
Examples:
  agentkeysctl pair --name ci-bot --scope github,openai
  agentkeysctl pair --name ci-bot --owner alice          (ask alice, not yourself)
  agentkeysctl pair --recover ci-bot                     (a new key for an existing agent)
  export AGENTKEYS_AGENT=\"$(agentkeysctl pair --name ci-bot | tail -n 1)\"
With --json, stdout carries JSON lines: one object per code shown, then the result."
)]
pub struct PairArgs {
    /// The agent's name: 1–64 characters from a-z 0-9 . _ - (the owner sees it)
    #[arg(long, value_name = "NAME", conflicts_with = "recover")]
    pub name: Option<String>,

    /// Credentials the agent asks for, comma-separated (e.g. github,openai)
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        conflicts_with = "recover"
    )]
    pub scope: Vec<String>,

    /// Take over an existing agent with this new key (after a revoke, or on a new
    /// machine): its id (agt_…), name, alias or e-mail
    #[arg(long, value_name = "IDENTITY")]
    pub recover: Option<String>,

    /// Give up after SECS seconds without a decision [default: wait until decided]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
}

/// Longest single `Await`: short enough that a lost daemon is noticed, long enough to
/// cost nothing.
const AWAIT_SLICE_S: i64 = 30;

pub async fn run(g: &Global, args: &PairArgs, out: &mut Out) -> Result<(), CliError> {
    // 1. Everything local first. `--owner` is resolved once, here, and handed to the client.
    let owner = Owner::of(g)?;
    let dir = identity::agents_dir().map_err(IdentityError::into_cli)?;
    let scope = parse_scope(&args.scope)?;
    // 2. The agent's key.
    let seed = new_seed()?;
    let pubkey = public_key_of(&seed);
    let details = build_details(args, scope, owner.explicit.then_some(owner.uid), pubkey)?;
    let request = Opening {
        request_type: details.request_type(),
        cbor: encode(&details),
        pubkey,
    };
    // Ctrl-C is caught from here on, so it always ends in the clean exit 130.
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| {
        CliError::new(Exit::Error, "cannot catch Ctrl-C")
            .cause(e.to_string())
            .fix("retry; if it persists, check the process limits")
    })?;
    let client = Client::connect_for(g, owner).await?;
    let approvals = client.approvals().await?;
    // 3–4. Open, show, wait.
    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    let (opened, reply) = wait_for_approval(
        &client,
        &approvals,
        &request,
        args,
        deadline,
        &mut sigint,
        out,
    )
    .await?;
    // 5. Trust nothing that does not verify.
    let decision = verify_approval(&opened, &request, &reply)?;
    // 6. Store it, named as the daemon named the agent.
    let id = Identity {
        agent_id: decision.agent_id.clone(),
        name: decision.name.clone().or_else(|| args.name.clone()),
        owner: opened.owner,
        session: decision.session.clone(),
        session_expires: decision.session_expires,
        host_key: opened.host_key,
        seed,
        created: now(),
    };
    let path = identity::write(&dir, &id).map_err(IdentityError::into_cli)?;
    report_paired(out, &id, &decision, &path)
}

/// `--scope`: trimmed, empty entries dropped, duplicates dropped (the wire forbids them),
/// each a valid credential name.
pub fn parse_scope(raw: &[String]) -> Result<Vec<String>, CliError> {
    let mut scope: Vec<String> = Vec::new();
    for item in raw.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if !valid_name(item) {
            return Err(CliError::usage(format!(
                "--scope entry '{}' is not a credential name",
                sanitize(item)
            ))
            .cause(NAME_RULE)
            .fix("for example --scope github,openai"));
        }
        if !scope.iter().any(|s| s == item) {
            scope.push(item.to_owned());
        }
    }
    if scope.len() > MAX_SCOPE_NAMES {
        return Err(CliError::usage(format!(
            "--scope names {} credentials; at most {MAX_SCOPE_NAMES} may be asked for",
            scope.len()
        )));
    }
    Ok(scope)
}

/// The request's details, checked as the daemon will check them.
fn build_details(
    args: &PairArgs,
    scope: Vec<String>,
    owner: Option<u32>,
    pubkey: [u8; PUBLIC_KEY_LEN],
) -> Result<Details, CliError> {
    if let Some(name) = &args.name
        && !valid_name(name)
    {
        return Err(
            CliError::usage(format!("'{}' is not a valid agent name", sanitize(name)))
                .cause(NAME_RULE)
                .fix("for example --name ci-bot"),
        );
    }
    let details = match &args.recover {
        Some(identity) => Details::Recover(Recover {
            agent_identity: identity.clone(),
            new_pubkey: pubkey,
            owner,
        }),
        None => Details::Pair(Pair {
            requested_scope: scope,
            name: args.name.clone(),
            owner,
        }),
    };
    details.validate().map_err(|e| {
        CliError::usage("the pairing request is not valid")
            .cause(e.to_string())
            .fix("check --name, --scope and --recover (agentkeysctl pair --help)")
    })?;
    Ok(details)
}

/// 32 bytes from the OS CSPRNG, straight into a buffer wiped on drop.
fn new_seed() -> Result<Zeroizing<[u8; SEED_LEN]>, CliError> {
    let mut seed = Zeroizing::new([0u8; SEED_LEN]);
    getrandom::fill(seed.as_mut_slice()).map_err(|e| {
        CliError::new(Exit::Error, "cannot make the agent's key")
            .cause(format!("the OS random source failed: {e}"))
            .fix("retry; check that getrandom(2) works in this environment")
    })?;
    Ok(seed)
}

/// Opens requests and awaits them until one is decided; returns the approved one and the
/// `Await` answer that carries the signed decision.
async fn wait_for_approval(
    client: &Client,
    approvals: &ApprovalsProxy<'_>,
    request: &Opening,
    args: &PairArgs,
    deadline: Option<Instant>,
    sigint: &mut Signal,
    out: &mut Out,
) -> Result<(Opened, Dict), CliError> {
    let what = match &args.recover {
        Some(r) => format!("recovery of agent '{r}'"),
        None => "pairing".to_owned(),
    };
    let mut first = true;
    loop {
        let opened = open(client, approvals, request, args).await?;
        show_code(out, &opened, first)?;
        first = false;
        loop {
            let left = opened.expires.saturating_sub(now());
            let mut wait = left.saturating_add(1).clamp(1, AWAIT_SLICE_S);
            if let Some(budget) = seconds_left(deadline) {
                if budget == 0 {
                    return Err(timed_out(args, &opened, false));
                }
                wait = wait.min(i64::try_from(budget).unwrap_or(AWAIT_SLICE_S));
            }
            let reply = tokio::select! {
                r = approvals.await_decision(&opened.id, u32::try_from(wait).unwrap_or(1)) => r,
                _ = sigint.recv() => return Err(interrupted(&opened)),
            };
            let reply = match reply {
                Ok(r) => r,
                // Gone or expired under us: the same as an expired code.
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Expired) => {
                    break;
                }
                Err(e) => {
                    let op = client.op(format!("wait for the decision on {what}"), Subject::Other);
                    return Err(daemon_error(e, &op));
                }
            };
            match outcome(&reply) {
                Ok(State::Pending) => continue,
                Ok(State::Expired) => break,
                Ok(State::Approved) => return Ok((opened, reply)),
                Ok(State::Denied) => return Err(denied(&what, &opened)),
                Ok(State::Consumed) => return Err(consumed(&opened)),
                Err(state) => {
                    return Err(CliError::new(
                        Exit::Error,
                        format!("agentkeysd answered Await with an unknown state '{}'", sanitize(&state)),
                    )
                    .fix("agentkeysctl and agentkeysd versions may differ; agentkeysctl status shows the daemon's"));
                }
            }
        }
        // The code expired: no new request once --timeout has passed.
        if seconds_left(deadline) == Some(0) {
            return Err(timed_out(args, &opened, true));
        }
        hint(&format!(
            "The code {} expired without a decision; here is a new one.",
            sanitize(&opened.pair_code)
        ));
    }
}

async fn open(
    client: &Client,
    approvals: &ApprovalsProxy<'_>,
    request: &Opening,
    args: &PairArgs,
) -> Result<Opened, CliError> {
    let mut op = client.op("open a pairing request", Subject::Other).fix_for(
        ErrorKind::InvalidArgument,
        format!("check --name and --scope: {NAME_RULE}"),
    );
    if let Some(r) = &args.recover {
        op = client
            .op(format!("ask to recover agent '{r}'"), Subject::Other)
            .fix_for(
                ErrorKind::NotFound,
                "name the agent by its id (agt_…; the owner's agentkeysctl agent list shows it) or its name, \
                 or have the owner link an alias first: agentkeysctl agent link AGENT --alias NAME",
            );
    }
    let reply = approvals
        .open(
            request.request_type.as_str(),
            &request.cbor,
            &request.pubkey,
        )
        .await
        .map_err(|e| daemon_error(e, &op))?;
    parse_opened(&reply)
}

/// The code line on stdout (flushed: a person or a script is waiting for it), and on
/// stderr what the owner has to do.
fn show_code(out: &mut Out, o: &Opened, first: bool) -> Result<(), CliError> {
    let code = sanitize(&o.pair_code);
    let otp = sanitize(&o.otp);
    if out.json {
        out.line(
            json!({
                "pair_code": code,
                "otp": otp,
                "expires": o.expires,
                "owner": o.owner,
                "request": o.id,
            })
            .to_string(),
        )?;
    } else {
        out.line(format!("Pair code: {code}   OTP: {otp}"))?;
    }
    out.flush()?;
    let me = nix::unistd::geteuid().as_raw();
    let who = if o.owner == me {
        "you".to_owned()
    } else {
        describe_uid(o.owner)
    };
    let left = o.expires.saturating_sub(now()).max(0);
    let intro = if first {
        format!("Waiting for approval by {who}. On the owner's own login, run:")
    } else {
        "Approve the new code instead:".to_owned()
    };
    hint(&format!(
        "{intro}\n  agentkeysctl approve {code}\nand check that it shows OTP {otp}. The code expires in {left} s \
         ({}); a new one is shown then. Ctrl-C stops waiting.",
        format_utc(o.expires)
    ));
    Ok(())
}

fn report_paired(
    out: &mut Out,
    id: &Identity,
    d: &Decision,
    path: &std::path::Path,
) -> Result<(), CliError> {
    if out.json {
        out.line(
            json!({
                "agent_id": id.agent_id,
                "name": id.name,
                "owner": id.owner,
                "approver": d.approver,
                "scope": d.scope,
                "session_expires": id.session_expires,
                "identity_file": path.display().to_string(),
            })
            .to_string(),
        )?;
    } else {
        out.line(&id.agent_id)?;
    }
    out.flush()?;
    let name = id
        .name
        .as_deref()
        .map_or_else(String::new, |n| format!(" '{n}'"));
    let scope = if d.scope.is_empty() {
        "none yet".to_owned()
    } else {
        d.scope.join(", ")
    };
    hint(&format!(
        "Paired: agent{name} ({}) of {}; scope: {scope}; session until {}.\n\
         Identity stored in {}.\n\
         Use it with: export AGENTKEYS_AGENT={}",
        id.agent_id,
        describe_uid(id.owner),
        format_utc(id.session_expires),
        path.display(),
        id.agent_id
    ));
    Ok(())
}

fn denied(what: &str, o: &Opened) -> CliError {
    CliError::new(Exit::Denied, format!("the owner denied the {what}"))
        .cause(format!(
            "{} answered no to request {}",
            describe_uid(o.owner),
            sanitize(&o.pair_code)
        ))
        .fix("ask the owner why; then run agentkeysctl pair again")
}

fn consumed(o: &Opened) -> CliError {
    CliError::new(Exit::Error, "the approval was collected by someone else")
        .cause(format!(
            "request {} was approved, but another Await on it took the decision first",
            sanitize(&o.pair_code)
        ))
        .fix("nothing was stored here; run agentkeysctl pair again")
}

fn interrupted(o: &Opened) -> CliError {
    CliError::new(Exit::Interrupted, "stopped waiting for approval")
        .cause(format!(
            "Ctrl-C; request {} expires on its own at {}",
            sanitize(&o.pair_code),
            format_utc(o.expires)
        ))
        .fix("run agentkeysctl pair again when the owner is ready")
}

/// Whole seconds left before `--timeout` ends the wait; `None` without one.
fn seconds_left(deadline: Option<Instant>) -> Option<u64> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs())
}

/// `--timeout` passed; `expired`: the last code expired too (else it is still pending).
fn timed_out(args: &PairArgs, o: &Opened, expired: bool) -> CliError {
    let secs = args.timeout.unwrap_or(0);
    let state = if expired {
        "expired without a decision"
    } else {
        "is still pending; it expires on its own"
    };
    CliError::new(Exit::Expired, format!("no decision within {secs} s"))
        .cause(format!("request {} {state}", sanitize(&o.pair_code)))
        .fix("run agentkeysctl pair again with a longer --timeout, or without one to wait until decided")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(argv: &[&str]) -> PairArgs {
        let mut full = vec!["agentkeysctl", "pair"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Pair(a) => a,
            _ => panic!("not pair"),
        }
    }

    #[test]
    fn scopes_are_trimmed_deduplicated_and_checked() {
        let raw: Vec<String> = ["github", " openai", "", "github"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(parse_scope(&raw).unwrap(), ["github", "openai"]);
        assert_eq!(
            parse_scope(&["Git Hub".into()]).unwrap_err().exit(),
            Exit::Usage
        );
        let many: Vec<String> = (0..=MAX_SCOPE_NAMES).map(|i| format!("c{i}")).collect();
        assert_eq!(parse_scope(&many).unwrap_err().exit(), Exit::Usage);
    }

    #[test]
    fn arguments_build_the_right_details() {
        let pk = public_key_of(&[7; 32]);
        let a = args(&[
            "--name",
            "ci-bot",
            "--scope",
            "github,openai",
            "--timeout",
            "90",
        ]);
        assert_eq!(a.timeout, Some(90));
        let scope = parse_scope(&a.scope).unwrap();
        match build_details(&a, scope, Some(1000), pk).unwrap() {
            Details::Pair(p) => {
                assert_eq!(p.name.as_deref(), Some("ci-bot"));
                assert_eq!(p.requested_scope, ["github", "openai"]);
                assert_eq!(p.owner, Some(1000));
            }
            other => panic!("{other:?}"),
        }
        let a = args(&["--recover", "ci-bot"]);
        match build_details(&a, vec![], None, pk).unwrap() {
            Details::Recover(r) => {
                assert_eq!(r.agent_identity, "ci-bot");
                assert_eq!(r.new_pubkey, pk);
                assert_eq!(r.owner, None);
            }
            other => panic!("{other:?}"),
        }
        let bad = args(&["--name", "Bad Name"]);
        assert_eq!(
            build_details(&bad, vec![], None, pk).unwrap_err().exit(),
            Exit::Usage
        );
    }

    #[test]
    fn recover_excludes_name_and_scope() {
        for argv in [
            &["agentkeysctl", "pair", "--recover", "x", "--name", "y"][..],
            &[
                "agentkeysctl",
                "pair",
                "--recover",
                "x",
                "--scope",
                "github",
            ],
            &["agentkeysctl", "pair", "--timeout", "0"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn seeds_are_random() {
        assert_ne!(*new_seed().unwrap(), *new_seed().unwrap());
    }
}
