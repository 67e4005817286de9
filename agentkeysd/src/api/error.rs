//! The small, stable set of public D-Bus errors (`dev.agentkeys.Error.*`).
//!
//! The message text of these errors is public: the daemon puts only what the caller may
//! know in it (never a secret, never a path or an internal chain; those are logged).

/// A public error as it crosses the bus.
#[derive(zbus::DBusError, Debug)]
#[zbus(prefix = "dev.agentkeys.Error")]
pub enum Error {
    /// A transport-level failure (the bus, the connection, a malformed reply).
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller may not do this.
    Denied(String),
    /// No such object for this caller (also the answer for another owner's objects).
    NotFound(String),
    /// The object existed but its time ran out.
    Expired(String),
    /// A single-use object was already used.
    AlreadyConsumed(String),
    /// An argument is malformed, out of range or conflicts with existing state.
    InvalidArgument(String),
    /// The object is locked (its owner's login key is not loaded).
    Locked(String),
    /// The daemon cannot do this now (shutting down, a resource missing).
    Unavailable(String),
    /// Something failed inside the daemon; details are in its log.
    Internal(String),
}

/// The kind of a public error, without its text; what clients switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Denied,
    NotFound,
    Expired,
    AlreadyConsumed,
    InvalidArgument,
    Locked,
    Unavailable,
    Internal,
    /// The daemon could not be reached or the transport failed.
    Transport,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ZBus(_) => ErrorKind::Transport,
            Error::Denied(_) => ErrorKind::Denied,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Expired(_) => ErrorKind::Expired,
            Error::AlreadyConsumed(_) => ErrorKind::AlreadyConsumed,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Locked(_) => ErrorKind::Locked,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The public message (for transport errors, the transport's description).
    pub fn message(&self) -> String {
        match self {
            Error::ZBus(e) => e.to_string(),
            Error::Denied(m)
            | Error::NotFound(m)
            | Error::Expired(m)
            | Error::AlreadyConsumed(m)
            | Error::InvalidArgument(m)
            | Error::Locked(m)
            | Error::Unavailable(m)
            | Error::Internal(m) => m.clone(),
        }
    }
}
