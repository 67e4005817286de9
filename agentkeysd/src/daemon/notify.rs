//! `sd_notify` (libsystemd): READY/STATUS/STOPPING. A no-op without `NOTIFY_SOCKET`.

use libsystemd::daemon::{NotifyState, notify};

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status.to_owned())]);
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping".into()),
    ]);
}

fn send(state: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = notify(false, state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}
