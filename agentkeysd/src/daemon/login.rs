//! The PAM listener (DESIGN §2): `<runtime-dir>/pam.sock`, where `pam_agentkeys` tells the
//! daemon about logins, logouts and password changes, so that an owner's `login`-class
//! credentials are unlocked exactly while the owner has a session.
//!
//! Who may talk: the socket is 0600 root, and every connection's `SO_PEERCRED` uid must be
//! 0 (login processes run as root when PAM calls the module); anyone else is answered
//! `Refused` and nothing is read from them.
//!
//! A hung or malicious peer changes nothing: at most [`MAX_CONNECTIONS`] are served at
//! once (more are closed at once), each must deliver its whole frame within
//! [`READ_DEADLINE`], a frame's length is checked from its 8-byte header before its body
//! (at most `pam_agentkeys::wire::MAX_BODY`) is read into secret memory, and a frame that
//! does not parse is answered `Malformed` and acted on not at all.
//!
//! Sessions: the listener counts open sessions per owner (uid). Open: count +1, then unlock
//! (create the login key at the owner's first login). Close: count −1; at zero — the
//! owner's last session — the login key is dropped from memory and the owner's
//! session-bound (`until_logout`) grants end. A close for an owner with no counted session
//! (the daemon restarted meanwhile) is treated as the last one: fail closed. Counts live in
//! memory only; after a restart every owner is locked until their next login. Requests for
//! one owner are served one at a time (a per-owner async mutex held from the count change
//! to the end of the store call), so an unlock never lands after the last logout and a
//! logout's lock never lands after a newer login.
//!
//! Argon2id runs on the blocking pool, one derivation at a time (each takes 64 MiB), never
//! under the store's lock.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use pam_agentkeys::wire::{self, HEADER_LEN, Request, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::store::Actor;
use crate::store::login::{Locked, Rewrap, Unlock, WrapSpec, stretch};
use crate::vault::SecretBuf;

use super::errors::{DaemonError, chain};
use super::state::Shared;

/// The listener's file name in the runtime directory.
pub const SOCKET_NAME: &str = "pam.sock";
/// Connections served at once; more are closed unread.
pub const MAX_CONNECTIONS: usize = 8;
/// Time a peer has to deliver its whole request.
pub const READ_DEADLINE: Duration = Duration::from_secs(3);
/// Time a peer has to take the reply.
const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// Time given to the rest of a refused request before the connection is closed.
const DRAIN_DEADLINE: Duration = Duration::from_millis(200);

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("removing the stale socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("{path} exists and is not a socket; move it away")]
    NotASocket { path: PathBuf },
    #[error("binding {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("making {path} 0600: {source}")]
    Chmod { path: PathBuf, source: io::Error },
}

/// Session counts, the per-owner turn and the Argon2id gate, shared by every connection.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<u32, u32>>,
    owners: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
    kdf: KdfGate,
}

/// One derivation at a time (each takes 64 MiB).
#[derive(Debug)]
struct KdfGate(Semaphore);

impl Default for KdfGate {
    fn default() -> KdfGate {
        KdfGate(Semaphore::new(1))
    }
}

/// The right to act for one owner: held by one request at a time, across its count change
/// and its store call. Without it a close could lock between an open's count and its
/// unlock (key loaded with no session), or a close's lock could land after a newer open
/// (a new session left locked).
#[derive(Debug)]
pub struct Turn {
    uid: u32,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Sessions {
    /// Waits for `uid`'s turn. The per-owner mutexes stay (one per owner who ever
    /// logged in; a few bytes each).
    pub async fn turn(&self, uid: u32) -> Turn {
        let owner = self
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(uid)
            .or_default()
            .clone();
        Turn {
            uid,
            _held: owner.lock_owned().await,
        }
    }

    fn opened(&self, turn: &Turn) -> u32 {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(turn.uid).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Sessions left after this close (0: it was the last, or none was counted).
    fn closed(&self, turn: &Turn) -> u32 {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let left = open.get(&turn.uid).map_or(0, |n| n.saturating_sub(1));
        if left == 0 {
            open.remove(&turn.uid);
        } else {
            open.insert(turn.uid, left);
        }
        left
    }

    /// The owner's counted sessions now.
    pub fn count(&self, turn: &Turn) -> u32 {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&turn.uid).copied().unwrap_or(0)
    }
}

/// Binds `<runtime_dir>/pam.sock` (0600) and serves it until the runtime stops.
pub fn listen(runtime_dir: &Path, shared: &Arc<Shared>) -> Result<PathBuf, ListenError> {
    let path = runtime_dir.join(SOCKET_NAME);
    remove_stale(&path)?;
    let listener = UnixListener::bind(&path).map_err(|source| ListenError::Bind {
        path: path.clone(),
        source,
    })?;
    // Between bind and chmod the socket has the umask's mode; SO_PEERCRED still refuses
    // anyone but root in that window.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ListenError::Chmod {
            path: path.clone(),
            source,
        }
    })?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let shared = Arc::downgrade(shared);
    tokio::spawn(accept_loop(listener, shared, slots));
    tracing::info!(socket = %path.display(), "PAM listener ready");
    Ok(path)
}

fn remove_stale(path: &Path) -> Result<(), ListenError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| ListenError::RemoveStale {
                path: path.to_path_buf(),
                source,
            })
        }
        Ok(_) => Err(ListenError::NotASocket {
            path: path.to_path_buf(),
        }),
        Err(_) => Ok(()),
    }
}

async fn accept_loop(listener: UnixListener, shared: Weak<Shared>, slots: Arc<Semaphore>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "PAM listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("PAM listener: {MAX_CONNECTIONS} connections busy; closing a new one");
            continue;
        };
        let Some(shared) = shared.upgrade() else {
            break;
        };
        tokio::spawn(async move {
            serve(stream, &shared).await;
            drop(slot);
        });
    }
}

/// One connection: check the peer, read one frame, act, reply.
async fn serve(mut stream: UnixStream, shared: &Arc<Shared>) {
    let sessions = &shared.logins;
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "PAM listener: no peer credentials; closing");
            return;
        }
    };
    if cred.uid() != 0 {
        tracing::warn!(
            peer_uid = cred.uid(),
            peer_pid = cred.pid(),
            "PAM listener: refused a peer that is not root"
        );
        reply(
            &mut stream,
            Status::Refused,
            "only root may use this socket",
        )
        .await;
        return;
    }
    let actor = Actor {
        uid: 0,
        pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
    };
    let body = match tokio::time::timeout(READ_DEADLINE, read_frame(&mut stream, shared)).await {
        Ok(Ok(body)) => body,
        Ok(Err(FrameError::Wire(e))) => {
            tracing::warn!(peer_pid = cred.pid(), error = %e, "PAM listener: malformed request");
            reply(&mut stream, Status::Malformed, &e.to_string()).await;
            return;
        }
        Ok(Err(FrameError::Io(e))) => {
            tracing::warn!(peer_pid = cred.pid(), error = %e, "PAM listener: reading the request failed");
            return;
        }
        Ok(Err(FrameError::Internal(e))) => {
            tracing::error!(error = %chain(&e), "PAM listener: cannot hold the request");
            reply(&mut stream, Status::Failed, "internal error").await;
            return;
        }
        Err(_) => {
            tracing::warn!(
                peer_pid = cred.pid(),
                "PAM listener: request not complete within {READ_DEADLINE:?}; closing"
            );
            return;
        }
    };
    let (status, text) = match handle(&body, shared, sessions, actor).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!(error = %chain(&e), "PAM listener: request failed");
            (
                Status::Failed,
                "internal error; see the daemon's log".to_owned(),
            )
        }
    };
    drop(body);
    reply(&mut stream, status, &text).await;
}

enum FrameError {
    Wire(wire::WireError),
    Io(io::Error),
    Internal(DaemonError),
}

/// A request frame: (op, body in secret memory). The header is checked before the body is
/// read, so at most `MAX_BODY` bytes are ever allocated.
struct Frame {
    op: wire::Op,
    body: SecretBuf,
}

async fn read_frame(stream: &mut UnixStream, shared: &Shared) -> Result<Frame, FrameError> {
    let mut head = [0u8; HEADER_LEN];
    stream.read_exact(&mut head).await.map_err(FrameError::Io)?;
    let header = wire::parse_header(&head).map_err(FrameError::Wire)?;
    let mut body = shared
        .vault
        .alloc(header.body_len.max(1))
        .map_err(|e| FrameError::Internal(e.into()))?;
    body.truncate(header.body_len);
    stream
        .read_exact(body.expose_secret_mut())
        .await
        .map_err(FrameError::Io)?;
    // Validate now, so that a bad frame is answered Malformed before anything happens.
    wire::parse_body(header.op, body.expose_secret()).map_err(FrameError::Wire)?;
    Ok(Frame {
        op: header.op,
        body,
    })
}

async fn reply(stream: &mut UnixStream, status: Status, text: &str) {
    let frame = wire::encode_reply(status, text);
    let write = async {
        stream.write_all(&frame).await?;
        stream.shutdown().await
    };
    if let Ok(Err(e)) | Err(e) = tokio::time::timeout(WRITE_DEADLINE, write)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))
    {
        tracing::debug!(error = %e, "PAM listener: the peer did not take the reply");
        return;
    }
    // Closing with unread bytes makes the kernel reset the connection, and a reset can
    // reach the peer before our reply does. A refused or malformed request may still be
    // arriving: discard (never parse) what is left, briefly and boundedly.
    let mut sink = [0u8; 512];
    let drain = async {
        let mut left = wire::MAX_BODY + HEADER_LEN;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_DEADLINE, drain).await;
}

/// A secret-memory copy of a password field.
fn password(shared: &Shared, bytes: &[u8]) -> Result<SecretBuf, DaemonError> {
    let mut buf = shared.vault.alloc(bytes.len().max(1))?;
    buf.truncate(bytes.len());
    buf.expose_secret_mut().copy_from_slice(bytes);
    Ok(buf)
}

async fn handle(
    frame: &Frame,
    shared: &Arc<Shared>,
    sessions: &Sessions,
    actor: Actor,
) -> Result<(Status, String), DaemonError> {
    // Parsed again (it was checked in read_frame) to borrow from the secret body.
    let req = wire::parse_body(frame.op, frame.body.expose_secret())
        .map_err(|e| DaemonError::Invalid(e.to_string()))?;
    let user = req.user().to_owned();
    let Some(uid) = resolve(&user).await? else {
        tracing::warn!(user, op = frame.op.as_str(), "PAM listener: unknown user");
        return Ok((Status::Refused, format!("unknown user '{user}'")));
    };
    // One request per owner at a time, from its count change to its store call.
    let turn = sessions.turn(uid).await;
    match req {
        Request::OpenSession { password: pw, .. } => {
            let pw = (!pw.is_empty()).then(|| password(shared, pw)).transpose()?;
            open_session(shared, sessions, actor, &user, &turn, pw).await
        }
        Request::CloseSession { .. } => close_session(shared, sessions, actor, &user, &turn).await,
        Request::ChangePassword { old, new, .. } => {
            let old = (!old.is_empty())
                .then(|| password(shared, old))
                .transpose()?;
            let new = password(shared, new)?;
            change_password(shared, sessions, actor, &user, &turn, old, new).await
        }
    }
}

/// The uid of login name `user` (NSS may block: on the blocking pool).
async fn resolve(user: &str) -> Result<Option<u32>, DaemonError> {
    let name = user.to_owned();
    let found = tokio::task::spawn_blocking(move || nix::unistd::User::from_name(&name)).await?;
    Ok(found.ok().flatten().map(|u| u.uid.as_raw()))
}

/// Argon2id of `password` under `spec`, one at a time, on the blocking pool.
async fn stretch_gated(
    shared: &Arc<Shared>,
    sessions: &Sessions,
    spec: WrapSpec,
    password: SecretBuf,
) -> Result<SecretBuf, DaemonError> {
    let _gate = sessions
        .kdf
        .0
        .acquire()
        .await
        .map_err(|_| DaemonError::ShuttingDown)?;
    let vault = shared.vault.clone();
    let out = tokio::task::spawn_blocking(move || stretch(&vault, &spec, &password)).await??;
    Ok(out)
}

async fn open_session(
    shared: &Arc<Shared>,
    sessions: &Sessions,
    actor: Actor,
    user: &str,
    turn: &Turn,
    password: Option<SecretBuf>,
) -> Result<(Status, String), DaemonError> {
    let uid = turn.uid;
    // Counted first, whatever the unlock comes to, so every close has its open.
    let count = sessions.opened(turn);
    let unlocked = shared
        .with_store(move |s| Ok(s.login_unlocked(uid)))
        .await?;
    if unlocked {
        tracing::info!(
            user,
            uid,
            sessions = count,
            "session opened; already unlocked"
        );
        return Ok((
            Status::Unlocked,
            format!("already unlocked; {count} sessions"),
        ));
    }
    let Some(password) = password else {
        tracing::info!(
            user,
            uid,
            sessions = count,
            "session opened without a password; stays locked"
        );
        return Ok((
            Status::Ok,
            "session counted; no password, nothing unlocked".into(),
        ));
    };
    let spec = shared
        .with_store(move |s| Ok(s.login_spec(&actor, uid)?))
        .await?;
    let stretched = stretch_gated(shared, sessions, spec.clone(), password).await?;
    // The turn makes a close in between impossible; checked anyway, because a key loaded
    // for an owner with no session would stay loaded until their next logout.
    if sessions.count(turn) == 0 {
        tracing::warn!(user, uid, "session ended before its unlock; stays locked");
        return Ok((
            Status::Ok,
            "session already closed; nothing unlocked".into(),
        ));
    }
    let outcome = crate::daemon::state::blocking(shared, move |s| {
        Ok(s.login_unlock(&actor, uid, &spec, &stretched)?)
    })
    .await?;
    Ok(match outcome {
        Unlock::Unlocked => {
            tracing::info!(
                user,
                uid,
                sessions = count,
                "session opened; login key unlocked"
            );
            (Status::Unlocked, "login-class credentials unlocked".into())
        }
        Unlock::Created => {
            tracing::info!(
                user,
                uid,
                sessions = count,
                "first login: login key created and unlocked"
            );
            (Status::Created, "login key created".into())
        }
        Unlock::WrongPassword => {
            tracing::warn!(
                user,
                uid,
                "session opened, but the password did not open the login key; it stays locked"
            );
            (
                Status::WrongPassword,
                "password did not unlock; still locked".into(),
            )
        }
    })
}

async fn close_session(
    shared: &Arc<Shared>,
    sessions: &Sessions,
    actor: Actor,
    user: &str,
    turn: &Turn,
) -> Result<(Status, String), DaemonError> {
    let uid = turn.uid;
    let left = sessions.closed(turn);
    if left > 0 {
        tracing::info!(user, uid, sessions = left, "session closed");
        return Ok((Status::Ok, format!("{left} sessions left")));
    }
    let Locked {
        was_unlocked,
        grants_ended,
    } = crate::daemon::state::blocking(shared, move |s| Ok(s.login_lock(&actor, uid)?)).await?;
    tracing::info!(
        user,
        uid,
        was_unlocked,
        grants_ended,
        "last session closed: login key dropped, session-bound grants ended"
    );
    Ok((
        Status::Ok,
        format!("last session: locked; {grants_ended} session-bound grants ended"),
    ))
}

async fn change_password(
    shared: &Arc<Shared>,
    sessions: &Sessions,
    actor: Actor,
    user: &str,
    turn: &Turn,
    old: Option<SecretBuf>,
    new: SecretBuf,
) -> Result<(Status, String), DaemonError> {
    let uid = turn.uid;
    let (unlocked, spec) = shared
        .with_store(move |s| Ok((s.login_unlocked(uid), s.login_spec(&actor, uid)?)))
        .await?;
    // While unlocked the key is in memory: the old password is not needed.
    let old = match old {
        Some(old) if !unlocked => Some((
            spec.clone(),
            stretch_gated(shared, sessions, spec, old).await?,
        )),
        _ => None,
    };
    let new_spec = WrapSpec::fresh()?;
    let new_stretched = stretch_gated(shared, sessions, new_spec.clone(), new).await?;
    let outcome = crate::daemon::state::blocking(shared, move |s| {
        let old = old.as_ref().map(|(spec, st)| (spec, st));
        Ok(s.login_rewrap(&actor, uid, old, &new_spec, &new_stretched)?)
    })
    .await?;
    Ok(match outcome {
        Rewrap::Rewrapped => {
            tracing::info!(user, uid, "password changed: login key re-wrapped");
            (
                Status::Ok,
                "login key re-wrapped under the new password".into(),
            )
        }
        Rewrap::Created => {
            tracing::info!(
                user,
                uid,
                "password changed: login key created under the new password"
            );
            (Status::Created, "login key created".into())
        }
        Rewrap::WrongPassword => {
            tracing::warn!(
                user,
                uid,
                "password changed, but the old password did not open the login key; it stays \
                 wrapped under the old one"
            );
            (
                Status::WrongPassword,
                "old password did not open the login key; unchanged".into(),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn the_last_close_and_a_close_without_open_both_lock() {
        let s = Sessions::default();
        let (a, b) = (1000, 1001);
        assert_eq!(s.opened(&s.turn(a).await), 1);
        assert_eq!(s.opened(&s.turn(a).await), 2);
        assert_eq!(s.opened(&s.turn(b).await), 1);
        assert_eq!(s.closed(&s.turn(a).await), 1);
        assert_eq!(s.closed(&s.turn(a).await), 0);
        assert_eq!(
            s.closed(&s.turn(a).await),
            0,
            "an unmatched close counts as the last"
        );
        assert_eq!(s.closed(&s.turn(b).await), 0);
        assert!(s.open.lock().unwrap().is_empty());
    }

    /// An open being served (counted, Argon2 running) holds the owner's turn: a close
    /// that arrives meanwhile waits, so the unlock finds its session still counted and
    /// the close's lock comes after it. Another owner is not held up.
    #[tokio::test]
    async fn a_close_waits_for_the_open_being_served() {
        let s = Arc::new(Sessions::default());
        let open = s.turn(1000).await;
        assert_eq!(s.opened(&open), 1);
        let closer = s.clone();
        let close = tokio::spawn(async move {
            let turn = closer.turn(1000).await;
            closer.closed(&turn)
        });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!close.is_finished(), "the close ran during the open");
        assert_eq!(s.count(&open), 1, "the unlock still sees its session");
        let other = s.turn(1001).await;
        assert_eq!(s.opened(&other), 1);
        drop(open);
        assert_eq!(
            close.await.unwrap(),
            0,
            "the close then ends the last session"
        );
        assert_eq!(s.count(&s.turn(1000).await), 0);
    }
}
