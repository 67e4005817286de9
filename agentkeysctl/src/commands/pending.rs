//! `agentkeysctl pending [--watch]`: the auth requests waiting for the caller's decision.
//!
//! `--watch` subscribes to `RequestOpened` and `RequestDecided` *before* listing, so a
//! request opened between the listing and the subscription cannot be missed; it then
//! prints one line per event (flushed at once) until SIGINT or SIGTERM, which end it
//! cleanly (exit 0).
//!
//! `RequestOpened` reaches every connection on the bus, so it carries only the request's
//! id, type, owner and times. For a request of the caller's (root: anyone's), the watcher
//! asks `Pending` (which answers the owner only) and prints the full line from there:
//! code, OTP, name, requester, scope. A `RequestDecided` is printed for requests it has
//! shown: "approved", or "denied or expired" (the signal does not tell those apart).

use std::collections::HashMap;

use agentkeysd::api::dict::{Dict, get_str};
use clap::Args;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Exit, Subject, daemon_error, unreachable_report};
use crate::output::{Out, dict_to_json, hint};
use crate::requests::{Request, decided_line, pending_table};
use crate::time::now;

#[derive(Args, Debug)]
#[command(
    after_help = "Each request shows the code the agent's terminal shows, what it asks \
for, who asked (uid/pid and executable) and its OTP. Approve one with
  agentkeysctl approve ABCD-EFGH
Examples:
  agentkeysctl pending
  agentkeysctl pending --watch            (one line per new request or decision; Ctrl-C stops)
  agentkeysctl --json pending --watch     (JSON lines: {\"event\": \"pending\"|\"opened\"|\"decided\", …})"
)]
pub struct PendingArgs {
    /// Keep running and print each new request and each decision as it happens
    #[arg(long)]
    pub watch: bool,
}

pub async fn run(g: &Global, args: &PendingArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let approvals = client.approvals().await?;
    let op = client.op("list pending auth requests", Subject::Other);
    // Subscribe before listing: a request opened in between shows up as an event.
    let streams = if args.watch {
        let opened = approvals
            .receive_request_opened()
            .await
            .map_err(|e| lost(&client, e))?;
        let decided = approvals
            .receive_request_decided()
            .await
            .map_err(|e| lost(&client, e))?;
        Some((opened, decided))
    } else {
        None
    };
    let list = approvals
        .pending()
        .await
        .map_err(|e| daemon_error(e, &op))?;
    let mut requests: Vec<(Request, &Dict)> =
        list.iter().map(|d| (Request::from_dict(d), d)).collect();
    requests.sort_by(|a, b| (a.0.expires, &a.0.pair_code).cmp(&(b.0.expires, &b.0.pair_code)));
    let me = nix::unistd::geteuid().as_raw();
    print_listing(out, &requests, me, args.watch)?;
    let Some((mut opened, mut decided)) = streams else {
        return Ok(());
    };

    // Codes of the requests seen, to name them when their decision arrives.
    let mut seen: HashMap<String, String> = requests
        .into_iter()
        .map(|(r, _)| (r.id, r.pair_code))
        .collect();
    out.flush()?;
    hint("waiting for requests and decisions (Ctrl-C stops)");

    let signal_error = |e: std::io::Error| {
        CliError::new(Exit::Error, "cannot watch for Ctrl-C")
            .cause(e.to_string())
            .fix("run pending without --watch")
    };
    let mut sigint = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_error)?;
    let closed = "the connection to the bus closed while watching";
    loop {
        tokio::select! {
            _ = sigint.recv() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
            event = opened.next() => {
                let Some(signal) = event else { return Err(lost(&client, closed)) };
                // A malformed signal is not worth ending the watch for.
                let Ok(args) = signal.args() else { continue };
                let notice = Request::from_dict(&args.request);
                // Signals reach every listener: only requests this caller may decide.
                if !may_see(&notice, me) || seen.contains_key(&notice.id) {
                    continue;
                }
                // The notice carries no code or OTP; Pending tells them, to the owner only.
                let list = approvals
                    .pending()
                    .await
                    .map_err(|e| daemon_error(e, &op))?;
                let Some(d) = list
                    .iter()
                    .find(|d| get_str(d, "id").ok().flatten().as_deref() == Some(notice.id.as_str()))
                else {
                    // Decided or expired already: nothing left to show.
                    continue;
                };
                let r = Request::from_dict(d);
                if out.json {
                    json_line(out, &json!({"event": "opened", "request": dict_to_json(d)}))?;
                } else {
                    out.line(r.opened_line(now()))?;
                }
                seen.insert(r.id, r.pair_code);
            }
            event = decided.next() => {
                let Some(signal) = event else { return Err(lost(&client, closed)) };
                let Ok(args) = signal.args() else { continue };
                // Only decisions on requests this caller saw (its own, or root's all).
                let Some(code) = seen.remove(args.request_id.as_str()) else { continue };
                if out.json {
                    json_line(out, &json!({
                        "event": "decided",
                        "id": args.request_id,
                        "pair_code": code,
                        "approved": args.approved,
                    }))?;
                } else {
                    out.line(decided_line(&args.request_id, args.approved, Some(&code)))?;
                }
            }
        }
        out.flush()?;
    }
}

/// The requests waiting now: a table (or "no pending requests"); with `--json` an array,
/// or with `--watch` one `pending` event per line, as the events that follow.
fn print_listing(
    out: &mut Out,
    requests: &[(Request, &Dict)],
    me: u32,
    watch: bool,
) -> Result<(), CliError> {
    if out.json {
        let dicts = requests.iter().map(|(_, d)| dict_to_json(d));
        if !watch {
            return out.json(&Value::Array(dicts.collect()));
        }
        for d in dicts {
            json_line(out, &json!({"event": "pending", "request": d}))?;
        }
        return Ok(());
    }
    if requests.is_empty() {
        // A watch says that it waits instead.
        return if watch {
            Ok(())
        } else {
            out.line("no pending requests")
        };
    }
    out.table(&pending_table(requests.iter().map(|(r, _)| r), now(), me))
}

/// Is the request a `RequestOpened` notice is about worth asking `Pending` for? Root sees
/// every owner's (as `Pending` does); anyone else only their own. A notice that names no
/// owner is asked about too: `Pending` answers only what the caller may see anyway.
fn may_see(notice: &Request, me: u32) -> bool {
    me == 0 || notice.owner.is_none_or(|o| o == me)
}

/// One compact JSON object per line.
fn json_line(out: &mut Out, v: &Value) -> Result<(), CliError> {
    out.line(v.to_string())
}

/// Exit 6: the bus went away (or refused the subscription) while watching.
fn lost(client: &Client, detail: impl ToString) -> CliError {
    CliError::Report(unreachable_report(
        &crate::client::describe_bus(&client.bus),
        detail.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::may_see;
    use crate::cli::{Cli, Command};
    use crate::requests::Request;

    #[test]
    fn notices_of_other_owners_are_skipped_except_for_root() {
        let notice = |owner: Option<u32>| Request {
            owner,
            ..Request::default()
        };
        assert!(may_see(&notice(Some(1000)), 1000));
        assert!(!may_see(&notice(Some(1001)), 1000));
        assert!(may_see(&notice(Some(1001)), 0));
        assert!(may_see(&notice(None), 1000));
    }

    #[test]
    fn watch_is_a_flag() {
        let cli = Cli::try_parse_from(["agentkeysctl", "pending", "--watch"]).unwrap();
        assert!(matches!(cli.command, Command::Pending(ref a) if a.watch));
        let cli = Cli::try_parse_from(["agentkeysctl", "--json", "pending"]).unwrap();
        assert!(matches!(cli.command, Command::Pending(ref a) if !a.watch));
    }
}
