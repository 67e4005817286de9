//! Re-authenticating an owner through the host's PAM stack before an approval.
//!
//! [`authenticate`] runs one PAM transaction for `service` (the daemon uses `agentkeys`, so
//! `/etc/pam.d/agentkeys` decides, usually by `@include common-auth`): `pam_authenticate`,
//! then `pam_acct_mgmt`, both with `PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK`. It blocks
//! (modules may sleep, e.g. the failure delay of `pam_unix`), so the daemon calls it on
//! tokio's blocking pool.
//!
//! Invariants:
//! - The password is read straight from its [`SecretBuf`]: no Rust copy of it exists. The
//!   only copies are the `malloc`ed replies PAM asks for and frees itself (we cannot wipe
//!   those after handing them over; Linux-PAM's helpers overwrite them before `free`, and
//!   `pam_end` wipes the `PAM_AUTHTOK` item).
//! - No error, log line or panic message carries the password; errors name the PAM step
//!   and code.
//! - An empty password or one with a NUL inside never reaches PAM.
//! - A locked or expired account is refused even with the right password.
//! - One transaction at a time in this process: PAM modules are not all thread-safe.
//!
//! Not here: which user may approve (the caller passes the owner), the 5-minute
//! re-authentication cache and any rate limiting (the daemon's), and `pam_setcred` /
//! sessions / password changes (we verify a person, we do not log anyone in).

mod sys;

use std::ffi::{CString, c_int};
use std::sync::{Mutex, PoisonError};

use crate::vault::SecretBuf;

/// What is wrong with a password that is refused before PAM sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordProblem {
    #[error("it is empty")]
    Empty,
    #[error("it contains a NUL byte, which no PAM password can hold")]
    ContainsNul,
}

/// Why [`authenticate`] did not succeed. Never contains the password.
#[derive(Debug, thiserror::Error)]
pub enum PamError {
    /// The password was refused before PAM was asked.
    #[error("the password was refused before asking PAM: {0}")]
    BadPassword(PasswordProblem),
    /// The service or user name cannot be passed to PAM (empty, or a NUL inside).
    #[error("the PAM {what} name is empty or contains a NUL byte")]
    BadName { what: &'static str },
    /// `pam_start` failed: usually a broken or missing `/etc/pam.d/<service>`.
    #[error(
        "PAM could not start for service {service:?}: {} ({code}); check /etc/pam.d/{service}",
        sys::code_name(*.code)
    )]
    Start { service: String, code: i32 },
    /// `pam_authenticate` refused the user: wrong password, unknown user, too many tries.
    #[error("authentication failed ({})", sys::code_name(*.code))]
    AuthFailed { code: i32 },
    /// The password was right but `pam_acct_mgmt` refused the account (expired, locked,
    /// password change required, access rules).
    #[error(
        "the account may not authenticate now: {message} ({}); fix the account (e.g. passwd, chage) and retry",
        sys::code_name(*.code)
    )]
    Account { code: i32, message: String },
    /// PAM itself failed (configuration, a module, an unavailable backend, or a question
    /// the daemon cannot answer): not the user's fault.
    #[error("PAM failed in {step}: {message} ({}, {code})", sys::code_name(*.code))]
    System {
        step: &'static str,
        code: i32,
        message: String,
    },
}

impl PamError {
    /// True when the person got it wrong (wrong or unusable password, unknown user, too
    /// many tries), as opposed to PAM or the account refusing; the daemon counts these
    /// as failed attempts.
    pub fn is_wrong_credentials(&self) -> bool {
        matches!(self, PamError::AuthFailed { .. } | PamError::BadPassword(_))
    }
}

/// Flags of both PAM calls: no module output to anybody, and no empty password.
const FLAGS: c_int = sys::PAM_SILENT | sys::PAM_DISALLOW_NULL_AUTHTOK;

/// Serializes PAM transactions in this process (modules need not be thread-safe). Human
/// re-authentication is rare, so waiting here costs nothing that matters.
static PAM_LOCK: Mutex<()> = Mutex::new(());

/// Checks `user`'s `password` against PAM service `service`, then that the account may
/// log in now. Blocking.
///
/// One trailing `"\n"` of the password is ignored (it came from a line of input).
pub fn authenticate(service: &str, user: &str, password: &SecretBuf) -> Result<(), PamError> {
    // Refuse what PAM cannot or must not see before starting a transaction.
    let password = usable_password(password.expose_secret()).map_err(PamError::BadPassword)?;
    let service_c = c_name(service, "service")?;
    let user_c = c_name(user, "user")?;
    let conversation = sys::Conversation::new(&user_c, password);

    let _one_at_a_time = PAM_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let mut handle =
        sys::Handle::start(&service_c, &user_c, &conversation).map_err(|code| PamError::Start {
            service: service.to_owned(),
            code,
        })?;

    // Authentication first: account rules only mean something for a proven user.
    let code = handle.authenticate(FLAGS);
    match auth_verdict(code) {
        Verdict::Pass => {}
        Verdict::WrongCredentials => return Err(PamError::AuthFailed { code }),
        Verdict::AccountRefused | Verdict::Broken => {
            let message = match conversation.refused_style() {
                Some(style) => format!(
                    "a PAM module asked a question the daemon cannot answer (message style \
                     {style}); the service's auth stack must only ask for a password"
                ),
                None => handle.strerror(code),
            };
            return Err(PamError::System {
                step: "pam_authenticate",
                code,
                message,
            });
        }
    }

    let code = handle.acct_mgmt(FLAGS);
    match account_verdict(code) {
        Verdict::Pass => Ok(()),
        Verdict::AccountRefused | Verdict::WrongCredentials => Err(PamError::Account {
            code,
            message: handle.strerror(code),
        }),
        Verdict::Broken => Err(PamError::System {
            step: "pam_acct_mgmt",
            code,
            message: handle.strerror(code),
        }),
    }
}

/// The password as PAM gets it: one trailing newline dropped; not empty, no NUL.
fn usable_password(raw: &[u8]) -> Result<&[u8], PasswordProblem> {
    let password = raw.strip_suffix(b"\n").unwrap_or(raw);
    if password.is_empty() {
        Err(PasswordProblem::Empty)
    } else if password.contains(&0) {
        Err(PasswordProblem::ContainsNul)
    } else {
        Ok(password)
    }
}

/// A service or user name as a C string: not empty, no NUL.
fn c_name(name: &str, what: &'static str) -> Result<CString, PamError> {
    match CString::new(name) {
        Ok(c) if !name.is_empty() => Ok(c),
        _ => Err(PamError::BadName { what }),
    }
}

/// How one PAM return code is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    /// The person failed: counts as a wrong attempt.
    WrongCredentials,
    /// The credentials were fine but the account is not allowed.
    AccountRefused,
    /// PAM, its configuration or a backend failed.
    Broken,
}

/// `pam_authenticate`'s codes (pam_authenticate(3)) plus what common modules return.
fn auth_verdict(code: c_int) -> Verdict {
    match code {
        sys::PAM_SUCCESS => Verdict::Pass,
        // Wrong password; no such user (pam_unix says so only to the application); a
        // module's retry limit; a module refusing this user (pam_nologin, pam_listfile).
        sys::PAM_AUTH_ERR | sys::PAM_USER_UNKNOWN | sys::PAM_MAXTRIES | sys::PAM_PERM_DENIED => {
            Verdict::WrongCredentials
        }
        // PAM_CRED_INSUFFICIENT (the daemon may not read the password data),
        // PAM_AUTHINFO_UNAVAIL (backend down), PAM_CONV_ERR, PAM_ABORT, PAM_SERVICE_ERR,
        // PAM_SYSTEM_ERR, PAM_BUF_ERR, anything else: not the person's fault.
        _ => Verdict::Broken,
    }
}

/// `pam_acct_mgmt`'s codes (pam_acct_mgmt(3)).
fn account_verdict(code: c_int) -> Verdict {
    match code {
        sys::PAM_SUCCESS => Verdict::Pass,
        // Expired account; password must be changed first (we cannot change it here);
        // access rules (pam_access, pam_time); a module's own refusal.
        sys::PAM_ACCT_EXPIRED
        | sys::PAM_NEW_AUTHTOK_REQD
        | sys::PAM_AUTHTOK_EXPIRED
        | sys::PAM_PERM_DENIED
        | sys::PAM_AUTH_ERR
        | sys::PAM_USER_UNKNOWN => Verdict::AccountRefused,
        _ => Verdict::Broken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::{SecretMemoryPolicy, Vault};

    fn secret(vault: &Vault, bytes: &[u8]) -> SecretBuf {
        let mut buf = vault.alloc(bytes.len().max(1)).unwrap();
        buf.truncate(bytes.len());
        buf.expose_secret_mut().copy_from_slice(bytes);
        buf
    }

    #[test]
    fn one_trailing_newline_is_dropped_and_nothing_else() {
        assert_eq!(usable_password(b"pw\n"), Ok(&b"pw"[..]));
        assert_eq!(usable_password(b"pw\n\n"), Ok(&b"pw\n"[..]));
        assert_eq!(usable_password(b" pw \r\n"), Ok(&b" pw \r"[..]));
        assert_eq!(usable_password(b"pw"), Ok(&b"pw"[..]));
    }

    #[test]
    fn empty_and_nul_passwords_are_refused() {
        assert_eq!(usable_password(b""), Err(PasswordProblem::Empty));
        assert_eq!(usable_password(b"\n"), Err(PasswordProblem::Empty));
        assert_eq!(usable_password(b"a\0b"), Err(PasswordProblem::ContainsNul));
        assert_eq!(usable_password(b"\0\n"), Err(PasswordProblem::ContainsNul));
    }

    /// These return before `pam_start`: with the real /etc/pam.d a call into PAM would
    /// yield AuthFailed or System, never BadPassword.
    #[test]
    fn bad_passwords_never_reach_pam_and_count_as_wrong_credentials() {
        let vault = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
        for (bytes, problem) in [
            (&b"sec\0ret"[..], PasswordProblem::ContainsNul),
            (b"\n", PasswordProblem::Empty),
            (b"", PasswordProblem::Empty),
        ] {
            let err = authenticate("agentkeys", "root", &secret(&vault, bytes)).unwrap_err();
            assert!(
                matches!(err, PamError::BadPassword(p) if p == problem),
                "{err:?}"
            );
            assert!(err.is_wrong_credentials());
            let text = format!("{err} {err:?}");
            assert!(!text.contains("sec"), "{text}");
        }
    }

    #[test]
    fn names_with_nul_or_empty_are_refused() {
        let vault = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
        let pw = secret(&vault, b"pw");
        for (service, user, what) in [
            ("agent\0keys", "root", "service"),
            ("", "root", "service"),
            ("agentkeys", "ro\0ot", "user"),
            ("agentkeys", "", "user"),
        ] {
            let err = authenticate(service, user, &pw).unwrap_err();
            assert!(
                matches!(err, PamError::BadName { what: w } if w == what),
                "{err:?}"
            );
            assert!(!err.is_wrong_credentials());
        }
    }

    #[test]
    fn verdicts_separate_the_person_failing_from_pam_failing() {
        assert_eq!(auth_verdict(sys::PAM_SUCCESS), Verdict::Pass);
        for code in [7, 10, 11, 6] {
            assert_eq!(auth_verdict(code), Verdict::WrongCredentials, "{code}");
        }
        // CRED_INSUFFICIENT, AUTHINFO_UNAVAIL, CONV_ERR, ABORT, SERVICE_ERR, unknown.
        for code in [8, 9, 19, 26, 3, 99, -1] {
            assert_eq!(auth_verdict(code), Verdict::Broken, "{code}");
        }
        assert_eq!(account_verdict(sys::PAM_SUCCESS), Verdict::Pass);
        for code in [13, 12, 27, 6, 7, 10] {
            assert_eq!(account_verdict(code), Verdict::AccountRefused, "{code}");
        }
        for code in [4, 9, 19, 99] {
            assert_eq!(account_verdict(code), Verdict::Broken, "{code}");
        }
    }

    #[test]
    fn errors_name_the_step_and_code() {
        let e = PamError::AuthFailed { code: 7 };
        assert_eq!(e.to_string(), "authentication failed (PAM_AUTH_ERR)");
        assert!(e.is_wrong_credentials());
        let e = PamError::System {
            step: "pam_acct_mgmt",
            code: 9,
            message: "Authentication service cannot retrieve authentication info".into(),
        };
        assert!(e.to_string().contains("pam_acct_mgmt"), "{e}");
        assert!(e.to_string().contains("PAM_AUTHINFO_UNAVAIL, 9"), "{e}");
        assert!(!e.is_wrong_credentials());
        let e = PamError::Start {
            service: "agentkeys".into(),
            code: 26,
        };
        assert!(e.to_string().contains("/etc/pam.d/agentkeys"), "{e}");
        assert_eq!(sys::code_name(1000), "unknown PAM code");
        assert_eq!(sys::code_name(-3), "unknown PAM code");
    }
}
