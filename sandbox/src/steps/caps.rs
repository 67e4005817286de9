//! Step 6: every capability set emptied (bounding and ambient too, so no exec can get one
//! back) and `PR_SET_NO_NEW_PRIVS` (no setuid or file-capability gain; landlock and seccomp
//! require it).

use caps::CapSet;

use crate::plan::StepError;

pub fn drop_all() -> Result<(), StepError> {
    let fail = |what: &str, e: caps::errors::CapsError| {
        StepError::new(what, std::io::Error::other(e.to_string()))
    };
    // Bounding first: clearing it needs CAP_SETPCAP, which the effective set still holds.
    // Each capability dropped without reading it first (the crate's `clear` reads each one,
    // 41 more syscalls on every start); a drop that fails counts only if the capability is
    // still there. The kernel refuses both calls (EINVAL) for a number it does not know (an
    // older kernel than the crate's list), which no set can hold: such a read means absent,
    // as the crate's own `clear` takes it.
    for cap in caps::all() {
        if let Err(e) = caps::drop(None, CapSet::Bounding, cap)
            && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false)
        {
            return Err(fail(&format!("drop {cap} from the bounding set"), e));
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| fail("clear the ambient set", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| fail("clear the inheritable set", e))?;
    caps::clear(None, CapSet::Effective).map_err(|e| fail("clear the effective set", e))?;
    caps::clear(None, CapSet::Permitted).map_err(|e| fail("clear the permitted set", e))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| StepError::new("PR_SET_NO_NEW_PRIVS", e))
}
