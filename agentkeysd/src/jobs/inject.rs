//! Which of an agent's credentials a run gets at launch, and how (DESIGN §6 "Key
//! injection"). Pure: the daemon reads each chosen credential through the agent's run
//! session afterwards, so every check of an ordinary read still applies and each one is
//! audited.
//!
//! Rules:
//! - every `auto` grant that has not expired becomes an environment variable named by the
//!   service table (`anthropic → ANTHROPIC_API_KEY`, …);
//! - `--env NAME=credential` names the variable itself (instead of the default one);
//! - `--file credential` puts it in `/run/agentkeys/secrets/<credential>` instead of the
//!   environment (both, when `--env` names it too);
//! - `confirm` and `once` grants are never injected: each use of them needs the owner (or is
//!   the only one), so the agent asks for them over MCP when it needs them. Naming one with
//!   `--env`/`--file` is an error that says so.

use std::collections::BTreeMap;

use crate::api::names::{valid_env_var, valid_name};
use crate::store::{GrantMode, GrantRecord};

/// Where one credential goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Env(String),
    File(String),
}

/// One credential to read and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    pub credential: String,
    pub target: Target,
}

/// What the caller asked for beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct Requested {
    /// `(NAME, credential)` pairs of `--env NAME=credential`.
    pub env: Vec<(String, String)>,
    /// Credentials of `--file credential`.
    pub files: Vec<String>,
}

/// Variables the runner sets itself; a credential may not take their place.
const RESERVED: &[&str] = &[
    "PATH",
    "HOME",
    "AGENTKEYS_MCP_SOCKET",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error(
        "'{0}' is not a valid environment variable name (A-Z, 0-9, _; not starting with a digit)"
    )]
    BadVariable(String),
    #[error("{0} is set by the sandbox itself and cannot carry a credential")]
    Reserved(String),
    #[error("'{0}' is not a valid credential name")]
    BadName(String),
    #[error("credential '{0}' is not granted to this agent\n  fix: agentkeysctl grant <agent> {0}")]
    NotGranted(String),
    #[error(
        "credential '{credential}' is granted in '{mode}' mode, which is never injected at launch\n  fix: the agent asks for it over MCP (get_credential), or grant it in auto mode"
    )]
    NotInjectable {
        credential: String,
        mode: &'static str,
    },
    #[error("environment variable {0} is named twice")]
    Twice(String),
}

/// The injections of a run, in a stable order (environment first, by variable name).
pub fn plan(
    grants: &[GrantRecord],
    requested: &Requested,
    now: i64,
    default_env: impl Fn(&str) -> String,
) -> Result<Vec<Injection>, InjectError> {
    let live = |g: &&GrantRecord| g.expires_at.is_none_or(|t| t > now);
    let usable = |name: &str| -> Result<(), InjectError> {
        if !valid_name(name) {
            return Err(InjectError::BadName(name.to_owned()));
        }
        match grants.iter().filter(live).find(|g| g.credential == name) {
            None => Err(InjectError::NotGranted(name.to_owned())),
            Some(g) if g.mode != GrantMode::Auto => Err(InjectError::NotInjectable {
                credential: name.to_owned(),
                mode: g.mode.as_str(),
            }),
            Some(_) => Ok(()),
        }
    };
    // variable → credential
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut named: Vec<&str> = Vec::new();
    for (var, cred) in &requested.env {
        if !valid_env_var(var) {
            return Err(InjectError::BadVariable(var.clone()));
        }
        if RESERVED.contains(&var.as_str()) {
            return Err(InjectError::Reserved(var.clone()));
        }
        usable(cred)?;
        if env.insert(var.clone(), cred.clone()).is_some() {
            return Err(InjectError::Twice(var.clone()));
        }
        named.push(cred);
    }
    for cred in &requested.files {
        usable(cred)?;
    }
    for g in grants.iter().filter(live) {
        let explicit =
            named.contains(&g.credential.as_str()) || requested.files.contains(&g.credential);
        if g.mode != GrantMode::Auto || explicit {
            continue;
        }
        let var = default_env(&g.credential);
        if RESERVED.contains(&var.as_str()) {
            continue;
        }
        // An explicit --env for this variable wins over a default.
        env.entry(var).or_insert_with(|| g.credential.clone());
    }
    let mut out: Vec<Injection> = env
        .into_iter()
        .map(|(var, credential)| Injection {
            credential,
            target: Target::Env(var),
        })
        .collect();
    let mut files = requested.files.clone();
    files.sort();
    files.dedup();
    out.extend(files.into_iter().map(|credential| Injection {
        target: Target::File(credential.clone()),
        credential,
    }));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(name: &str, mode: GrantMode, expires_at: Option<i64>) -> GrantRecord {
        GrantRecord {
            agent_id: "agt_x".into(),
            credential: name.into(),
            mode,
            expires_at,
            created_at: 0,
            until_logout: false,
        }
    }

    fn env_of(name: &str) -> String {
        match name {
            "anthropic" => "ANTHROPIC_API_KEY".into(),
            "github" => "GITHUB_TOKEN".into(),
            other => format!("{}_API_KEY", other.to_uppercase()),
        }
    }

    fn env(var: &str, cred: &str) -> Injection {
        Injection {
            credential: cred.into(),
            target: Target::Env(var.into()),
        }
    }

    #[test]
    fn auto_grants_become_their_default_variables_and_only_they() {
        let grants = [
            grant("anthropic", GrantMode::Auto, None),
            grant("github", GrantMode::Auto, Some(200)),
            grant("openai", GrantMode::Confirm, None),
            grant("stripe", GrantMode::Once, None),
            grant("old", GrantMode::Auto, Some(50)),
        ];
        let got = plan(&grants, &Requested::default(), 100, env_of).unwrap();
        assert_eq!(
            got,
            [
                env("ANTHROPIC_API_KEY", "anthropic"),
                env("GITHUB_TOKEN", "github")
            ]
        );
    }

    #[test]
    fn env_and_file_requests_replace_the_defaults() {
        let grants = [
            grant("anthropic", GrantMode::Auto, None),
            grant("github", GrantMode::Auto, None),
        ];
        let req = Requested {
            env: vec![("CLAUDE_KEY".into(), "anthropic".into())],
            files: vec!["github".into(), "github".into()],
        };
        let got = plan(&grants, &req, 0, env_of).unwrap();
        assert_eq!(
            got,
            [
                env("CLAUDE_KEY", "anthropic"),
                Injection {
                    credential: "github".into(),
                    target: Target::File("github".into())
                }
            ]
        );
    }

    #[test]
    fn requests_outside_the_grants_are_refused_with_the_reason() {
        let grants = [
            grant("anthropic", GrantMode::Auto, None),
            grant("openai", GrantMode::Confirm, None),
        ];
        let ask = |env: &[(&str, &str)], files: &[&str]| {
            let req = Requested {
                env: env
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
                files: files.iter().map(|s| s.to_string()).collect(),
            };
            plan(&grants, &req, 0, env_of).unwrap_err()
        };
        assert_eq!(
            ask(&[("K", "github")], &[]),
            InjectError::NotGranted("github".into())
        );
        assert!(matches!(
            ask(&[], &["openai"]),
            InjectError::NotInjectable {
                mode: "confirm",
                ..
            }
        ));
        assert_eq!(
            ask(&[("1X", "anthropic")], &[]),
            InjectError::BadVariable("1X".into())
        );
        assert_eq!(
            ask(&[("PATH", "anthropic")], &[]),
            InjectError::Reserved("PATH".into())
        );
        assert_eq!(ask(&[], &["../x"]), InjectError::BadName("../x".into()));
        assert_eq!(
            ask(&[("K", "anthropic"), ("K", "anthropic")], &[]),
            InjectError::Twice("K".into())
        );
    }
}
