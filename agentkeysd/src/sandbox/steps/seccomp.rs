//! Step 8: the seccomp programs compiled from `seccomp.toml`, installed last (after it,
//! mount, unshare and friends are gone), for the calling thread — the init is
//! single-threaded and the command inherits them across fork and exec.

use seccompiler::BpfProgram;

use crate::sandbox::plan::StepError;

pub fn install(programs: &[BpfProgram]) -> Result<(), StepError> {
    if programs.is_empty() {
        return Err(StepError::refused(
            "no seccomp program to install (the policy compiled to nothing)",
            std::io::ErrorKind::InvalidInput,
        ));
    }
    for p in programs {
        seccompiler::apply_filter(p).map_err(|e| {
            StepError::new(
                "seccomp(SET_MODE_FILTER)",
                std::io::Error::other(e.to_string()),
            )
        })?;
    }
    Ok(())
}
