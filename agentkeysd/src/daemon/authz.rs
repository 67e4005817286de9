//! Authorization decisions, as pure functions of the caller the bus reported and the
//! argument. The caller's uid always comes from the bus (`GetConnectionCredentials`),
//! never from an argument; an argument can only *name* another owner, and only root may
//! act on what it names.

use crate::api::names::{split_owner, valid_name};

/// Who is calling, as the bus daemon saw the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub pid: Option<u32>,
}

impl Caller {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    #[error(
        "'{0}' is not a valid name: use 1–64 characters from a-z 0-9 . _ - starting with a letter or digit (or UID:NAME as root)"
    )]
    BadName(String),
    #[error("only root may act for another owner (uid {owner})")]
    NotRoot { owner: u32 },
    #[error("only root may {what}")]
    RootOnly { what: &'static str },
}

/// Operations that concern every owner at once are root's.
pub fn require_root(caller: &Caller, what: &'static str) -> Result<(), AuthzError> {
    if caller.is_root() {
        Ok(())
    } else {
        Err(AuthzError::RootOnly { what })
    }
}

/// Resolves `arg` (`NAME` or `UID:NAME`) to the owner it addresses and the bare name.
pub fn target<'a>(caller: &Caller, arg: &'a str) -> Result<(u32, &'a str), AuthzError> {
    let (owner, name) = split_owner(arg).ok_or_else(|| AuthzError::BadName(arg.to_owned()))?;
    if !valid_name(name) {
        return Err(AuthzError::BadName(arg.to_owned()));
    }
    Ok((act_for(caller, owner)?, name))
}

/// Which owner a call acts for: the caller itself unless root names another.
pub fn act_for(caller: &Caller, owner: Option<u32>) -> Result<u32, AuthzError> {
    match owner {
        None => Ok(caller.uid),
        Some(o) if o == caller.uid || caller.is_root() => Ok(o),
        Some(o) => Err(AuthzError::NotRoot { owner: o }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: Caller = Caller {
        uid: 1000,
        pid: Some(1),
    };
    const ROOT: Caller = Caller {
        uid: 0,
        pid: Some(1),
    };

    #[test]
    fn plain_names_act_for_the_caller() {
        assert_eq!(target(&ALICE, "github"), Ok((1000, "github")));
        assert_eq!(target(&ROOT, "github"), Ok((0, "github")));
    }

    #[test]
    fn only_root_may_name_another_owner() {
        assert_eq!(target(&ROOT, "1000:github"), Ok((1000, "github")));
        assert_eq!(target(&ALICE, "1000:github"), Ok((1000, "github")));
        assert_eq!(
            target(&ALICE, "1001:github"),
            Err(AuthzError::NotRoot { owner: 1001 })
        );
        assert_eq!(
            target(&ALICE, "0:github"),
            Err(AuthzError::NotRoot { owner: 0 })
        );
        assert_eq!(
            act_for(&ALICE, Some(1001)),
            Err(AuthzError::NotRoot { owner: 1001 })
        );
        assert_eq!(act_for(&ROOT, Some(1001)), Ok(1001));
        assert_eq!(act_for(&ALICE, None), Ok(1000));
    }

    #[test]
    fn whole_store_operations_are_roots() {
        assert_eq!(require_root(&ROOT, "x"), Ok(()));
        assert_eq!(
            require_root(&ALICE, "x"),
            Err(AuthzError::RootOnly { what: "x" })
        );
    }

    #[test]
    fn malformed_targets_are_rejected_before_any_lookup() {
        for bad in [
            "",
            "bob:github",
            "1000:",
            "1000:Bad",
            "../x",
            "a/b",
            "x:y:z",
        ] {
            assert!(
                matches!(target(&ROOT, bad), Err(AuthzError::BadName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn agent_ids_are_valid_targets() {
        let id = "agt_0123456789abcdefghjkmnpqrs";
        assert_eq!(target(&ALICE, id), Ok((1000, id)));
    }
}
