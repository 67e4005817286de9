//! `agentkeysctl whoami`: this process as the daemon sees it (from the bus, not from us).
//! With `--agent`, the connection is first authenticated as that paired agent, and the
//! answer describes the agent too: id, name, owner, scope and when its session ends.
//! Never the session id or the key.

use agentkeysd::api::dict::{Dict, get_i64, get_strs, get_u32};
use clap::Args;
use serde_json::Value;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Subject, daemon_error};
use crate::output::{Out, describe_uid, dict_to_json, format_utc, join_or_dash, text};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    agentkeysctl whoami\n  \
    agentkeysctl --agent ci-bot whoami        (as a paired agent: checks its stored identity)\n  \
    AGENTKEYS_AGENT=ci-bot agentkeysctl --json whoami")]
pub struct WhoamiArgs {}

/// Keys never printed, even if a daemon sent them.
const HIDDEN: &[&str] = &["session", "seed", "key"];

pub async fn run(g: &Global, _args: &WhoamiArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect_maybe_as_agent(g).await?;
    let daemon = client.daemon().await?;
    let op = client.op("say who is calling", Subject::Other);
    let me = daemon.who_am_i().await.map_err(|e| daemon_error(e, &op))?;
    let auth = client.agent.as_ref().map(|a| &a.auth);
    if out.json {
        return out.json(&json(&me, auth));
    }
    out.key_values(&rows(&me, auth.is_some()))
}

/// `WhoAmI`'s answer as JSON, and with `--agent` what `Authenticate` answered under
/// `authenticated`; neither with a [`HIDDEN`] key.
fn json(me: &Dict, auth: Option<&Dict>) -> Value {
    let mut v = visible_json(me);
    if let (Value::Object(map), Some(auth)) = (&mut v, auth) {
        map.insert("authenticated".into(), visible_json(auth));
    }
    v
}

fn visible_json(d: &Dict) -> Value {
    let mut v = dict_to_json(d);
    if let Value::Object(map) = &mut v {
        for k in HIDDEN {
            map.remove(*k);
        }
    }
    v
}

/// The lines for people. `WhoAmI` on a connection authenticated as an agent (`as_agent`)
/// describes the agent as well: `agent_id`, `agent_name`, `agent_owner`, `scope`,
/// `session_expires`.
fn rows(me: &Dict, as_agent: bool) -> Vec<(&'static str, String)> {
    let num = |k: &str| get_u32(me, k).ok().flatten();
    let num_text = |k: &str| num(k).map_or_else(|| "-".to_owned(), |n| n.to_string());
    let mut rows = vec![
        ("uid", num_text("uid")),
        ("user", text(me, "user")),
        ("pid", num_text("pid")),
    ];
    if !as_agent {
        return rows;
    }
    let scope = get_strs(me, "scope").ok().flatten().unwrap_or_default();
    let expires = get_i64(me, "session_expires")
        .ok()
        .flatten()
        .map_or_else(|| "-".to_owned(), format_utc);
    rows.extend([
        ("agent", text(me, "agent_id")),
        ("name", text(me, "agent_name")),
        (
            "owner",
            num("agent_owner").map_or_else(|| "-".to_owned(), describe_uid),
        ),
        ("scope", join_or_dash(&scope)),
        ("session expires", expires),
    ]);
    rows
}

#[cfg(test)]
mod tests {
    use agentkeysd::api::dict::DictBuilder;

    use super::*;

    fn me() -> Dict {
        DictBuilder::new()
            .u32("uid", 1000)
            .str("user", "alice")
            .u32("pid", 42)
            .str("agent_id", "agt_x")
            .str("agent_name", "ci-bot")
            .u32("agent_owner", 4_000_000_000)
            .strs("scope", &["github".into(), "openai".into()])
            .i64("session_expires", 1_795_257_727)
            .str("session", "ses_must_not_show")
            .build()
    }

    fn auth() -> Dict {
        DictBuilder::new()
            .str("agent_id", "agt_x")
            .str("name", "ci-bot")
            .u32("owner", 4_000_000_000)
            .strs("scope", &["github".into()])
            .i64("session_expires", 1)
            .build()
    }

    #[test]
    fn an_agent_is_described_without_its_session() {
        let rows = rows(&me(), true);
        let text = crate::output::key_values(&rows);
        assert!(text.contains("agent            agt_x"), "{text}");
        assert!(text.contains("name             ci-bot"), "{text}");
        assert!(text.contains("owner            uid 4000000000"), "{text}");
        assert!(text.contains("scope            github, openai"), "{text}");
        assert!(
            text.contains("session expires  2026-11-21 10:42:07 UTC"),
            "{text}"
        );
        assert!(!text.contains("ses_"), "{text}");
        let j = json(&me(), Some(&auth())).to_string();
        assert!(!j.contains("ses_must_not_show"), "{j}");
        assert!(j.contains("\"authenticated\""), "{j}");
    }

    #[test]
    fn a_person_gets_uid_user_and_pid_only() {
        let rows = rows(&me(), false);
        assert_eq!(rows.len(), 3);
    }
}
