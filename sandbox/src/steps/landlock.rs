//! Step 7: the landlock ruleset of `landlock.toml`, with every access right this kernel's
//! ABI knows handled (so anything not granted is denied), the signal and abstract-socket
//! scopes, and TCP as the policy says for this network mode. Not fully enforced ⇒ error,
//! unless the spec says best-effort.

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};

use crate::plan::StepError;
use crate::policy::landlock::{Access as Grant, LandlockPolicy};
use crate::spec::{Enforcement, Spec};

pub fn restrict(spec: &Spec, policy: &LandlockPolicy) -> Result<(), StepError> {
    let abi_num = crate::sys::landlock_abi_version()
        .map_err(|e| StepError::new("landlock is not available on this kernel", e))?;
    let abi = ABI::from(i32::try_from(abi_num).unwrap_or(i32::MAX));
    let fail = |what: &str, e: landlock::RulesetError| {
        StepError::new(what, std::io::Error::other(e.to_string()))
    };
    let handled = AccessFs::from_all(abi);
    let mut ruleset = Ruleset::default()
        .handle_access(handled)
        .map_err(|e| fail("handle file-system access", e))?;
    let mut scopes: BitFlags<Scope> = BitFlags::EMPTY;
    if policy.scope_signal {
        scopes |= Scope::Signal;
    }
    if policy.scope_abstract_unix_socket {
        scopes |= Scope::AbstractUnixSocket;
    }
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes).map_err(|e| fail("scopes", e))?;
    }
    if policy.deny_tcp(spec.net) {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(|e| fail("handle TCP access", e))?;
    }
    let mut created = ruleset
        .create()
        .map_err(|e| fail("create the ruleset", e))?;
    for rule in &policy.paths {
        let fd = match PathFd::new(&rule.path) {
            Ok(fd) => fd,
            // Not in this run (no workspace, no /run/agentkeys): nothing to grant.
            Err(_) if std::fs::symlink_metadata(&rule.path).is_err() => continue,
            Err(e) => {
                return Err(StepError::new(
                    format!("open {} for a landlock rule", rule.path),
                    std::io::Error::other(e.to_string()),
                ));
            }
        };
        let access = rights(&rule.access, abi) & handled;
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| fail(&format!("add the rule for {}", rule.path), e))?;
    }
    let status = created
        .restrict_self()
        .map_err(|e| fail("landlock_restrict_self", e))?;
    if status.ruleset != RulesetStatus::FullyEnforced && spec.landlock == Enforcement::Required {
        return Err(StepError::refused(
            format!(
                "landlock is only {:?} on this kernel (ABI {abi_num}); the policy requires full \
                 enforcement (set landlock to best-effort to run anyway)",
                status.ruleset
            ),
            std::io::ErrorKind::Unsupported,
        ));
    }
    Ok(())
}

/// The landlock rights of a rule's access words.
fn rights(grants: &[Grant], abi: ABI) -> BitFlags<AccessFs> {
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let mut out = BitFlags::EMPTY;
    for g in grants {
        out |= match g {
            Grant::Read => read,
            Grant::Execute => AccessFs::Execute.into(),
            Grant::Write => {
                AccessFs::from_all(abi)
                    & !(read
                        | AccessFs::Execute
                        | AccessFs::IoctlDev
                        | AccessFs::MakeChar
                        | AccessFs::MakeBlock)
            }
            Grant::Device => AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev,
        };
    }
    out
}
