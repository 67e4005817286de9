//! Watching a run for its end with one round trip fewer than a proxy's signal stream.
//!
//! zbus's `receive_job_state_changed` waits for two `AddMatch` replies and a
//! `GetNameOwner` (to learn the daemon's unique name) before `Run` can be sent: three bus
//! round trips of a command that lasts a few milliseconds. Here the `AddMatch` goes out
//! without waiting and `Run` right behind it on the same connection. The bus handles one
//! connection's messages in order, so the rule is in place before the daemon even sees
//! `Run`, and the end of the shortest run is still seen. The daemon's unique name comes
//! from `Run`'s own reply, and only signals from it count: a signal sent straight to this
//! connection by another peer (which no match rule filters) is ignored.
//!
//! The `AddMatch` reply is checked as it comes: a bus that refused the rule is an error
//! (the run is cancelled: nothing would ever tell its end).

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroUsize};

use agentkeysd::api::Error as ApiError;
use agentkeysd::api::names::{BUS_NAME, IFACE_JOBS, OBJECT_PATH};
use agentkeysd::api::proxies::JobsProxy;
use futures_util::StreamExt;
use zbus::message::Type;
use zbus::names::OwnedUniqueName;
use zbus::zvariant::Variant;
use zbus::{Connection, Message, MessageStream};

const SIGNAL: &str = "JobStateChanged";

/// Messages held for the watch while `Run` is under way.
const QUEUED: NonZeroUsize = match NonZeroUsize::new(1024) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

/// Every message of the connection from before `Run` on, and what picks out the run's end.
pub struct Watch {
    stream: MessageStream,
    add_match: NonZeroU32,
    /// The daemon's unique name and the run's id, from `Run`'s reply.
    daemon: Option<OwnedUniqueName>,
    job: Option<String>,
}

/// Starts listening (locally first, so nothing the bus sends from now on is missed) and
/// asks the bus for the daemon's `JobStateChanged` signals, without waiting for the answer.
pub async fn subscribe(conn: &Connection) -> zbus::Result<Watch> {
    let mut stream = MessageStream::from(conn);
    // Nothing reads the stream until `Run` returns; room for what arrives meanwhile (the
    // daemon's signals of other runs too) keeps the connection's reader from waiting on it.
    stream.set_max_queued(QUEUED);
    let rule = format!(
        "type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',interface='{IFACE_JOBS}',member='{SIGNAL}'"
    );
    let msg = Message::method_call("/org/freedesktop/DBus", "AddMatch")
        .destination("org.freedesktop.DBus")
        .interface("org.freedesktop.DBus")
        .build(&(rule.as_str(),))?;
    conn.send(&msg).await?;
    Ok(Watch {
        stream,
        add_match: msg.primary_header().serial_num(),
        daemon: None,
        job: None,
    })
}

/// What ended the watch other than the run's end.
#[derive(Debug)]
pub enum WatchError {
    /// The bus refused the match rule.
    Refused(String),
    /// The connection closed.
    Closed,
}

impl Watch {
    /// `Jobs1.Run`; remembers the daemon that answered and the run's id.
    pub async fn run(
        &mut self,
        jobs: &JobsProxy<'_>,
        spec: HashMap<&str, Variant<'_>>,
    ) -> Result<String, ApiError> {
        let reply = jobs
            .inner()
            .call_method("Run", &(spec,))
            .await
            .map_err(ApiError::from)?;
        let job: String = reply.body().deserialize().map_err(ApiError::from)?;
        self.daemon = reply.header().sender().map(|s| s.to_owned().into());
        self.job = Some(job.clone());
        Ok(job)
    }

    /// Waits for the run's end (any state but `running`); call after [`Self::run`] (the
    /// messages that came meanwhile wait in the stream). Cancel-safe: each message is dealt
    /// with completely once it is taken from the stream.
    pub async fn ended(&mut self) -> Result<(), WatchError> {
        loop {
            let Some(Ok(msg)) = self.stream.next().await else {
                return Err(WatchError::Closed);
            };
            match msg.message_type() {
                Type::Error if msg.header().reply_serial() == Some(self.add_match) => {
                    let why = msg
                        .header()
                        .error_name()
                        .map_or_else(|| "refused".to_owned(), |n| n.to_string());
                    return Err(WatchError::Refused(why));
                }
                Type::Signal if self.ends_run(&msg) => return Ok(()),
                _ => {}
            }
        }
    }

    /// Whether `msg` is the daemon's `JobStateChanged` telling this run's end.
    fn ends_run(&self, msg: &Message) -> bool {
        let h = msg.header();
        let from_daemon =
            h.sender().map(|s| s.as_str()) == self.daemon.as_deref().map(|d| d.as_str());
        let ours = from_daemon
            && h.path().is_some_and(|p| p.as_str() == OBJECT_PATH)
            && h.interface().is_some_and(|i| i.as_str() == IFACE_JOBS)
            && h.member().is_some_and(|m| m.as_str() == SIGNAL);
        if !ours {
            return false;
        }
        match msg.body().deserialize::<(String, String)>() {
            Ok((job, state)) => Some(&job) == self.job.as_ref() && state != "running",
            Err(_) => false,
        }
    }
}
