//! Identifiers and names: agent ids (`agt_` + 26 lowercase Crockford base32 characters of 128
//! random bits) and the one name format shared by credentials, agents and aliases.

use std::sync::LazyLock;

use data_encoding::{Encoding, Specification};

use super::error::{StoreError, random_fill};

/// Prefix of every agent id.
pub const AGENT_ID_PREFIX: &str = "agt_";
/// Characters after the prefix: ⌈128 / 5⌉.
const AGENT_ID_CHARS: usize = 26;
/// Crockford's base32 alphabet (no i, l, o, u), lowercase.
const CROCKFORD_LOWER: &str = "0123456789abcdefghjkmnpqrstvwxyz";

/// Lowercase Crockford base32, no padding. `None` only if the specification were invalid,
/// which the unit tests rule out.
static CROCKFORD: LazyLock<Option<Encoding>> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str(CROCKFORD_LOWER);
    spec.encoding().ok()
});

/// Prefix of every session id.
pub const SESSION_ID_PREFIX: &str = "ses_";

/// A fresh random agent id.
pub fn new_agent_id() -> Result<String, StoreError> {
    random_id(AGENT_ID_PREFIX, "agent id")
}

/// A fresh random session id (`ses_` + 26 base32 characters of 128 random bits). Not a
/// secret: a session is used by signing with the agent's key (see
/// [`crate::approvals::session_proof_input`]).
pub fn new_session_id() -> Result<String, StoreError> {
    random_id(SESSION_ID_PREFIX, "session id")
}

/// Prefix of every run (job) id.
pub const RUN_ID_PREFIX: &str = "run_";

/// A fresh random run id (`run_` + 26 lowercase base32 characters of 128 random bits).
pub fn new_run_id() -> Result<String, StoreError> {
    random_id(RUN_ID_PREFIX, "run id")
}

/// Whether `s` has the shape of a run id.
pub fn is_run_id(s: &str) -> bool {
    has_id_shape(s, RUN_ID_PREFIX)
}

/// Whether `s` has the shape of an agent id (it may still not exist).
pub fn is_agent_id(s: &str) -> bool {
    has_id_shape(s, AGENT_ID_PREFIX)
}

/// Whether `s` has the shape of a session id.
pub fn is_session_id(s: &str) -> bool {
    has_id_shape(s, SESSION_ID_PREFIX)
}

/// `prefix` + 128 random bits in lowercase Crockford base32.
fn random_id(prefix: &str, purpose: &'static str) -> Result<String, StoreError> {
    let mut raw = [0u8; 16];
    random_fill(&mut raw, purpose)?;
    let enc = CROCKFORD.as_ref().ok_or(StoreError::Crypto {
        step: "building the base32 encoding",
    })?;
    Ok(format!("{prefix}{}", enc.encode(&raw)))
}

fn has_id_shape(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == AGENT_ID_CHARS
            && rest
                .bytes()
                .all(|b| CROCKFORD_LOWER.as_bytes().contains(&b))
    })
}

/// Whether `name` is a valid credential, agent or alias name: `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            rest.len() <= 63
                && (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(b))
        }
        None => false,
    }
}

/// Whether `name` is a plausible environment variable name: `[A-Z_][A-Z0-9_]{0,127}`.
pub(crate) fn valid_env_var(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            rest.len() <= 127
                && (first.is_ascii_uppercase() || *first == b'_')
                && rest
                    .iter()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
        }
        None => false,
    }
}

/// `Ok` when `name` is valid, else `InvalidArgument` naming `what`.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument {
            what,
            reason: format!("{name:?} must match [a-z0-9][a-z0-9._-]{{0,63}}"),
        })
    }
}

/// Normalise and check an e-mail address used as an agent link: trimmed, lowercased, one `@`
/// with something on both sides, no whitespace or control characters, at most 254 bytes.
pub(crate) fn normalize_email(value: &str) -> Result<String, StoreError> {
    let email = value.trim().to_ascii_lowercase();
    let bad = |reason: &str| StoreError::InvalidArgument {
        what: "e-mail",
        reason: format!("{value:?}: {reason}"),
    };
    if email.len() > 254 {
        return Err(bad("longer than 254 bytes"));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace or control characters"));
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(email)
        }
        _ => Err(bad("expected local@domain")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_are_prefixed_26_crockford_chars() {
        let id = new_agent_id().unwrap();
        assert_eq!(id.len(), 4 + 26, "{id}");
        assert!(is_agent_id(&id), "{id}");
        assert!(!id[4..].contains(['i', 'l', 'o', 'u']));
    }

    #[test]
    fn agent_ids_differ() {
        assert_ne!(new_agent_id().unwrap(), new_agent_id().unwrap());
    }

    #[test]
    fn crockford_encoding_matches_reference_vector() {
        // Checked by hand: 5-bit groups of the big-endian bit string, zero-padded at the end.
        let enc = CROCKFORD.as_ref().unwrap();
        assert_eq!(enc.encode(&[0xff; 16]), "zzzzzzzzzzzzzzzzzzzzzzzzzw");
        assert_eq!(enc.encode(&[0x00; 16]), "00000000000000000000000000");
        assert_eq!(enc.encode(b"f"), "cr");
    }

    #[test]
    fn non_ids_are_rejected() {
        assert!(!is_agent_id("agt_"));
        assert!(!is_agent_id("ci-bot"));
        assert!(!is_agent_id("agt_0000000000000000000000000u"));
        assert!(!is_agent_id("AGT_00000000000000000000000000"));
    }

    #[test]
    fn names_follow_the_documented_format() {
        for ok in [
            "a",
            "anthropic",
            "brave-search",
            "x.y_z",
            "0",
            &"a".repeat(64),
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "a b",
            "é",
            "a/b",
            &"a".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn env_var_names_are_upper_snake_case() {
        assert!(valid_env_var("ANTHROPIC_API_KEY"));
        assert!(valid_env_var("_X1"));
        for bad in ["", "1X", "lower", "A-B", "A B"] {
            assert!(!valid_env_var(bad), "{bad}");
        }
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(
            normalize_email(" Bob@Example.ORG ").unwrap(),
            "bob@example.org"
        );
        for bad in ["bob", "@x", "x@", "a@b@c", "a b@c", "a\t@b"] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }
}
