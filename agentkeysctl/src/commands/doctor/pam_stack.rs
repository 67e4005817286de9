//! `pam_stack`: the PAM configuration around `pam_agentkeys.so`.
//!
//! - `/etc/pam.d/agentkeys` must exist with an `auth` stack: it is the service the daemon
//!   re-authenticates owners with before an approval (DESIGN §4). Missing fails.
//! - The login stack should use the module: `auth` (keeps the typed password), `session`
//!   (hands it to the daemon, which unlocks `login`-class credentials), `password`
//!   (re-wraps them on a password change). Debian keeps these in `common-auth`,
//!   `common-session`, `common-password`; Fedora/RHEL in `system-auth` and
//!   `password-auth`. Not referenced warns: logins work, login-class credentials just stay
//!   locked. Packages do not edit these files themselves (that is the admin's decision).
//!
//! The parser follows `@include` and `include`/`substack` controls, so a reference made
//! through an included file counts.

use std::collections::BTreeSet;

use super::{Finding, Root, Status};

const CHECK: &str = "pam_stack";

const MODULE: &str = "pam_agentkeys.so";

/// The PAM service approvals use.
const SERVICE: &str = "agentkeys";

/// How deep includes are followed (they may not form a cycle, but a bad config could).
const MAX_DEPTH: usize = 8;

/// One meaningful line of a pam.d file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `auth required pam_unix.so …`: a module rule.
    Rule { kind: String, module: String },
    /// `@include common-auth` (every kind) or `auth include system-auth` (one kind).
    Include { kind: Option<String>, file: String },
}

/// Parses a pam.d file: comments and blank lines dropped, a leading `-` on the type
/// ignored, `[value=action …]` controls read whole.
pub fn parse(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(file) = line.strip_prefix("@include") {
            if let Some(file) = file.split_whitespace().next() {
                entries.push(Entry::Include {
                    kind: None,
                    file: file.to_owned(),
                });
            }
            continue;
        }
        let Some((kind, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let kind = kind.trim_start_matches('-').to_ascii_lowercase();
        let rest = rest.trim_start();
        let (control, rest) = if let Some(bracketed) = rest.strip_prefix('[') {
            match bracketed.split_once(']') {
                Some((c, r)) => (c, r.trim_start()),
                None => continue,
            }
        } else {
            match rest.split_once(char::is_whitespace) {
                Some((c, r)) => (c, r.trim_start()),
                None => continue,
            }
        };
        let Some(target) = rest.split_whitespace().next() else {
            continue;
        };
        if matches!(control, "include" | "substack") {
            entries.push(Entry::Include {
                kind: Some(kind),
                file: target.to_owned(),
            });
        } else {
            entries.push(Entry::Rule {
                kind,
                module: target.to_owned(),
            });
        }
    }
    entries
}

/// Does a module field name `module` (bare, or as an absolute path)?
fn names_module(field: &str, module: &str) -> bool {
    field == module || field.rsplit('/').next() == Some(module)
}

/// The kinds (`auth`, `session`, …) under which `file` uses `module`, directly or through
/// includes. `read` returns a pam.d file's text by name.
pub fn kinds_using(
    file: &str,
    module: &str,
    read: &dyn Fn(&str) -> Option<String>,
) -> BTreeSet<String> {
    let mut kinds = BTreeSet::new();
    walk(file, module, read, 0, &mut kinds);
    kinds
}

fn walk(
    file: &str,
    module: &str,
    read: &dyn Fn(&str) -> Option<String>,
    depth: usize,
    kinds: &mut BTreeSet<String>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let Some(text) = read(file) else { return };
    for entry in parse(&text) {
        match entry {
            Entry::Rule { kind, module: m } if names_module(&m, module) => {
                kinds.insert(kind);
            }
            Entry::Rule { .. } => {}
            Entry::Include { kind, file } => {
                let mut sub = BTreeSet::new();
                walk(&file, module, read, depth + 1, &mut sub);
                // `auth include x` brings in only x's auth lines.
                kinds.extend(
                    sub.into_iter()
                        .filter(|k| kind.as_ref().is_none_or(|only| only == k)),
                );
            }
        }
    }
}

/// Does `file` have an `auth` stack at all (a rule or an include)?
fn has_auth(text: &str) -> bool {
    parse(text).iter().any(|e| match e {
        Entry::Rule { kind, .. } => kind == "auth",
        Entry::Include { kind, .. } => kind.as_deref().is_none_or(|k| k == "auth"),
    })
}

/// The distribution's login stack: the files to look in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Debian,
    RedHat,
    Unknown,
}

impl Layout {
    fn files(self) -> &'static [&'static str] {
        match self {
            Layout::Debian => &["common-auth", "common-session", "common-password"],
            Layout::RedHat => &["system-auth", "password-auth"],
            Layout::Unknown => &[],
        }
    }
}

pub fn check(root: &Root) -> Finding {
    let dir = root.path("/etc/pam.d");
    let read = |name: &str| -> Option<String> {
        // Includes name files in /etc/pam.d (absolute paths are taken under the root).
        let path = if name.starts_with('/') {
            root.path(name)
        } else {
            dir.join(name)
        };
        std::fs::read_to_string(path).ok()
    };
    let service = service_finding(&dir.join(SERVICE).display().to_string(), read(SERVICE));
    let layout = if dir.join("common-session").is_file() {
        Layout::Debian
    } else if dir.join("system-auth").is_file() {
        Layout::RedHat
    } else {
        Layout::Unknown
    };
    let mut kinds = BTreeSet::new();
    for f in layout.files() {
        kinds.extend(kinds_using(f, MODULE, &read));
    }
    let pam_configs = root.path("/usr/share/pam-configs/agentkeys").is_file();
    let login = login_finding(layout, &kinds, pam_configs);
    merge(service, login)
}

/// The half about `/etc/pam.d/agentkeys`: `Err((detail, fix))` when it fails.
fn service_finding(path: &str, text: Option<String>) -> Result<String, (String, String)> {
    let fix = "reinstall the agentkeys package (it ships /etc/pam.d/agentkeys, the PAM service approvals authenticate with)";
    match text {
        None => Err((
            format!("{path} is missing: approvals cannot re-authenticate the owner"),
            fix.to_owned(),
        )),
        Some(t) if !has_auth(&t) => Err((
            format!("{path} has no auth stack: approvals cannot re-authenticate the owner"),
            fix.to_owned(),
        )),
        Some(_) => Ok(format!("{path} present")),
    }
}

/// The half about the login stack: `(status, detail, fix)`.
fn login_finding(
    layout: Layout,
    kinds: &BTreeSet<String>,
    pam_configs: bool,
) -> (Status, String, Option<String>) {
    let where_ = match layout {
        Layout::Debian => "common-auth/-session/-password",
        Layout::RedHat => "system-auth/password-auth",
        Layout::Unknown => {
            return (
                Status::Ok,
                "login stack not checked (neither common-session nor system-auth in /etc/pam.d)"
                    .to_owned(),
                None,
            );
        }
    };
    let missing: Vec<&str> = ["auth", "session", "password"]
        .into_iter()
        .filter(|k| !kinds.contains(*k))
        .collect();
    if missing.is_empty() {
        return (
            Status::Ok,
            format!("logins unlock login-class credentials ({where_} use {MODULE})"),
            None,
        );
    }
    let fix = match layout {
        Layout::Debian if pam_configs => "sudo pam-auth-update --enable agentkeys".to_owned(),
        Layout::Debian => format!(
            "add `{} optional {MODULE}` to /etc/pam.d/common-{{{}}} (see pam/README.md)",
            missing.join("|"),
            missing.join(",")
        ),
        _ => format!(
            "add `{} optional {MODULE}` lines to system-auth and password-auth \
             (with authselect: in a custom profile, then authselect select it; see pam/README.md)",
            missing.join("|")
        ),
    };
    let effect = if missing.contains(&"auth") || missing.contains(&"session") {
        "login-class credentials stay locked after login"
    } else {
        "a password change will not re-wrap login-class credentials"
    };
    (
        Status::Warn,
        format!(
            "{where_} lack {MODULE} for {}: {effect}",
            missing.join(", ")
        ),
        Some(fix),
    )
}

/// One finding from both halves: the worse status, both details, every fix.
fn merge(
    service: Result<String, (String, String)>,
    (status, login, login_fix): (Status, String, Option<String>),
) -> Finding {
    match service {
        Err((detail, fix)) => {
            let fix = match login_fix {
                Some(f) => format!("{fix}; and {f}"),
                None => fix,
            };
            Finding::fail(CHECK, format!("{detail}; {login}"), fix)
        }
        Ok(detail) => match (status, login_fix) {
            (Status::Warn, Some(fix)) => Finding::warn(CHECK, format!("{detail}; {login}"), fix),
            _ => Finding::ok(CHECK, format!("{detail}; {login}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const DEBIAN_SESSION: &str = "\
# /etc/pam.d/common-session - session-related modules common to all services
session\t[default=1]\t\t\tpam_permit.so
session\trequisite\t\t\tpam_deny.so
session\trequired\t\t\tpam_permit.so
session optional\t\t\tpam_agentkeys.so
session\trequired\tpam_unix.so
-session optional pam_systemd.so
";

    const DEBIAN_AUTH: &str = "\
auth\t[success=1 default=ignore]\tpam_unix.so nullok
auth\trequisite\t\t\tpam_deny.so
auth\trequired\t\t\tpam_permit.so
auth  optional  /usr/lib/x86_64-linux-gnu/security/pam_agentkeys.so   # keeps the password
";

    const FEDORA_SYSTEM_AUTH: &str = "\
auth        required      pam_env.so
auth        sufficient    pam_unix.so nullok
auth        optional      pam_agentkeys.so
auth        required      pam_deny.so
password    sufficient    pam_unix.so yescrypt shadow use_authtok
session     optional      pam_keyinit.so revoke
session     include       agentkeys-session
";

    fn files(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn lines_parse_with_brackets_dashes_and_comments() {
        let e = parse(DEBIAN_SESSION);
        assert_eq!(e.len(), 6);
        assert_eq!(
            e.get(3),
            Some(&Entry::Rule {
                kind: "session".into(),
                module: "pam_agentkeys.so".into()
            })
        );
        assert_eq!(
            e.get(5),
            Some(&Entry::Rule {
                kind: "session".into(),
                module: "pam_systemd.so".into()
            })
        );
        assert_eq!(
            parse("auth [success=1 default=ignore] pam_unix.so nullok"),
            [Entry::Rule {
                kind: "auth".into(),
                module: "pam_unix.so".into()
            }]
        );
        assert_eq!(
            parse("@include common-auth\nauth substack system-auth\n"),
            [
                Entry::Include {
                    kind: None,
                    file: "common-auth".into()
                },
                Entry::Include {
                    kind: Some("auth".into()),
                    file: "system-auth".into()
                }
            ]
        );
        assert!(parse("# only a comment\n\nauth\n auth required\n").is_empty());
    }

    #[test]
    fn references_by_name_or_path_are_found_and_others_are_not() {
        let read = files(&[
            ("common-auth", DEBIAN_AUTH),
            ("common-session", DEBIAN_SESSION),
        ]);
        assert_eq!(
            kinds_using("common-auth", MODULE, &read)
                .into_iter()
                .collect::<Vec<_>>(),
            ["auth"]
        );
        assert_eq!(
            kinds_using("common-session", MODULE, &read)
                .into_iter()
                .collect::<Vec<_>>(),
            ["session"]
        );
        // A module whose name merely contains ours does not count.
        let read = files(&[(
            "x",
            "auth optional pam_agentkeys.so.bak\nauth optional my_pam_agentkeys.so\n",
        )]);
        assert!(kinds_using("x", MODULE, &read).is_empty());
        // A commented-out line does not count.
        let read = files(&[("x", "#session optional pam_agentkeys.so\n")]);
        assert!(kinds_using("x", MODULE, &read).is_empty());
    }

    #[test]
    fn includes_are_followed_and_kind_restricted() {
        let read = files(&[
            ("system-auth", FEDORA_SYSTEM_AUTH),
            (
                "agentkeys-session",
                "session optional pam_agentkeys.so\nauth optional pam_agentkeys.so\n",
            ),
            ("login", "@include system-auth\n"),
            ("loop", "@include loop\n"),
        ]);
        // `session include` brings only session lines; the auth line comes from system-auth itself.
        assert_eq!(
            kinds_using("login", MODULE, &read)
                .into_iter()
                .collect::<Vec<_>>(),
            ["auth", "session"]
        );
        assert!(kinds_using("loop", MODULE, &read).is_empty());
    }

    #[test]
    fn the_service_file_needs_an_auth_stack() {
        assert!(
            service_finding(
                "/etc/pam.d/agentkeys",
                Some("@include common-auth\n".into())
            )
            .is_ok()
        );
        assert!(
            service_finding(
                "/etc/pam.d/agentkeys",
                Some("auth substack system-auth\n".into())
            )
            .is_ok()
        );
        assert!(
            service_finding(
                "/etc/pam.d/agentkeys",
                Some("account required pam_unix.so\n".into())
            )
            .is_err()
        );
        let (detail, fix) = service_finding("/etc/pam.d/agentkeys", None).unwrap_err();
        assert!(detail.contains("missing"));
        assert!(fix.contains("reinstall"));
    }

    #[test]
    fn an_unreferenced_login_stack_warns_with_the_lines_to_add() {
        let none = BTreeSet::new();
        let (s, detail, fix) = login_finding(Layout::Debian, &none, false);
        assert_eq!(s, Status::Warn);
        assert!(detail.contains("stay locked"), "{detail}");
        assert_eq!(
            fix.as_deref(),
            Some(
                "add `auth|session|password optional pam_agentkeys.so` to /etc/pam.d/common-{auth,session,password} (see pam/README.md)"
            )
        );
        let (_, _, fix) = login_finding(Layout::Debian, &none, true);
        assert_eq!(
            fix.as_deref(),
            Some("sudo pam-auth-update --enable agentkeys")
        );
        let some: BTreeSet<String> = ["auth".into(), "session".into()].into();
        let (s, detail, fix) = login_finding(Layout::RedHat, &some, false);
        assert_eq!(s, Status::Warn);
        assert!(detail.contains("will not re-wrap"), "{detail}");
        assert!(fix.unwrap_or_default().contains("authselect"));
        let all: BTreeSet<String> = ["auth".into(), "session".into(), "password".into()].into();
        assert_eq!(login_finding(Layout::Debian, &all, false).0, Status::Ok);
        assert_eq!(login_finding(Layout::Unknown, &none, false).0, Status::Ok);
    }

    #[test]
    fn a_missing_service_fails_and_keeps_the_login_fix() {
        let f = merge(
            Err(("x missing".into(), "reinstall".into())),
            (Status::Warn, "lack".into(), Some("add lines".into())),
        );
        assert_eq!(f.status, Status::Fail);
        assert_eq!(f.fix.as_deref(), Some("reinstall; and add lines"));
    }
}
