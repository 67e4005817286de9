//! `sd_notify` (libsystemd): READY/STATUS/STOPPING, and the watchdog's `WATCHDOG=1`.
//! Every message is a no-op without `NOTIFY_SOCKET`.
//!
//! The watchdog runs as a task on the same async runtime that serves the bus, so its
//! pings stop when that runtime stops making progress (every worker stuck), which is
//! the hang systemd should restart us for. It does not probe the store: a long but
//! legitimate call (an audit verify of a large trail) holds the store's lock, and must
//! not get the daemon killed.

use std::time::Duration;

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

/// How often to ping, when systemd asked for a watchdog: half of `WATCHDOG_USEC`, as
/// sd_watchdog_enabled(3) recommends. `None` without `WATCHDOG_USEC`, when
/// `WATCHDOG_PID` names another process (we inherited it from a parent), or when the
/// interval is too short to honour.
pub fn watchdog_period() -> Option<Duration> {
    // `false`: never edit the environment here; the process is multi-threaded by now.
    let timeout = libsystemd::daemon::watchdog_enabled(false)?;
    let period = timeout / 2;
    (!period.is_zero()).then_some(period)
}

/// Pings the watchdog until stopped (or dropped).
#[derive(Debug)]
pub struct Watchdog {
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Watchdog {
    /// Starts pinging when systemd asked for it (see [`watchdog_period`]); otherwise an
    /// idle handle. Call after `READY=1`, from inside the runtime.
    pub fn start() -> Watchdog {
        let Some(period) = watchdog_period() else {
            return Watchdog { running: None };
        };
        tracing::debug!(?period, "watchdog: pinging systemd");
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            // After a stall, ping once and go on at the normal pace; a burst helps nobody.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tick.tick() => {}
                }
                // sendmsg on a datagram socket blocks while the receiver's queue is full:
                // never on a worker that serves the bus.
                let sent = tokio::task::spawn_blocking(|| send(&[NotifyState::Watchdog])).await;
                if sent.is_err() {
                    break;
                }
            }
        });
        Watchdog {
            running: Some((stop_tx, task)),
        }
    }

    /// Stops pinging and waits until a ping being sent has gone, so that nothing follows
    /// `STOPPING=1`. Called as shutdown begins: systemd watches a stop through its stop
    /// timeout, not the watchdog.
    pub async fn stop(mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "watchdog task ended badly");
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }
}
