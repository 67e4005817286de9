//! Step 8: the seccomp program compiled from `seccomp.toml`, installed last (after it,
//! mount, unshare and friends are gone), for the calling thread — the init is
//! single-threaded and the command inherits it across fork and exec.

use crate::plan::StepError;
use crate::policy::bpf::Program;
use crate::sys;

pub fn install(program: &Program) -> Result<(), StepError> {
    if program.is_empty() {
        return Err(StepError::refused(
            "no seccomp program to install (the policy compiled to nothing)",
            std::io::ErrorKind::InvalidInput,
        ));
    }
    // Set already by the capabilities step; repeated so this step stands on its own.
    nix::sys::prctl::set_no_new_privs().map_err(|e| StepError::new("PR_SET_NO_NEW_PRIVS", e))?;
    sys::seccomp_set_filter(program)
        .map_err(|e| StepError::new("seccomp(SECCOMP_SET_MODE_FILTER)", e))
}
