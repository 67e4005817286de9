//! `sandbox/data/landlock.toml`: the paths the agent may use and how, the scopes
//! (signals, abstract unix sockets) and the TCP stance per network mode.

use serde::Deserialize;

use super::{PolicyError, check_abs, check_why};
use crate::spec::Net;

const FILE: &str = "landlock.toml";
const SHIPPED: &str = include_str!(concat!(env!("OUT_DIR"), "/landlock.json"));

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    path: Vec<RawPath>,
    scope: RawScope,
    tcp: RawTcp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPath {
    path: String,
    access: Vec<String>,
    why: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    signal: bool,
    abstract_unix_socket: bool,
    why_signal: String,
    why_abstract_unix_socket: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    net_none: String,
    net_host: String,
    why: String,
}

/// Groups of Landlock rights a rule can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read files, list directories.
    Read,
    /// Create, change, remove, truncate, rename/link.
    Write,
    /// Execute files.
    Execute,
    /// Write to and ioctl on existing device files.
    Device,
}

/// One path rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    pub path: String,
    pub access: Vec<Access>,
}

/// The whole policy.
#[derive(Debug, Clone)]
pub struct LandlockPolicy {
    pub paths: Vec<PathRule>,
    pub scope_signal: bool,
    pub scope_abstract_unix_socket: bool,
    /// Deny TCP bind/connect (no port allowed) under `--net none`.
    pub deny_tcp_net_none: bool,
    /// Deny TCP bind/connect under `--net host`.
    pub deny_tcp_net_host: bool,
}

impl LandlockPolicy {
    /// The shipped policy.
    pub fn shipped() -> Result<Self, PolicyError> {
        Self::check(super::decode(FILE, SHIPPED, true)?)
    }

    /// Parses and checks a policy as written (TOML).
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        Self::check(super::decode(FILE, text, false)?)
    }

    fn check(file: File) -> Result<Self, PolicyError> {
        let mut paths: Vec<PathRule> = Vec::with_capacity(file.path.len());
        for p in file.path {
            let bad = |problem: String| PolicyError::Rule {
                file: FILE,
                rule: p.path.clone(),
                problem,
            };
            check_why(FILE, &p.path, &p.why)?;
            check_abs(FILE, &p.path)?;
            let access = p
                .access
                .iter()
                .map(|a| match a.as_str() {
                    "read" => Ok(Access::Read),
                    "write" => Ok(Access::Write),
                    "execute" => Ok(Access::Execute),
                    "device" => Ok(Access::Device),
                    other => Err(bad(format!(
                        "unknown access {other:?} (read, write, execute, device)"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if access.is_empty() {
                return Err(bad("a rule must grant something".to_owned()));
            }
            if paths.iter().any(|r| r.path == p.path) {
                return Err(bad("listed twice".to_owned()));
            }
            paths.push(PathRule {
                path: p.path,
                access,
            });
        }
        check_why(FILE, "scope.signal", &file.scope.why_signal)?;
        check_why(
            FILE,
            "scope.abstract_unix_socket",
            &file.scope.why_abstract_unix_socket,
        )?;
        check_why(FILE, "tcp", &file.tcp.why)?;
        let stance = |v: &str| match v {
            "deny" => Ok(true),
            "allow" => Ok(false),
            _ => Err(PolicyError::Rule {
                file: FILE,
                rule: "tcp".to_owned(),
                problem: "must be \"deny\" or \"allow\"".to_owned(),
            }),
        };
        Ok(LandlockPolicy {
            paths,
            scope_signal: file.scope.signal,
            scope_abstract_unix_socket: file.scope.abstract_unix_socket,
            deny_tcp_net_none: stance(&file.tcp.net_none)?,
            deny_tcp_net_host: stance(&file.tcp.net_host)?,
        })
    }

    /// Whether TCP bind/connect are denied for this network mode.
    pub fn deny_tcp(&self, net: Net) -> bool {
        match net {
            Net::None => self.deny_tcp_net_none,
            Net::Host => self.deny_tcp_net_host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_loads() {
        let p = LandlockPolicy::shipped().unwrap();
        let ws = p.paths.iter().find(|r| r.path == "/workspace").unwrap();
        assert!(ws.access.contains(&Access::Write));
        let etc = p.paths.iter().find(|r| r.path == "/etc").unwrap();
        assert_eq!(etc.access, [Access::Read]);
        assert!(p.scope_signal && p.scope_abstract_unix_socket);
    }

    #[test]
    fn bad_rules_are_refused() {
        let tail = "[scope]\nsignal = true\nabstract_unix_socket = true\nwhy_signal = \"abc\"\n\
                    why_abstract_unix_socket = \"abc\"\n[tcp]\nnet_none = \"allow\"\n\
                    net_host = \"allow\"\nwhy = \"abc\"\n";
        for (rule, want) in [
            (
                "path = \"/x\"\naccess = [\"fly\"]\nwhy = \"abc\"",
                "unknown access",
            ),
            (
                "path = \"x\"\naccess = [\"read\"]\nwhy = \"abc\"",
                "absolute",
            ),
            ("path = \"/x\"\naccess = []\nwhy = \"abc\"", "grant"),
            ("path = \"/x\"\naccess = [\"read\"]\nwhy = \"\"", "why"),
        ] {
            let err = LandlockPolicy::parse(&format!("[[path]]\n{rule}\n{tail}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }
}
