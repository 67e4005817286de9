//! Bus names, object paths, interface names and limits shared by the daemon and clients.

/// The daemon's well-known bus name.
pub const BUS_NAME: &str = "dev.agentkeys.Daemon1";
/// The one object the daemon serves.
pub const OBJECT_PATH: &str = "/dev/agentkeys/Daemon1";

pub const IFACE_DAEMON: &str = "dev.agentkeys.Daemon1";
pub const IFACE_CREDENTIALS: &str = "dev.agentkeys.Credentials1";
pub const IFACE_AGENTS: &str = "dev.agentkeys.Agents1";
pub const IFACE_AUDIT: &str = "dev.agentkeys.Audit1";
pub const IFACE_APPROVALS: &str = "dev.agentkeys.Approvals1";
pub const IFACE_JOBS: &str = "dev.agentkeys.Jobs1";

/// How a grant serves an agent's reads (the `mode` option of `Credentials1.Grant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantMode {
    /// Served on request.
    Auto,
    /// Each read needs the owner's approval (a `HighValueRelease` request).
    Confirm,
    /// Serves one read, then is gone.
    Once,
}

impl GrantMode {
    /// Every mode, in the order help texts list them.
    pub const ALL: [GrantMode; 3] = [GrantMode::Auto, GrantMode::Confirm, GrantMode::Once];

    /// The wire (and stored) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantMode::Auto => "auto",
            GrantMode::Confirm => "confirm",
            GrantMode::Once => "once",
        }
    }

    /// Parses `auto`, `confirm` or `once`.
    pub fn parse(s: &str) -> Option<GrantMode> {
        GrantMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Largest secret a client may store, in bytes.
pub const MAX_SECRET_LEN: usize = 64 * 1024;
/// Most entries an options map (`a{sv}`) may carry; more is `InvalidArgument`.
pub const MAX_OPTIONS: usize = 16;
/// Most elements any array argument or option may carry.
pub const MAX_ARRAY: usize = 256;
/// Longest free-text string argument (e-mail links, filters).
pub const MAX_TEXT: usize = 254;

/// Is `name` a valid credential, agent or alias name: `[a-z0-9][a-z0-9._-]{0,63}`?
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    let Some((first, rest)) = b.split_first() else {
        return false;
    };
    b.len() <= 64
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && rest.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// Is `var` a valid environment variable name for injection: `[A-Z_][A-Z0-9_]{0,127}`?
pub fn valid_env_var(var: &str) -> bool {
    let b = var.as_bytes();
    let Some((first, rest)) = b.split_first() else {
        return false;
    };
    b.len() <= 128
        && (first.is_ascii_uppercase() || *first == b'_')
        && rest
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// A name argument may address another owner's object as `UID:NAME`; only root may use
/// that for an owner other than itself. Splits `"1000:github"` into `(Some(1000), "github")`.
/// Returns `None` when the prefix is present but not a number.
pub fn split_owner(arg: &str) -> Option<(Option<u32>, &str)> {
    match arg.split_once(':') {
        None => Some((None, arg)),
        Some((uid, rest)) => uid.parse::<u32>().ok().map(|u| (Some(u), rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_pattern() {
        for ok in [
            "a",
            "anthropic",
            "brave-search",
            "x.y_z-1",
            "0",
            &"a".repeat(64),
        ] {
            assert!(valid_name(ok), "{ok} should be valid");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "ab C",
            "a/b",
            "a:b",
            "é",
            "a\0",
            &"a".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn env_vars_follow_the_documented_pattern() {
        assert!(valid_env_var("ANTHROPIC_API_KEY"));
        assert!(valid_env_var("_X1"));
        for bad in ["", "1A", "a", "A-B", "A B", "A=B"] {
            assert!(!valid_env_var(bad), "{bad:?}");
        }
    }

    #[test]
    fn owner_prefix_is_numeric_uid_only() {
        assert_eq!(split_owner("github"), Some((None, "github")));
        assert_eq!(split_owner("1000:github"), Some((Some(1000), "github")));
        assert_eq!(split_owner("alice:github"), None);
        assert_eq!(split_owner(":github"), None);
    }
}
