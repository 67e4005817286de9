//! `agentkeysctl status`: what the daemon is, where it keeps secrets, how approvals are
//! protected, and how many credentials and agents the caller (or `--owner`) has.
//!
//! A daemon that approves without re-authentication (`approvals.authenticate = "none"`)
//! is said loudly: a WARNING line in the output and on stderr, also with `--json`.

use agentkeysd::api::dict::{Dict, get_str, get_u32};
use clap::Args;
use serde_json::json;

use crate::cli::Global;
use crate::client::{Client, DaemonFacts};
use crate::errors::{CliError, Subject, daemon_error};
use crate::output::{Out, describe_uid, dict_to_json, hint, sanitize, variant_to_text};

#[derive(Args, Debug)]
pub struct StatusArgs {}

/// Said whenever the daemon had to fall back from `memfd_secret`.
const MLOCK_NOTE: &str = "decrypted secrets are in mlocked memory, not memfd_secret";

/// Said whenever the daemon approves without asking the owner's password.
const NO_REAUTH_WARNING: &str = "WARNING: approvals are NOT re-authenticated \
(approvals.authenticate = \"none\"): any process running as the owner's uid can approve \
pairings and releases. For development only; remove that line from agentkeysd.toml";

/// The `Features` facts about approvals.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApprovalFacts {
    /// `pam`, `none`, or whatever else a daemon says (`None`: it says nothing).
    authenticate: Option<String>,
    session_ttl_s: Option<u32>,
}

impl ApprovalFacts {
    fn of(features: &Dict) -> ApprovalFacts {
        ApprovalFacts {
            authenticate: get_str(features, "approvals_authenticate").ok().flatten(),
            session_ttl_s: get_u32(features, "session_ttl_s").ok().flatten(),
        }
    }

    /// The warning to shout, if approvals are not protected by a password.
    fn warning(&self) -> Option<&'static str> {
        (self.authenticate.as_deref() == Some("none")).then_some(NO_REAUTH_WARNING)
    }

    /// The `approvals` lines of the human output.
    fn describe(&self) -> Vec<String> {
        match self.authenticate.as_deref() {
            Some("pam") => vec!["re-authentication via PAM".to_owned()],
            Some("none") => vec![
                "WARNING: NO re-authentication (approvals.authenticate = \"none\")".to_owned(),
                "any process of the owner's uid can approve; for development only".to_owned(),
            ],
            Some(other) => vec![format!("re-authentication: {}", sanitize(other))],
            None => vec!["unknown (this agentkeysd does not say)".to_owned()],
        }
    }
}

/// `4h`, `1h30m`, `90s`: a session lifetime for people.
fn format_ttl(secs: u32) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, 0) => format!("{h}h{m:02}m"),
        _ => format!("{secs}s"),
    }
}

pub async fn run(g: &Global, _args: &StatusArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let op = client.op("report its status", Subject::Other);
    let DaemonFacts {
        version,
        memory,
        features,
    } = client.daemon_facts(&op).await?;

    let creds = client.credentials().await?;
    let op = client.op("count credentials", Subject::Other);
    let credentials = match client.list_owner() {
        Some(uid) => creds.list_for(uid).await,
        None => creds.list().await,
    }
    .map_err(|e| daemon_error(e, &op))?
    .len();
    let agents = client.agents().await?;
    let op = client.op("count agents", Subject::Other);
    let agent_count = match client.list_owner() {
        Some(uid) => agents.list_for(uid).await,
        None => agents.list().await,
    }
    .map_err(|e| daemon_error(e, &op))?
    .len();

    let note = (memory != "memfd_secret").then_some(MLOCK_NOTE);
    let approvals = ApprovalFacts::of(&features);
    if let Some(warning) = approvals.warning() {
        // On stderr too: whoever reads only the JSON, or pipes stdout away, still sees it.
        hint(warning);
    }
    if out.json {
        return out.json(&json!({
            "version": version,
            "secret_memory": memory,
            "note": note,
            "approvals_authenticate": approvals.authenticate,
            "session_ttl_s": approvals.session_ttl_s,
            "warning": approvals.warning(),
            "features": dict_to_json(&features),
            "bus": client.bus.to_string(),
            "owner": client.owner.uid,
            "credentials": credentials,
            "agents": agent_count,
        }));
    }

    let mut rows = vec![
        ("agentkeysd", version),
        ("bus", client.bus.to_string()),
        ("secret memory", memory),
    ];
    if let Some(note) = note {
        rows.push(("", format!("note: {note}")));
    }
    for (i, line) in approvals.describe().into_iter().enumerate() {
        rows.push((if i == 0 { "approvals" } else { "" }, line));
    }
    if let Some(ttl) = approvals.session_ttl_s {
        rows.push(("agent sessions", format!("last {}", format_ttl(ttl))));
    }
    // Shown above in words.
    let mut keys: Vec<&String> = features
        .keys()
        .filter(|k| !matches!(k.as_str(), "approvals_authenticate" | "session_ttl_s"))
        .collect();
    keys.sort();
    for (i, k) in keys.into_iter().enumerate() {
        let value = features
            .get(k)
            .map(|v| variant_to_text(v))
            .unwrap_or_default();
        rows.push((if i == 0 { "features" } else { "" }, format!("{k}={value}")));
    }
    rows.push(("owner", describe_uid(client.owner.uid)));
    rows.push(("credentials", credentials.to_string()));
    rows.push(("agents", agent_count.to_string()));
    out.key_values(&rows)
}

#[cfg(test)]
mod tests {
    use agentkeysd::api::dict::DictBuilder;

    use super::*;

    fn facts(authenticate: &str) -> ApprovalFacts {
        ApprovalFacts::of(
            &DictBuilder::new()
                .str("approvals_authenticate", authenticate)
                .u32("session_ttl_s", 14_400)
                .build(),
        )
    }

    #[test]
    fn pam_is_said_plainly_and_none_is_a_warning() {
        let pam = facts("pam");
        assert_eq!(pam.describe(), ["re-authentication via PAM"]);
        assert_eq!(pam.warning(), None);
        assert_eq!(pam.session_ttl_s, Some(14_400));
        let none = facts("none");
        let w = none.warning().unwrap();
        assert!(w.starts_with("WARNING:"), "{w}");
        assert!(w.contains("approvals.authenticate = \"none\""), "{w}");
        assert!(none.describe()[0].starts_with("WARNING: NO re-authentication"));
        let unknown = ApprovalFacts::of(&Dict::new());
        assert_eq!(unknown.warning(), None);
        assert!(unknown.describe()[0].starts_with("unknown"));
        assert!(!facts("x\x1b[2J").describe()[0].contains('\x1b'));
    }

    #[test]
    fn session_lifetimes_read_plainly() {
        assert_eq!(format_ttl(14_400), "4h");
        assert_eq!(format_ttl(5_400), "1h30m");
        assert_eq!(format_ttl(600), "10m");
        assert_eq!(format_ttl(90), "90s");
        assert_eq!(format_ttl(3_601), "3601s");
    }
}
