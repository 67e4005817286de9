//! The frame format between `pam_agentkeys` (client, inside a login process) and
//! `agentkeysd`'s PAM listener (`<runtime-dir>/pam.sock`). Pure code: no I/O, no secrets
//! kept — the caller owns every buffer (so it can keep passwords in wiped memory).
//!
//! A frame is an 8-byte header and a body:
//!
//! ```text
//! 0..2  magic  b"AK"
//! 2     version 1
//! 3     op (request) or status (reply)
//! 4..8  body length, u32 big-endian, at most MAX_BODY (request) / MAX_REPLY_BODY (reply)
//! body  request: the op's fields in order, each a u16 big-endian length and that many bytes
//!       reply: ASCII text for the module's log (never a secret), at most MAX_REPLY_BODY
//! ```
//!
//! Requests: `OpenSession(user, password)` (an empty password: a session opened without
//! one, counted but unlocking nothing), `CloseSession(user)`,
//! `ChangePassword(user, old, new)` (`old` may be empty: root changing a password is not
//! asked for the old one). A body with fields missing, left over, or longer than their
//! limits is refused whole: the daemon acts on a frame exactly as written or not at all.
//! The length is read before the body, so a reader never allocates more than the limit.

use std::fmt;

/// The first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"AK";
/// The one version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 8;
/// Longest user name accepted (Linux `LOGIN_NAME_MAX`).
pub const MAX_USER: usize = 256;
/// Longest password accepted (Linux-PAM's `PAM_MAX_RESP_SIZE`).
pub const MAX_PASSWORD: usize = 512;
/// Largest request body: the longest op (`ChangePassword`) at its limits, rounded up.
pub const MAX_BODY: usize = 2048;
/// Largest reply body (a short log text).
pub const MAX_REPLY_BODY: usize = 256;

/// What a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A session of `user` opened with `password` (typed at its login).
    OpenSession = 1,
    /// A session of `user` closed.
    CloseSession = 2,
    /// `user`'s password changed from `old` to `new`.
    ChangePassword = 3,
}

impl Op {
    fn from_byte(b: u8) -> Option<Op> {
        match b {
            1 => Some(Op::OpenSession),
            2 => Some(Op::CloseSession),
            3 => Some(Op::ChangePassword),
            _ => None,
        }
    }

    /// Lower-case name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::OpenSession => "open_session",
            Op::CloseSession => "close_session",
            Op::ChangePassword => "change_password",
        }
    }
}

/// A parsed request; borrows the body it was parsed from (passwords stay in the caller's
/// wiped buffer).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    OpenSession {
        user: &'a str,
        password: &'a [u8],
    },
    CloseSession {
        user: &'a str,
    },
    ChangePassword {
        user: &'a str,
        old: &'a [u8],
        new: &'a [u8],
    },
}

/// Never prints a password.
impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(self.op().as_str())
            .field("user", &self.user())
            .finish_non_exhaustive()
    }
}

impl<'a> Request<'a> {
    pub fn op(&self) -> Op {
        match self {
            Request::OpenSession { .. } => Op::OpenSession,
            Request::CloseSession { .. } => Op::CloseSession,
            Request::ChangePassword { .. } => Op::ChangePassword,
        }
    }

    pub fn user(&self) -> &'a str {
        match self {
            Request::OpenSession { user, .. }
            | Request::CloseSession { user }
            | Request::ChangePassword { user, .. } => user,
        }
    }

    fn fields(&self) -> ([&'a [u8]; 3], usize) {
        match *self {
            Request::OpenSession { user, password } => ([user.as_bytes(), password, &[]], 2),
            Request::CloseSession { user } => ([user.as_bytes(), &[], &[]], 1),
            Request::ChangePassword { user, old, new } => ([user.as_bytes(), old, new], 3),
        }
    }
}

/// How a reply ended the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done (a session closed, a password change re-wrapped).
    Ok = 0,
    /// The password opened the owner's login key.
    Unlocked = 1,
    /// The owner's first login: a login key was created under this password.
    Created = 2,
    /// The password did not open the login key; the owner stays locked.
    WrongPassword = 3,
    /// The daemon will not act for this peer or user.
    Refused = 4,
    /// The request was not a valid frame.
    Malformed = 5,
    /// The daemon failed inside (its log says why).
    Failed = 6,
}

impl Status {
    fn from_byte(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::Unlocked,
            2 => Status::Created,
            3 => Status::WrongPassword,
            4 => Status::Refused,
            5 => Status::Malformed,
            6 => Status::Failed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Unlocked => "unlocked",
            Status::Created => "created",
            Status::WrongPassword => "wrong password",
            Status::Refused => "refused",
            Status::Malformed => "malformed",
            Status::Failed => "failed",
        }
    }
}

/// A parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: Status,
    pub text: String,
}

/// Why bytes are not a frame. Carries no bytes of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    BadMagic,
    UnsupportedVersion(u8),
    UnknownOp(u8),
    UnknownStatus(u8),
    TooLong {
        len: usize,
        max: usize,
    },
    Truncated,
    TrailingBytes,
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    EmptyField(&'static str),
    BadUser,
    BadText,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadMagic => write!(f, "not an AgentKeys PAM frame (bad magic)"),
            WireError::UnsupportedVersion(v) => write!(f, "unsupported frame version {v}"),
            WireError::UnknownOp(o) => write!(f, "unknown op {o}"),
            WireError::UnknownStatus(s) => write!(f, "unknown reply status {s}"),
            WireError::TooLong { len, max } => write!(f, "body of {len} bytes exceeds {max}"),
            WireError::Truncated => write!(f, "frame ends inside a field"),
            WireError::TrailingBytes => write!(f, "bytes after the last field"),
            WireError::FieldTooLong { field, len, max } => {
                write!(f, "{field} is {len} bytes, more than {max}")
            }
            WireError::EmptyField(field) => write!(f, "{field} is empty"),
            WireError::BadUser => write!(f, "user name is not a valid login name"),
            WireError::BadText => write!(f, "reply text is not printable ASCII"),
        }
    }
}

impl std::error::Error for WireError {}

/// A parsed request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub op: Op,
    pub body_len: usize,
}

fn header_common(bytes: &[u8; HEADER_LEN], max: usize) -> Result<(u8, usize), WireError> {
    if bytes[..2] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if bytes[2] != VERSION {
        return Err(WireError::UnsupportedVersion(bytes[2]));
    }
    let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max {
        return Err(WireError::TooLong { len, max });
    }
    Ok((bytes[3], len))
}

/// Checks a request header; the body length it returns is at most [`MAX_BODY`].
pub fn parse_header(bytes: &[u8; HEADER_LEN]) -> Result<Header, WireError> {
    let (op, body_len) = header_common(bytes, MAX_BODY)?;
    let op = Op::from_byte(op).ok_or(WireError::UnknownOp(op))?;
    Ok(Header { op, body_len })
}

/// A login name as the daemon will look it up: 1–256 bytes of UTF-8, no control
/// characters, no `/` and no `:` (passwd's separator).
pub fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER
        && !user.chars().any(|c| c.is_control() || c == '/' || c == ':')
}

struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn next(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let (len, rest) = self
            .rest
            .split_first_chunk::<2>()
            .ok_or(WireError::Truncated)?;
        let len = usize::from(u16::from_be_bytes(*len));
        if len > max {
            return Err(WireError::FieldTooLong { field, len, max });
        }
        let (value, rest) = rest.split_at_checked(len).ok_or(WireError::Truncated)?;
        self.rest = rest;
        Ok(value)
    }

    fn user(&mut self) -> Result<&'a str, WireError> {
        let raw = self.next("user", MAX_USER)?;
        let user = std::str::from_utf8(raw).map_err(|_| WireError::BadUser)?;
        if !valid_user(user) {
            return Err(WireError::BadUser);
        }
        Ok(user)
    }

    fn password(&mut self, field: &'static str, may_be_empty: bool) -> Result<&'a [u8], WireError> {
        let value = self.next(field, MAX_PASSWORD)?;
        if value.is_empty() && !may_be_empty {
            return Err(WireError::EmptyField(field));
        }
        Ok(value)
    }

    fn end(self) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

/// Parses the body of a request whose header said `op`.
pub fn parse_body(op: Op, body: &[u8]) -> Result<Request<'_>, WireError> {
    if body.len() > MAX_BODY {
        return Err(WireError::TooLong {
            len: body.len(),
            max: MAX_BODY,
        });
    }
    let mut f = Fields { rest: body };
    let req = match op {
        Op::OpenSession => Request::OpenSession {
            user: f.user()?,
            // Empty: a session opened without a password (an SSH key, a
            // fingerprint): counted, unlocks nothing.
            password: f.password("password", true)?,
        },
        Op::CloseSession => Request::CloseSession { user: f.user()? },
        Op::ChangePassword => Request::ChangePassword {
            user: f.user()?,
            old: f.password("old password", true)?,
            new: f.password("new password", false)?,
        },
    };
    f.end()?;
    Ok(req)
}

/// Parses a whole request frame (header and body, nothing after).
pub fn parse_request(frame: &[u8]) -> Result<Request<'_>, WireError> {
    let (head, body) = frame
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(WireError::Truncated)?;
    let header = parse_header(head)?;
    if body.len() < header.body_len {
        return Err(WireError::Truncated);
    }
    if body.len() > header.body_len {
        return Err(WireError::TrailingBytes);
    }
    parse_body(header.op, body)
}

/// Bytes [`encode_request`] writes for `req`.
pub fn encoded_len(req: &Request<'_>) -> usize {
    let (fields, n) = req.fields();
    HEADER_LEN + fields.iter().take(n).map(|f| 2 + f.len()).sum::<usize>()
}

/// Appends the frame of `req` to `out`, after checking it is one the daemon accepts.
/// Give `out` a capacity of [`encoded_len`] (or more) and it never reallocates, so no
/// copy of a password is left behind in freed memory.
pub fn encode_request(req: &Request<'_>, out: &mut Vec<u8>) -> Result<(), WireError> {
    let len = encoded_len(req);
    let body_len = len - HEADER_LEN;
    if body_len > MAX_BODY {
        return Err(WireError::TooLong {
            len: body_len,
            max: MAX_BODY,
        });
    }
    let (fields, n) = req.fields();
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(req.op() as u8);
    out.extend_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_be_bytes());
    for field in fields.iter().take(n) {
        let flen = u16::try_from(field.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&flen.to_be_bytes());
        out.extend_from_slice(field);
    }
    // Validate by parsing what we wrote: one definition of "acceptable", and a frame the
    // daemon would refuse is never sent.
    let written = out.get(start..).ok_or(WireError::Truncated)?;
    if let Err(e) = parse_request(written) {
        // Wipe what was written (it may hold a password) before giving up on it.
        if let Some(tail) = out.get_mut(start..) {
            tail.fill(0);
            std::hint::black_box(&*tail);
        }
        out.truncate(start);
        return Err(e);
    }
    Ok(())
}

/// The reply frame of `status` with log text `text` (cut to [`MAX_REPLY_BODY`] bytes;
/// anything but printable ASCII becomes `?`).
pub fn encode_reply(status: Status, text: &str) -> Vec<u8> {
    let body: Vec<u8> = text
        .bytes()
        .take(MAX_REPLY_BODY)
        .map(|b| if (0x20..0x7f).contains(&b) { b } else { b'?' })
        .collect();
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(status as u8);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Checks a reply header; returns the status and the body length (≤ [`MAX_REPLY_BODY`]).
pub fn parse_reply_header(bytes: &[u8; HEADER_LEN]) -> Result<(Status, usize), WireError> {
    let (status, len) = header_common(bytes, MAX_REPLY_BODY)?;
    let status = Status::from_byte(status).ok_or(WireError::UnknownStatus(status))?;
    Ok((status, len))
}

/// Parses a reply body (printable ASCII only).
pub fn parse_reply_body(status: Status, body: &[u8]) -> Result<Reply, WireError> {
    if body.len() > MAX_REPLY_BODY {
        return Err(WireError::TooLong {
            len: body.len(),
            max: MAX_REPLY_BODY,
        });
    }
    if !body.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(WireError::BadText);
    }
    Ok(Reply {
        status,
        text: String::from_utf8_lossy(body).into_owned(),
    })
}

/// Parses a whole reply frame.
pub fn parse_reply(frame: &[u8]) -> Result<Reply, WireError> {
    let (head, body) = frame
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(WireError::Truncated)?;
    let (status, len) = parse_reply_header(head)?;
    match body.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(WireError::Truncated),
        std::cmp::Ordering::Greater => Err(WireError::TrailingBytes),
        std::cmp::Ordering::Equal => parse_reply_body(status, body),
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
