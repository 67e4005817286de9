//! `agentkeysctl audit verify`: walk the whole hash chain; exit 1 at the first broken row.
//! Root only (the daemon refuses others: the chain covers every owner).

use agentkeysd::api::dict::{get_bool, get_i64, get_str, get_u64};
use clap::Args;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Exit, Subject, daemon_error};
use crate::output::{Out, dict_to_json, sanitize};

#[derive(Args, Debug)]
pub struct VerifyArgs {}

pub async fn run(g: &Global, _args: &VerifyArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let audit = client.audit().await?;
    let op = client.op("verify the audit chain", Subject::Other).fix_for(
        agentkeysd::api::ErrorKind::Denied,
        "the chain covers every owner's rows, so verifying it is root's: sudo agentkeysctl audit verify",
    );
    let report = audit.verify().await.map_err(|e| daemon_error(e, &op))?;
    let ok = get_bool(&report, "ok").ok().flatten();
    let rows = get_u64(&report, "rows").ok().flatten().unwrap_or(0);
    if out.json {
        out.json(&dict_to_json(&report))?;
    }
    match ok {
        Some(true) => {
            if !out.json {
                out.line(format!("audit chain ok: {rows} rows"))?;
            }
            Ok(())
        }
        Some(false) => {
            let seq = get_i64(&report, "seq")
                .ok()
                .flatten()
                .map_or_else(|| "?".to_owned(), |s| s.to_string());
            let problem = get_str(&report, "problem").ok().flatten().unwrap_or_default();
            let message = get_str(&report, "message").ok().flatten().unwrap_or_default();
            Err(broken(&seq, &problem, &message))
        }
        None => Err(CliError::new(Exit::Error, "agentkeysd sent an audit report without a verdict")
            .cause("the reply has no boolean 'ok'")
            .fix("agentkeysctl and agentkeysd versions may differ; agentkeysctl status shows the daemon's")),
    }
}

fn broken(seq: &str, problem: &str, message: &str) -> CliError {
    let cause = match (problem.is_empty(), message.is_empty()) {
        (false, false) => format!("{problem}: {message}"),
        (false, true) => problem.to_owned(),
        (true, false) => message.to_owned(),
        (true, true) => "the daemon gave no reason".to_owned(),
    };
    CliError::new(Exit::Error, format!("audit chain broken at row {seq}"))
        .cause(sanitize(&cause))
        .fix(format!(
            "rows from {seq} on were edited, deleted or reordered outside agentkeysd: keep a copy \
             of the state directory (/var/lib/agentkeys) for investigation and compare it with a backup"
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_chain_exits_1_naming_the_row() {
        let e = broken("42", "hash", "row 42 does not match its predecessor");
        assert_eq!(e.exit(), Exit::Error);
        let CliError::Report(r) = e else {
            panic!("a report")
        };
        assert_eq!(r.problem, "audit chain broken at row 42");
        assert_eq!(
            r.cause.as_deref(),
            Some("hash: row 42 does not match its predecessor")
        );
    }
}
