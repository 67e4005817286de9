//! Auth requests as the owner sees them (`pending`, `approve`, `deny`): the record the
//! daemon sends (`Fetch`, `Pending`; the `RequestOpened` signal carries only id, type,
//! owner and times) read once into a
//! [`Request`], and the pure renderings of it: table rows, the summary shown before
//! approving, and the lines `pending --watch` prints.
//!
//! Every string in a record comes from the daemon and, through it, from whoever opened
//! the request: an agent chooses its name and reason. So text is sanitized before it
//! reaches a terminal (no escape sequences) and is always shown as what it is ("name",
//! "reason"), never as instructions.

use agentkeysd::api::dict::{Dict, get_str, get_strs, get_u32, get_u64};
use agentkeysd::approvals::RequestType;

use crate::output::{Table, describe_uid, format_utc, sanitize};

/// One auth request, as `Fetch` describes it. Fields the daemon left out are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub id: String,
    /// The `type` as sent: what is shown.
    pub type_name: String,
    /// [`Request::type_name`] read once; `None` for a type this agentkeysctl does not know.
    pub request_type: Option<RequestType>,
    pub pair_code: String,
    pub otp: String,
    pub expires: Option<i64>,
    pub owner: Option<u32>,
    pub requester_uid: Option<u32>,
    pub requester_pid: Option<u32>,
    pub requester_exe: Option<String>,
    pub fingerprint: Option<String>,
    pub name: Option<String>,
    pub scope: Option<Vec<String>>,
    pub agent_id: Option<String>,
    pub agent_identity: Option<String>,
    pub credential: Option<String>,
    pub reason: Option<String>,
}

impl Request {
    /// Reads a record; a field of the wrong type counts as absent.
    pub fn from_dict(d: &Dict) -> Request {
        let s = |k: &str| get_str(d, k).ok().flatten();
        let t = |k: &str| {
            get_u64(d, k)
                .ok()
                .flatten()
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
        };
        let type_name = s("type").unwrap_or_default();
        Request {
            id: s("id").unwrap_or_default(),
            request_type: type_name.parse().ok(),
            type_name,
            pair_code: s("pair_code").unwrap_or_default(),
            otp: s("otp").unwrap_or_default(),
            expires: t("expires"),
            owner: get_u32(d, "owner").ok().flatten(),
            requester_uid: get_u32(d, "requester_uid").ok().flatten(),
            requester_pid: get_u32(d, "requester_pid").ok().flatten(),
            requester_exe: s("requester_exe"),
            fingerprint: s("fingerprint"),
            name: s("name"),
            scope: get_strs(d, "scope").ok().flatten(),
            agent_id: s("agent_id"),
            agent_identity: s("agent_identity"),
            credential: s("credential"),
            reason: s("reason"),
        }
    }

    /// Who the request is about: the proposed name (Pair), the identity to recover
    /// (Recover), else the agent's name or id.
    pub fn subject(&self) -> String {
        let text = match self.request_type {
            Some(RequestType::Recover) => self.agent_identity.as_ref().or(self.name.as_ref()),
            _ => self.name.as_ref().or(self.agent_id.as_ref()),
        };
        text.filter(|t| !t.is_empty())
            .map_or_else(|| "-".to_owned(), |t| sanitize(t))
    }

    /// `1000/4242 /usr/bin/python3`: uid/pid and executable; `-` for what is unknown.
    pub fn requester(&self) -> String {
        let n = |v: Option<u32>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let exe = self
            .requester_exe
            .as_deref()
            .filter(|e| !e.is_empty())
            .map_or_else(|| "-".to_owned(), sanitize);
        format!("{}/{} {exe}", n(self.requester_uid), n(self.requester_pid))
    }

    /// The scope asked for, or the credential a release is about.
    pub fn scope_text(&self) -> String {
        if let Some(c) = &self.credential {
            return sanitize(c);
        }
        match &self.scope {
            Some(s) if !s.is_empty() => sanitize(&s.join(",")),
            _ => "-".to_owned(),
        }
    }

    /// The pair code as shown (`ABCD-EFGH`).
    pub fn code(&self) -> String {
        if self.pair_code.is_empty() {
            "-".to_owned()
        } else {
            sanitize(&self.pair_code)
        }
    }

    /// The summary `approve` shows before asking: everything the owner should check.
    pub fn summary(&self, now: i64) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            (
                "request",
                format!("{} ({})", self.code(), sanitize(&self.id)),
            ),
            ("type", self.describe_type()),
        ];
        match self.request_type {
            Some(RequestType::Pair) => rows.push((
                "agent name",
                self.name
                    .as_deref()
                    .map_or_else(|| "(none proposed)".to_owned(), sanitize),
            )),
            Some(RequestType::Recover) => rows.push(("takes over", self.subject())),
            _ => rows.push(("agent", self.subject())),
        }
        if let Some(id) = self
            .agent_id
            .as_deref()
            .filter(|_| self.request_type != Some(RequestType::Pair))
        {
            rows.push(("agent id", sanitize(id)));
        }
        if self.scope.is_some() {
            rows.push(("scope", self.scope_text()));
        }
        if let Some(c) = &self.credential {
            rows.push(("credential", sanitize(c)));
        }
        if let Some(r) = &self.reason {
            rows.push(("reason", format!("\"{}\" (the agent's words)", sanitize(r))));
        }
        let who = self
            .requester_uid
            .map_or_else(|| "unknown uid".to_owned(), describe_uid);
        let pid = self
            .requester_pid
            .map_or_else(String::new, |p| format!(", pid {p}"));
        let exe = self
            .requester_exe
            .as_deref()
            .map_or_else(String::new, |e| format!(", {}", sanitize(e)));
        rows.push(("asked by", format!("{who}{pid}{exe}")));
        if let Some(owner) = self.owner {
            rows.push(("owner", describe_uid(owner)));
        }
        if let Some(f) = &self.fingerprint {
            rows.push(("key", sanitize(f)));
        }
        rows.push(("expires", expires_text(self.expires, now)));
        rows.push((
            "OTP",
            format!(
                "{}   <- check that the agent's terminal shows the same OTP",
                sanitize(&self.otp)
            ),
        ));
        crate::output::key_values(&rows)
    }

    /// The type in words, for the summary.
    fn describe_type(&self) -> String {
        let name = sanitize(&self.type_name);
        let what = match self.request_type {
            Some(RequestType::Pair) => "a new agent asks to be paired with you",
            Some(RequestType::Recover) => "a new key asks to take over an existing agent",
            Some(RequestType::ScopeChange) => "an agent asks for a different scope",
            Some(RequestType::HighValueRelease) => {
                "an agent asks for one read of a confirm-mode credential"
            }
            Some(RequestType::KeyRotate) => "an agent replaces its key",
            None => return name,
        };
        format!("{name} ({what})")
    }

    /// `pending --watch`: one line for a new request.
    pub fn opened_line(&self, now: i64) -> String {
        format!(
            "opened   {}  {}  {}  by {}  scope {}  expires in {}  OTP {}",
            self.code(),
            sanitize(&self.type_name),
            self.subject(),
            self.requester(),
            self.scope_text(),
            expires_in(self.expires, now),
            sanitize(&self.otp),
        )
    }
}

/// `pending --watch`: one line for a decision (`code` when the request was seen).
/// `RequestDecided` says only yes or no, and no covers a denial and an expiry alike.
pub fn decided_line(id: &str, approved: bool, code: Option<&str>) -> String {
    let verdict = if approved {
        "approved"
    } else {
        "denied or expired"
    };
    match code {
        Some(c) => format!("{verdict} {}  (request {})", sanitize(c), sanitize(id)),
        None => format!("{verdict} request {}", sanitize(id)),
    }
}

/// `42s`, `4m05s`, or `expired`.
pub fn expires_in(expires: Option<i64>, now: i64) -> String {
    let Some(at) = expires else {
        return "-".to_owned();
    };
    let left = at.saturating_sub(now);
    match left {
        i64::MIN..=0 => "expired".to_owned(),
        1..=59 => format!("{left}s"),
        _ => format!("{}m{:02}s", left / 60, left % 60),
    }
}

/// `in 42s (2026-11-21 10:42:07 UTC)`.
fn expires_text(expires: Option<i64>, now: i64) -> String {
    match expires {
        Some(at) if at > now => format!("in {} ({})", expires_in(expires, now), format_utc(at)),
        Some(at) => format!("expired ({})", format_utc(at)),
        None => "-".to_owned(),
    }
}

/// The `pending` table. An OWNER column appears when a request is not `me`'s (root sees
/// every owner's).
pub fn pending_table<'a>(
    list: impl IntoIterator<Item = &'a Request> + Clone,
    now: i64,
    me: u32,
) -> Table {
    let with_owner = list
        .clone()
        .into_iter()
        .any(|r| r.owner.is_some_and(|o| o != me));
    let mut header = vec![
        "CODE",
        "TYPE",
        "AGENT/NAME",
        "REQUESTER",
        "SCOPE",
        "EXPIRES IN",
        "OTP",
    ];
    if with_owner {
        header.insert(1, "OWNER");
    }
    let mut t = Table::new(&header);
    for r in list {
        let mut row = vec![
            r.code(),
            sanitize(&r.type_name),
            r.subject(),
            r.requester(),
            r.scope_text(),
            expires_in(r.expires, now),
            sanitize(&r.otp),
        ];
        if with_owner {
            row.insert(1, r.owner.map_or_else(|| "-".to_owned(), |o| o.to_string()));
        }
        t.row(row);
    }
    t
}

#[cfg(test)]
mod tests {
    use agentkeysd::api::dict::DictBuilder;

    use super::*;

    const NOW: i64 = 1_795_257_700;

    fn pair_dict() -> Dict {
        DictBuilder::new()
            .str("id", "00112233445566778899aabbccddeeff")
            .str("type", "Pair")
            .str("pair_code", "ABCD-EFGH")
            .str("otp", "012345")
            .u64("created", 1_795_257_667)
            .u64("expires", 1_795_257_727)
            .u32("owner", 1000)
            .u32("requester_uid", 1000)
            .u32("requester_pid", 4242)
            .str("requester_exe", "/usr/bin/python3")
            .str("fingerprint", "SHA256:0011:2233")
            .str("name", "ci-bot")
            .strs("scope", &["github".into(), "openai".into()])
            .build()
    }

    #[test]
    fn records_are_read_field_by_field() {
        let r = Request::from_dict(&pair_dict());
        assert_eq!(r.request_type, Some(RequestType::Pair));
        assert_eq!(r.type_name, "Pair");
        assert_eq!(r.expires, Some(1_795_257_727));
        assert_eq!(r.requester_pid, Some(4242));
        assert_eq!(r.subject(), "ci-bot");
        assert_eq!(r.requester(), "1000/4242 /usr/bin/python3");
        assert_eq!(r.scope_text(), "github,openai");
        let empty = Request::from_dict(&Dict::new());
        assert_eq!(empty.subject(), "-");
        assert_eq!(empty.requester(), "-/- -");
        assert_eq!(empty.code(), "-");
    }

    #[test]
    fn the_pending_table_has_the_documented_columns() {
        let r = Request::from_dict(&pair_dict());
        let text = pending_table(std::slice::from_ref(&r), NOW, 1000).render();
        assert_eq!(
            text,
            "CODE       TYPE  AGENT/NAME  REQUESTER                   SCOPE          EXPIRES IN  OTP\n\
             ABCD-EFGH  Pair  ci-bot      1000/4242 /usr/bin/python3  github,openai  27s         012345\n"
        );
        let root_view = pending_table(&[r], NOW, 0).render();
        assert!(
            root_view.starts_with("CODE       OWNER  TYPE"),
            "{root_view}"
        );
    }

    #[test]
    fn times_left_read_plainly() {
        assert_eq!(expires_in(Some(NOW + 5), NOW), "5s");
        assert_eq!(expires_in(Some(NOW + 65), NOW), "1m05s");
        assert_eq!(expires_in(Some(NOW), NOW), "expired");
        assert_eq!(expires_in(None, NOW), "-");
    }

    #[test]
    fn the_summary_names_everything_the_owner_checks() {
        let s = Request::from_dict(&pair_dict()).summary(NOW);
        for needle in [
            "ABCD-EFGH",
            "Pair (a new agent asks to be paired with you)",
            "agent name  ci-bot",
            "scope       github,openai",
            "asked by    uid 1000",
            "pid 4242, /usr/bin/python3",
            "SHA256:0011:2233",
            "in 27s",
            "012345   <- check that the agent's terminal shows the same OTP",
        ] {
            assert!(s.contains(needle), "{needle:?} missing from\n{s}");
        }
    }

    #[test]
    fn a_recover_request_names_the_identity_taken_over() {
        let d = DictBuilder::new()
            .str("type", "Recover")
            .str("agent_identity", "ci-bot")
            .str("agent_id", "agt_x")
            .build();
        let r = Request::from_dict(&d);
        assert_eq!(r.subject(), "ci-bot");
        assert!(r.summary(NOW).contains("takes over  ci-bot"));
    }

    #[test]
    fn agent_chosen_text_cannot_drive_the_terminal() {
        let d = DictBuilder::new()
            .str("type", "HighValueRelease")
            .str("name", "bot\x1b[2J")
            .str("credential", "github")
            .str("reason", "please\napprove\x1b]0;x\x07")
            .build();
        let r = Request::from_dict(&d);
        let all = format!("{}{}", r.summary(NOW), r.opened_line(NOW));
        assert!(!all.contains('\x1b') && !all.contains('\x07'), "{all:?}");
        assert!(r.summary(NOW).contains("(the agent's words)"));
    }

    #[test]
    fn watch_lines_are_one_per_event() {
        let r = Request::from_dict(&pair_dict());
        let line = r.opened_line(NOW);
        assert!(
            line.starts_with("opened   ABCD-EFGH  Pair  ci-bot"),
            "{line}"
        );
        assert!(line.contains("OTP 012345"), "{line}");
        assert!(!line.contains('\n'));
        assert_eq!(
            decided_line("abc", true, Some("ABCD-EFGH")),
            "approved ABCD-EFGH  (request abc)"
        );
        assert_eq!(
            decided_line("abc", false, None),
            "denied or expired request abc"
        );
        assert_eq!(
            decided_line("abc", false, Some("ABCD-EFGH")),
            "denied or expired ABCD-EFGH  (request abc)"
        );
    }
}
