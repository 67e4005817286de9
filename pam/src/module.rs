//! What each PAM entry point does (called by [`crate::sys`] under `catch_unwind`; every
//! entry point then returns `PAM_IGNORE`, so nothing here can fail or block a login beyond
//! [`client::TIMEOUT`] by default, `timeout=` at most).
//!
//! - `auth`: keep the password an earlier module (pam_unix, pam_sss…) set as
//!   `PAM_AUTHTOK` in the handle, together with the `PAM_USER` it was typed for, for the
//!   session step. This module never prompts.
//! - `open_session`: send it to the daemon (which unlocks the owner's login-class
//!   credentials), then wipe it — but only if `PAM_USER` is still the user it was kept
//!   for: sudo authenticates the invoking user and then opens the target's session, and
//!   alice's password must never become root's. Otherwise (or without a kept password)
//!   the session is still announced, with no password (it counts towards "the owner's last
//!   session" and unlocks nothing).
//! - `close_session`: announce the end of the session.
//! - Sessions of the `systemd-user` service (the per-user manager, which never closes
//!   while the user lingers) are neither announced nor closed.
//! - `chauthtok` (update pass only): send the old and the new password, so the daemon
//!   re-wraps the login key under the new one.

use std::ffi::c_int;

use crate::args::Args;
use crate::client::{self, ClientError};
use crate::secret::{Kept, Secret};
use crate::sys::{LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING, PAM_UPDATE_AUTHTOK, Pam, Token};
use crate::wire::{Reply, Request, Status};

pub fn authenticate(pam: &Pam<'_>, _flags: c_int, args: &Args) {
    let Some(user) = pam.user() else {
        debug(pam, args, "auth: no PAM_USER; no password kept");
        return;
    };
    match pam.token(Token::Current) {
        Some(password) if !password.is_empty() => {
            if pam.keep_password(Kept { user, password }) {
                debug(pam, args, "password kept for the session step");
            } else {
                pam.log(
                    LOG_WARNING,
                    "could not keep the password (pam_set_data failed)",
                );
            }
        }
        _ => debug(
            pam,
            args,
            "no password from an earlier module (place pam_agentkeys after the module that asks)",
        ),
    }
}

pub fn setcred(pam: &Pam<'_>, _flags: c_int, args: &Args) {
    debug(pam, args, "setcred: nothing to do");
}

/// Services whose sessions are not a user being at the machine and are never announced.
/// `systemd-user` is the per-user manager (`user@UID.service`): with lingering it never
/// closes, so counting it would keep login-class credentials unlocked for good.
const IGNORED_SESSION_SERVICES: &[&str] = &["systemd-user"];

fn session_ignored(service: &str) -> bool {
    IGNORED_SESSION_SERVICES.contains(&service)
}

pub fn open_session(pam: &Pam<'_>, _flags: c_int, args: &Args) {
    if session_ignored(&pam.service()) {
        debug(
            pam,
            args,
            "open_session: service ignored (not a login session)",
        );
        pam.forget_password();
        return;
    }
    let Some(user) = pam.user() else {
        pam.log(LOG_WARNING, "open_session: no PAM_USER; nothing sent");
        return;
    };
    let result = pam.with_kept_password(|kept| {
        let password = match password_for(&user, kept) {
            Some(pw) => pw.expose(),
            None => {
                debug(
                    pam,
                    args,
                    "no password kept for this user: announcing the session only",
                );
                b""
            }
        };
        let req = Request::OpenSession {
            user: &user,
            password,
        };
        client::call(&args.socket, &req, args.timeout)
    });
    // The password's job is done: wipe it now rather than at pam_end.
    pam.forget_password();
    report(pam, args, "open_session", &user, result);
}

/// The password to send with `session_user`'s `OpenSession`: the kept one only if it was
/// kept for that very user. `PAM_USER` may change between `auth` and `open_session` (sudo:
/// alice authenticates, root's session opens); a password sent with another user would
/// create or unlock that user's login key under it.
fn password_for<'a>(session_user: &str, kept: Option<&'a Kept>) -> Option<&'a Secret> {
    kept.filter(|k| k.user == session_user)
        .map(|k| &k.password)
        .filter(|pw| !pw.is_empty())
}

pub fn close_session(pam: &Pam<'_>, _flags: c_int, args: &Args) {
    if session_ignored(&pam.service()) {
        debug(
            pam,
            args,
            "close_session: service ignored (not a login session)",
        );
        return;
    }
    let Some(user) = pam.user() else {
        pam.log(LOG_WARNING, "close_session: no PAM_USER; nothing sent");
        return;
    };
    let req = Request::CloseSession { user: &user };
    let result = client::call(&args.socket, &req, args.timeout);
    report(pam, args, "close_session", &user, result);
}

pub fn chauthtok(pam: &Pam<'_>, flags: c_int, args: &Args) {
    if flags & PAM_UPDATE_AUTHTOK == 0 {
        return; // the preliminary check pass: nothing changes yet
    }
    let Some(user) = pam.user() else {
        pam.log(LOG_WARNING, "chauthtok: no PAM_USER; nothing sent");
        return;
    };
    let Some(new) = pam.token(Token::Current).filter(|t| !t.is_empty()) else {
        pam.log(
            LOG_NOTICE,
            "chauthtok: no new password from an earlier module; login-class credentials stay \
             under the old password",
        );
        return;
    };
    // Root changing a user's password is not asked for the old one: the daemon re-wraps
    // with the key it holds while the owner is logged in.
    let old = pam.token(Token::Old);
    let req = Request::ChangePassword {
        user: &user,
        old: old.as_ref().map(|o| o.expose()).unwrap_or_default(),
        new: new.expose(),
    };
    let result = client::call(&args.socket, &req, args.timeout);
    report(pam, args, "chauthtok", &user, result);
}

fn debug(pam: &Pam<'_>, args: &Args, msg: &str) {
    if args.debug {
        pam.log(LOG_DEBUG, msg);
    }
}

/// One log line per request; never a password (neither side puts one in a reply).
fn report(pam: &Pam<'_>, args: &Args, step: &str, user: &str, result: Result<Reply, ClientError>) {
    let service = pam.service();
    match result {
        Ok(Reply { status, text }) => {
            let priority = match status {
                Status::Ok | Status::Unlocked | Status::Created => LOG_INFO,
                Status::WrongPassword | Status::Refused => LOG_NOTICE,
                Status::Malformed | Status::Failed => LOG_WARNING,
            };
            if priority != LOG_INFO || args.debug || step != "close_session" {
                pam.log(
                    priority,
                    &format!(
                        "{step} for {user} ({service}): agentkeysd: {}: {text}",
                        status.as_str()
                    ),
                );
            }
        }
        Err(ClientError::Connect(e)) => pam.log(
            LOG_INFO,
            &format!(
                "{step} for {user} ({service}): agentkeysd not reachable at {} ({e}); login \
                 continues, login-class credentials stay locked",
                args.socket.display()
            ),
        ),
        Err(e) => pam.log(
            LOG_WARNING,
            &format!(
                "{step} for {user} ({service}): {e}; login continues, login-class credentials \
                 may stay locked"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(user: &str, pw: &[u8]) -> Kept {
        Kept {
            user: user.to_owned(),
            password: Secret::copy_of(pw),
        }
    }

    #[test]
    fn the_systemd_user_manager_is_not_a_session() {
        assert!(session_ignored("systemd-user"));
        for s in ["login", "sshd", "gdm-password", "sudo", "systemd-user2", ""] {
            assert!(!session_ignored(s), "{s}");
        }
    }

    #[test]
    fn the_password_goes_only_with_the_user_it_was_typed_for() {
        let alice = kept("alice", b"alice's password");
        assert_eq!(
            password_for("alice", Some(&alice)).map(Secret::expose),
            Some(&b"alice's password"[..])
        );
        // sudo: alice authenticated, then PAM_USER became root before open_session.
        assert!(password_for("root", Some(&alice)).is_none());
        assert!(password_for("alic", Some(&alice)).is_none());
        assert!(password_for("alice", None).is_none());
        assert!(password_for("alice", Some(&kept("alice", b""))).is_none());
    }
}
