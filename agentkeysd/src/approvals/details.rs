//! The five auth-request types and their details in canonical CBOR.
//!
//! Each variant is a map with `"type"` (the snake_case variant name) and its fields under
//! snake_case keys: strings as text, public keys as 32-byte byte strings, scopes as arrays of
//! text, uids as unsigned integers. An optional field that is absent is not in the map at
//! all (never `null`). [`decode`] accepts only the one canonical encoding of valid details,
//! so the bytes the human approves, the OTP is derived from and the host key signs are the
//! bytes the child sent, with no second spelling of the same request.
//!
//! What the human approves must be inside these bytes: the bus method that opens a request
//! carries nothing else the child chose (no options map), so the agent's name and the owner
//! whose approval is asked are optional fields of `Pair` and `Recover`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;

use super::cbor::{self, CborError, Value};
use crate::api::names::valid_name;

/// Largest canonical details blob, in bytes.
pub const MAX_DETAILS_LEN: usize = 16 * 1024;
/// Most names a scope may list.
pub const MAX_SCOPE_NAMES: usize = 256;
/// Longest text field, in bytes of UTF-8.
pub const MAX_TEXT_LEN: usize = 1024;
/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

const KEY_TYPE: &str = "type";
const KEY_REQUESTED_SCOPE: &str = "requested_scope";
const KEY_AGENT_IDENTITY: &str = "agent_identity";
const KEY_NEW_PUBKEY: &str = "new_pubkey";
const KEY_AGENT_ID: &str = "agent_id";
const KEY_NEW_SCOPE: &str = "new_scope";
const KEY_CREDENTIAL: &str = "credential";
const KEY_REASON: &str = "reason";
const KEY_NAME: &str = "name";
const KEY_OWNER: &str = "owner";

/// Longest piece of untrusted input quoted back in an error.
const QUOTE_CHARS: usize = 64;

/// The kind of an auth request (DESIGN §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestType {
    /// A new agent asks to be paired with an owner.
    Pair,
    /// A new key asks to take over an existing agent identity.
    Recover,
    /// An agent asks for a different scope.
    ScopeChange,
    /// An agent asks for one read of a credential whose grant says `confirm`.
    HighValueRelease,
    /// An agent replaces its own key.
    KeyRotate,
}

impl RequestType {
    /// Every type, in declaration order.
    pub const ALL: [RequestType; 5] = [
        RequestType::Pair,
        RequestType::Recover,
        RequestType::ScopeChange,
        RequestType::HighValueRelease,
        RequestType::KeyRotate,
    ];

    /// The name used on the bus and in the signing input: `"Pair"`, `"ScopeChange"`, …
    pub fn as_str(self) -> &'static str {
        match self {
            RequestType::Pair => "Pair",
            RequestType::Recover => "Recover",
            RequestType::ScopeChange => "ScopeChange",
            RequestType::HighValueRelease => "HighValueRelease",
            RequestType::KeyRotate => "KeyRotate",
        }
    }

    /// The value of the details' `"type"` key: `"pair"`, `"scope_change"`, …
    pub fn details_type(self) -> &'static str {
        match self {
            RequestType::Pair => "pair",
            RequestType::Recover => "recover",
            RequestType::ScopeChange => "scope_change",
            RequestType::HighValueRelease => "high_value_release",
            RequestType::KeyRotate => "key_rotate",
        }
    }
}

impl fmt::Display for RequestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestType {
    type Err = UnknownRequestType;

    /// Parses the bus name (`"Pair"`, exact case).
    fn from_str(s: &str) -> Result<RequestType, UnknownRequestType> {
        RequestType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownRequestType { name: quote(s) })
    }
}

/// A request type name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown auth request type {name:?}; expected Pair, Recover, ScopeChange, \
     HighValueRelease or KeyRotate"
)]
pub struct UnknownRequestType {
    /// The name given (at most 64 characters of it).
    pub name: String,
}

/// `Pair`: a new agent asks to be paired with the scope it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// Credential names the agent asks for (may be empty; no duplicates).
    pub requested_scope: Vec<String>,
    /// The agent's name (key `"name"`, a valid name: `[a-z0-9][a-z0-9._-]{0,63}`); absent
    /// when the child proposes none.
    pub name: Option<String>,
    /// The uid whose approval is asked (key `"owner"`, an unsigned integer); absent means
    /// the uid of the process that opens the request.
    pub owner: Option<u32>,
}

/// `Recover`: a new key asks to take over an existing identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recover {
    /// Alias, e-mail or agent id, as the child typed it.
    pub agent_identity: String,
    /// The key that will replace the identity's current one.
    pub new_pubkey: [u8; PUBLIC_KEY_LEN],
    /// The uid whose approval is asked (key `"owner"`); absent means the opener's own uid.
    pub owner: Option<u32>,
}

/// `ScopeChange`: an agent asks for a different scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeChange {
    /// The agent.
    pub agent_id: String,
    /// The whole scope it asks for (may be empty; no duplicates).
    pub new_scope: Vec<String>,
}

/// `HighValueRelease`: one read of a credential whose grant needs confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HighValueRelease {
    /// The agent.
    pub agent_id: String,
    /// The credential's name.
    pub credential: String,
    /// Free text shown to the human (may be empty).
    pub reason: String,
}

/// `KeyRotate`: an agent replaces its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRotate {
    /// The agent.
    pub agent_id: String,
    /// The key that will replace the agent's current one.
    pub new_pubkey: [u8; PUBLIC_KEY_LEN],
}

/// The details of an auth request of any type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Details {
    /// See [`Pair`].
    Pair(Pair),
    /// See [`Recover`].
    Recover(Recover),
    /// See [`ScopeChange`].
    ScopeChange(ScopeChange),
    /// See [`HighValueRelease`].
    HighValueRelease(HighValueRelease),
    /// See [`KeyRotate`].
    KeyRotate(KeyRotate),
}

/// Why bytes are not the canonical details of a valid request, or details are not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetailsError {
    /// The blob is over [`MAX_DETAILS_LEN`].
    #[error("auth request details are {len} bytes; the limit is {max}")]
    TooLarge {
        /// Size of the blob.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not one canonical CBOR item.
    #[error("auth request details are not canonical CBOR")]
    Cbor(#[from] CborError),
    /// The item is not a map.
    #[error("auth request details are not a CBOR map")]
    NotAMap,
    /// A required key is absent.
    #[error("auth request details lack the key {key:?}")]
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// A key the type does not have.
    #[error("auth request details have an unknown key {key:?}")]
    UnknownKey {
        /// The key (at most 64 characters of it).
        key: String,
    },
    /// `"type"` names no request type.
    #[error(
        "auth request details have an unknown type {name:?}; expected pair, recover, \
         scope_change, high_value_release or key_rotate"
    )]
    UnknownType {
        /// The value (at most 64 characters of it).
        name: String,
    },
    /// A value of the wrong CBOR kind.
    #[error("auth request field {field:?} must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be, e.g. "a text string".
        expected: &'static str,
    },
    /// A text field over [`MAX_TEXT_LEN`].
    #[error("auth request field {field:?} is {len} bytes; the limit is {max}")]
    TextTooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A text field that must not be empty is.
    #[error("auth request field {field:?} is empty")]
    EmptyText {
        /// The field.
        field: &'static str,
    },
    /// A text field holds a character that could disguise what the approver sees.
    #[error(
        "auth request field {field:?} contains a control or bidirectional-formatting character"
    )]
    ForbiddenCharacter {
        /// The field.
        field: &'static str,
    },
    /// A scope over [`MAX_SCOPE_NAMES`].
    #[error("auth request field {field:?} lists {len} names; the limit is {max}")]
    ScopeTooLarge {
        /// The field.
        field: &'static str,
        /// Names listed.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A scope entry that is not a valid name.
    #[error(
        "entry {index} of auth request field {field:?} is not a valid name \
         ([a-z0-9][a-z0-9._-]{{0,63}})"
    )]
    InvalidScopeName {
        /// The field.
        field: &'static str,
        /// Position in the scope, from 0.
        index: usize,
    },
    /// A scope entry that repeats an earlier one.
    #[error("entry {index} of auth request field {field:?} repeats an earlier name")]
    DuplicateScopeName {
        /// The field.
        field: &'static str,
        /// Position of the repeat, from 0.
        index: usize,
    },
    /// A name field that is not a valid name.
    #[error("auth request field {field:?} is not a valid name ([a-z0-9][a-z0-9._-]{{0,63}})")]
    InvalidName {
        /// The field.
        field: &'static str,
    },
    /// A public key that is not 32 bytes.
    #[error("auth request field {field:?} is {len} bytes; an Ed25519 public key is 32")]
    WrongKeyLength {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// 32 bytes that are not a usable Ed25519 public key (not a curve point, or of small
    /// order).
    #[error("auth request field {field:?} is not a valid Ed25519 public key")]
    BadPublicKey {
        /// The field.
        field: &'static str,
    },
    /// Re-encoding the decoded details did not give the input back (the decoder's checks
    /// should make this impossible; it is checked anyway, failing closed).
    #[error("auth request details are not in canonical form")]
    NotCanonical,
}

impl Details {
    /// The request type these details belong to.
    pub fn request_type(&self) -> RequestType {
        match self {
            Details::Pair(_) => RequestType::Pair,
            Details::Recover(_) => RequestType::Recover,
            Details::ScopeChange(_) => RequestType::ScopeChange,
            Details::HighValueRelease(_) => RequestType::HighValueRelease,
            Details::KeyRotate(_) => RequestType::KeyRotate,
        }
    }

    /// The owner uid the details name (Pair and Recover may; absent means the opener's own
    /// uid), if any.
    pub fn owner(&self) -> Option<u32> {
        match self {
            Details::Pair(d) => d.owner,
            Details::Recover(d) => d.owner,
            Details::ScopeChange(_) | Details::HighValueRelease(_) | Details::KeyRotate(_) => None,
        }
    }

    /// Checks what [`decode`] checks beyond the encoding: field sizes, names, characters,
    /// keys, and the size of the encoded blob. [`encode`] does not validate; details that
    /// fail here encode to bytes that [`decode`] refuses.
    pub fn validate(&self) -> Result<(), DetailsError> {
        self.check_fields()?;
        let len = encode(self).len();
        if len > MAX_DETAILS_LEN {
            return Err(DetailsError::TooLarge {
                len,
                max: MAX_DETAILS_LEN,
            });
        }
        Ok(())
    }

    fn check_fields(&self) -> Result<(), DetailsError> {
        match self {
            Details::Pair(d) => {
                check_scope(KEY_REQUESTED_SCOPE, &d.requested_scope)?;
                match &d.name {
                    Some(name) if !valid_name(name) => {
                        Err(DetailsError::InvalidName { field: KEY_NAME })
                    }
                    _ => Ok(()),
                }
            }
            Details::Recover(d) => {
                check_text(KEY_AGENT_IDENTITY, &d.agent_identity, false)?;
                check_public_key(KEY_NEW_PUBKEY, &d.new_pubkey)
            }
            Details::ScopeChange(d) => {
                check_text(KEY_AGENT_ID, &d.agent_id, false)?;
                check_scope(KEY_NEW_SCOPE, &d.new_scope)
            }
            Details::HighValueRelease(d) => {
                check_text(KEY_AGENT_ID, &d.agent_id, false)?;
                check_text(KEY_CREDENTIAL, &d.credential, false)?;
                if !valid_name(&d.credential) {
                    return Err(DetailsError::InvalidName {
                        field: KEY_CREDENTIAL,
                    });
                }
                check_text(KEY_REASON, &d.reason, true)
            }
            Details::KeyRotate(d) => {
                check_text(KEY_AGENT_ID, &d.agent_id, false)?;
                check_public_key(KEY_NEW_PUBKEY, &d.new_pubkey)
            }
        }
    }

    fn to_value(&self) -> Value {
        let ty = (
            KEY_TYPE.to_owned(),
            Value::Text(self.request_type().details_type().to_owned()),
        );
        let text = |key: &str, value: &str| (key.to_owned(), Value::Text(value.to_owned()));
        let bytes = |key: &str, value: &[u8]| (key.to_owned(), Value::Bytes(value.to_vec()));
        let names = |key: &str, names: &[String]| {
            let items = names.iter().map(|n| Value::Text(n.clone())).collect();
            (key.to_owned(), Value::Array(items))
        };
        // An absent optional field is left out of the map, never written as null.
        let uid = |key: &str, uid: Option<u32>| {
            uid.map(|u| (key.to_owned(), Value::Unsigned(u64::from(u))))
        };
        let fields = match self {
            Details::Pair(d) => std::iter::once(names(KEY_REQUESTED_SCOPE, &d.requested_scope))
                .chain(d.name.as_deref().map(|n| text(KEY_NAME, n)))
                .chain(uid(KEY_OWNER, d.owner))
                .collect(),
            Details::Recover(d) => std::iter::once(text(KEY_AGENT_IDENTITY, &d.agent_identity))
                .chain([bytes(KEY_NEW_PUBKEY, &d.new_pubkey)])
                .chain(uid(KEY_OWNER, d.owner))
                .collect(),
            Details::ScopeChange(d) => vec![
                text(KEY_AGENT_ID, &d.agent_id),
                names(KEY_NEW_SCOPE, &d.new_scope),
            ],
            Details::HighValueRelease(d) => vec![
                text(KEY_AGENT_ID, &d.agent_id),
                text(KEY_CREDENTIAL, &d.credential),
                text(KEY_REASON, &d.reason),
            ],
            Details::KeyRotate(d) => vec![
                text(KEY_AGENT_ID, &d.agent_id),
                bytes(KEY_NEW_PUBKEY, &d.new_pubkey),
            ],
        };
        Value::Map(std::iter::once(ty).chain(fields).collect())
    }
}

/// The canonical CBOR of `details` (RFC 8949 §4.2.1). Does not validate: see
/// [`Details::validate`].
pub fn encode(details: &Details) -> Vec<u8> {
    cbor::encode(&details.to_value())
}

/// Parses canonical details and validates them. Refuses anything but the one canonical
/// encoding of valid details: wrong key order, non-shortest heads, indefinite lengths,
/// duplicate, unknown or missing keys, trailing bytes, oversized blobs, scopes and strings.
pub fn decode(bytes: &[u8]) -> Result<Details, DetailsError> {
    // Size first: the CBOR decoder's work and allocations are then bounded by it.
    if bytes.len() > MAX_DETAILS_LEN {
        return Err(DetailsError::TooLarge {
            len: bytes.len(),
            max: MAX_DETAILS_LEN,
        });
    }
    let details = from_value(cbor::decode(bytes)?)?;
    details.check_fields()?;
    if encode(&details) != bytes {
        return Err(DetailsError::NotCanonical);
    }
    Ok(details)
}

/// Whether `key` is an Ed25519 public key a signature could be checked against: a point on
/// the curve that is not of small order.
pub fn valid_public_key(key: &[u8; PUBLIC_KEY_LEN]) -> bool {
    usable_key(key).is_some()
}

/// `key` as a verifying key, if it is a valid one (see [`valid_public_key`]): every
/// signature check in this module goes through here.
pub(crate) fn usable_key(key: &[u8; PUBLIC_KEY_LEN]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(key).ok().filter(|k| !k.is_weak())
}

fn from_value(value: Value) -> Result<Details, DetailsError> {
    let Value::Map(entries) = value else {
        return Err(DetailsError::NotAMap);
    };
    let mut fields = Fields(entries);
    let name = fields.text(KEY_TYPE)?;
    let request_type = RequestType::ALL
        .into_iter()
        .find(|t| t.details_type() == name)
        .ok_or_else(|| DetailsError::UnknownType { name: quote(&name) })?;
    let details = match request_type {
        RequestType::Pair => Details::Pair(Pair {
            requested_scope: fields.names(KEY_REQUESTED_SCOPE)?,
            name: fields.optional_text(KEY_NAME)?,
            owner: fields.optional_uid(KEY_OWNER)?,
        }),
        RequestType::Recover => Details::Recover(Recover {
            agent_identity: fields.text(KEY_AGENT_IDENTITY)?,
            new_pubkey: fields.public_key(KEY_NEW_PUBKEY)?,
            owner: fields.optional_uid(KEY_OWNER)?,
        }),
        RequestType::ScopeChange => Details::ScopeChange(ScopeChange {
            agent_id: fields.text(KEY_AGENT_ID)?,
            new_scope: fields.names(KEY_NEW_SCOPE)?,
        }),
        RequestType::HighValueRelease => Details::HighValueRelease(HighValueRelease {
            agent_id: fields.text(KEY_AGENT_ID)?,
            credential: fields.text(KEY_CREDENTIAL)?,
            reason: fields.text(KEY_REASON)?,
        }),
        RequestType::KeyRotate => Details::KeyRotate(KeyRotate {
            agent_id: fields.text(KEY_AGENT_ID)?,
            new_pubkey: fields.public_key(KEY_NEW_PUBKEY)?,
        }),
    };
    fields.finish()?;
    Ok(details)
}

/// The entries of a decoded map, taken out one known key at a time.
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn take(&mut self, key: &'static str) -> Result<Value, DetailsError> {
        let at = self
            .0
            .iter()
            .position(|(k, _)| k == key)
            .ok_or(DetailsError::MissingKey { key })?;
        Ok(self.0.swap_remove(at).1)
    }

    /// The value under `key`, if the map has it.
    fn take_optional(&mut self, key: &'static str) -> Option<Value> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.swap_remove(at).1)
    }

    fn text(&mut self, key: &'static str) -> Result<String, DetailsError> {
        as_text(key, self.take(key)?)
    }

    fn optional_text(&mut self, key: &'static str) -> Result<Option<String>, DetailsError> {
        self.take_optional(key)
            .map(|value| as_text(key, value))
            .transpose()
    }

    /// A uid: an unsigned integer below 2³². (Shortest form is the CBOR decoder's check.)
    fn optional_uid(&mut self, key: &'static str) -> Result<Option<u32>, DetailsError> {
        let wrong = DetailsError::WrongType {
            field: key,
            expected: "a uid (an unsigned integer below 2^32)",
        };
        match self.take_optional(key) {
            None => Ok(None),
            Some(Value::Unsigned(n)) => u32::try_from(n).map(Some).map_err(|_| wrong),
            Some(_) => Err(wrong),
        }
    }

    fn names(&mut self, key: &'static str) -> Result<Vec<String>, DetailsError> {
        let wrong = DetailsError::WrongType {
            field: key,
            expected: "an array of text strings",
        };
        let Value::Array(items) = self.take(key)? else {
            return Err(wrong);
        };
        if items.len() > MAX_SCOPE_NAMES {
            return Err(DetailsError::ScopeTooLarge {
                field: key,
                len: items.len(),
                max: MAX_SCOPE_NAMES,
            });
        }
        items
            .into_iter()
            .map(|item| match item {
                Value::Text(s) => Ok(s),
                _ => Err(wrong.clone()),
            })
            .collect()
    }

    fn public_key(&mut self, key: &'static str) -> Result<[u8; PUBLIC_KEY_LEN], DetailsError> {
        let Value::Bytes(bytes) = self.take(key)? else {
            return Err(DetailsError::WrongType {
                field: key,
                expected: "a byte string",
            });
        };
        <[u8; PUBLIC_KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
            DetailsError::WrongKeyLength {
                field: key,
                len: bytes.len(),
            }
        })
    }

    /// Fails if any key was not taken.
    fn finish(self) -> Result<(), DetailsError> {
        match self.0.first() {
            Some((key, _)) => Err(DetailsError::UnknownKey { key: quote(key) }),
            None => Ok(()),
        }
    }
}

fn as_text(key: &'static str, value: Value) -> Result<String, DetailsError> {
    match value {
        Value::Text(s) => Ok(s),
        _ => Err(DetailsError::WrongType {
            field: key,
            expected: "a text string",
        }),
    }
}

fn check_text(field: &'static str, text: &str, may_be_empty: bool) -> Result<(), DetailsError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(DetailsError::TextTooLong {
            field,
            len: text.len(),
            max: MAX_TEXT_LEN,
        });
    }
    if text.is_empty() && !may_be_empty {
        return Err(DetailsError::EmptyText { field });
    }
    if text.chars().any(forbidden_char) {
        return Err(DetailsError::ForbiddenCharacter { field });
    }
    Ok(())
}

/// Characters refused in text fields: the approver's terminal or notification shows these
/// fields, and control characters (escape sequences) or bidirectional overrides could make
/// it show something other than what is signed.
fn forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn check_scope(field: &'static str, scope: &[String]) -> Result<(), DetailsError> {
    if scope.len() > MAX_SCOPE_NAMES {
        return Err(DetailsError::ScopeTooLarge {
            field,
            len: scope.len(),
            max: MAX_SCOPE_NAMES,
        });
    }
    let mut seen = BTreeSet::new();
    for (index, name) in scope.iter().enumerate() {
        if !valid_name(name) {
            return Err(DetailsError::InvalidScopeName { field, index });
        }
        if !seen.insert(name.as_str()) {
            return Err(DetailsError::DuplicateScopeName { field, index });
        }
    }
    Ok(())
}

fn check_public_key(field: &'static str, key: &[u8; PUBLIC_KEY_LEN]) -> Result<(), DetailsError> {
    if valid_public_key(key) {
        Ok(())
    } else {
        Err(DetailsError::BadPublicKey { field })
    }
}

/// At most [`QUOTE_CHARS`] characters of untrusted text, for an error (which prints it with
/// `{:?}`, escaping control characters).
fn quote(s: &str) -> String {
    s.chars().take(QUOTE_CHARS).collect()
}

#[cfg(test)]
#[path = "details_tests.rs"]
mod tests;
