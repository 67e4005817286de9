//! `agentkeysctl usage [AGENT]`: how often each agent read each credential, how often it
//! was refused, and when it last tried. Without AGENT: every agent of yours (root with
//! `--owner`: of that owner).

use agentkeysd::api::dict::{Dict, get_i64, get_str, get_u64};
use clap::Args;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Subject, daemon_error};
use crate::output::{Out, Table, dicts_to_json, format_opt_utc, text};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    agentkeysctl usage\n  \
    agentkeysctl usage ci-bot\n  \
    agentkeysctl --json usage | jq '.[] | select(.denials > 0)'\n  \
    agentkeysctl audit list                (each read and denial, one row each)")]
pub struct UsageArgs {
    /// Only this agent: its id (agt_…), name, alias or e-mail
    pub agent: Option<String>,
}

pub async fn run(g: &Global, args: &UsageArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let target = match &args.agent {
        Some(a) => client.qualify(a)?,
        // Empty names every agent of the caller; `UID:` every agent of that owner.
        None if client.owner.explicit => format!("{}:", client.owner.uid),
        None => String::new(),
    };
    let agents = client.agents().await?;
    let op = match &args.agent {
        Some(a) => client.op(
            format!("report the usage of agent '{a}'"),
            Subject::Agent(a.clone()),
        ),
        None => client.op("report agent usage", Subject::Other),
    };
    let mut rows = agents
        .usage(&target)
        .await
        .map_err(|e| daemon_error(e, &op))?;
    rows.sort_by_key(|d| (agent_label(d), text(d, "credential")));
    if out.json {
        return out.json(&dicts_to_json(&rows));
    }
    if rows.is_empty() {
        return out.line("no usage yet");
    }
    out.table(&table(&rows))
}

fn table(rows: &[Dict]) -> Table {
    let mut t = Table::new(&["AGENT", "CREDENTIAL", "READS", "DENIALS", "LAST USE"]);
    let count = |d: &Dict, k: &str| {
        get_u64(d, k)
            .ok()
            .flatten()
            .map_or_else(|| "0".to_owned(), |n| n.to_string())
    };
    for d in rows {
        t.row(vec![
            agent_label(d),
            text(d, "credential"),
            count(d, "reads"),
            count(d, "denials"),
            format_opt_utc(get_i64(d, "last_use").ok().flatten()),
        ]);
    }
    t
}

/// The agent's name, or its id when it has none.
fn agent_label(d: &Dict) -> String {
    get_str(d, "agent")
        .ok()
        .flatten()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| text(d, "agent_id"))
}

#[cfg(test)]
mod tests {
    use agentkeysd::api::dict::DictBuilder;

    use super::*;

    #[test]
    fn one_row_per_agent_and_credential() {
        let used = DictBuilder::new()
            .str("agent_id", "agt_a")
            .str("agent", "ci-bot")
            .str("credential", "github")
            .u64("reads", 12)
            .u64("denials", 1)
            .i64("last_use", 1_795_257_727)
            .build();
        let never = DictBuilder::new()
            .str("agent_id", "agt_b")
            .str("agent", "")
            .str("credential", "openai")
            .u64("reads", 0)
            .u64("denials", 0)
            .build();
        assert_eq!(
            table(&[used, never]).render(),
            "AGENT   CREDENTIAL  READS  DENIALS  LAST USE\n\
             ci-bot  github      12     1        2026-11-21 10:42:07 UTC\n\
             agt_b   openai      0      0        -\n"
        );
    }
}
