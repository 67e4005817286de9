//! The audit log: an append-only hash chain with a keyed head.
//!
//! Row hash = SHA-256("AgentKeys-v1 audit" ‖ prev_hash ‖ each field as u32-BE length ‖ bytes),
//! fields in column order (seq, ts_ms, actor_uid, actor_pid, owner_uid, action, subject,
//! outcome, detail; integers as i64 BE, NULL as an empty field). The first row's prev_hash is
//! 32 zero bytes. The chain alone finds an edited, deleted or reordered row, but whoever edits
//! the file can recompute it; so meta `audit_head` = seq (u64 BE) ‖ hash ‖ HMAC-SHA256(audit
//! key, "AgentKeys-v1 audit head" ‖ seq ‖ hash) is rewritten in the same transaction as every
//! append, and catches rows added or removed at the end. If the head and the last row disagree
//! when the store opens, the store appends an `audit.chain_break` row recording both, so the
//! evidence stays in the chain (and `audit_verify` keeps reporting it) instead of being
//! silently sealed over.

use hmac::{Hmac, Mac};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::error::StoreError;
use super::{Store, now_ms};
use crate::vault::SecretBuf;

const ROW_DOMAIN: &[u8] = b"AgentKeys-v1 audit";
const HEAD_DOMAIN: &[u8] = b"AgentKeys-v1 audit head";
const HEAD_KEY: &str = "audit_head";
const HASH_LEN: usize = 32;
const HEAD_LEN: usize = 8 + HASH_LEN + HASH_LEN;
/// Most rows one `audit_list` call returns.
pub const AUDIT_LIST_MAX: u32 = 10_000;

/// Action recorded when the store finds the chain's end altered at open.
pub(crate) const ACTION_CHAIN_BREAK: &str = "audit.chain_break";

/// Who asked (for the audit row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub uid: u32,
    pub pid: Option<u32>,
}

impl Actor {
    /// This process (for rows the store writes on its own behalf).
    pub(crate) fn this_process() -> Actor {
        Actor {
            uid: nix::unistd::geteuid().as_raw(),
            pid: u32::try_from(nix::unistd::getpid().as_raw()).ok(),
        }
    }
}

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Denied,
    Error,
}

impl Outcome {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// One audit row to append.
#[derive(Debug, Clone, Copy)]
pub struct AuditEntry<'a> {
    pub actor: &'a Actor,
    pub owner_uid: Option<u32>,
    pub action: &'a str,
    pub subject: &'a str,
    pub outcome: Outcome,
    pub detail: &'a str,
}

/// An owned audit row to append, built by the store's own operations.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub actor: Actor,
    pub owner_uid: Option<u32>,
    pub action: &'static str,
    pub subject: String,
    pub outcome: Outcome,
    pub detail: String,
}

impl Record {
    pub(crate) fn entry(&self) -> AuditEntry<'_> {
        AuditEntry {
            actor: &self.actor,
            owner_uid: self.owner_uid,
            action: self.action,
            subject: &self.subject,
            outcome: self.outcome,
            detail: &self.detail,
        }
    }
}

/// An audit row as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub ts_ms: i64,
    pub actor_uid: u32,
    pub actor_pid: Option<u32>,
    pub owner_uid: Option<u32>,
    pub action: String,
    pub subject: String,
    pub outcome: String,
    pub detail: String,
}

/// The result of [`Store::audit_verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub rows: u64,
    pub first_problem: Option<ChainProblem>,
}

/// The first place the chain is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainProblem {
    pub seq: i64,
    pub kind: ProblemKind,
    pub message: String,
}

/// What kind of damage a [`ChainProblem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The row's hash does not match its content: edited or moved.
    Edited,
    /// The row does not follow the previous one: a row before it was deleted or inserted.
    Missing,
    /// The keyed head disagrees with the chain's end: rows added or removed at the end, or
    /// the head forged.
    HeadMismatch,
    /// Rows exist but the keyed head does not.
    HeadMissing,
}

/// The last row of the chain (seq 0 and zero hash before the first row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    pub seq: i64,
    pub hash: [u8; HASH_LEN],
}

impl Tail {
    pub(crate) const GENESIS: Tail = Tail {
        seq: 0,
        hash: [0; HASH_LEN],
    };
}

/// The hashed fields of a row, as raw column values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub seq: i64,
    pub ts_ms: i64,
    pub actor_uid: i64,
    pub actor_pid: Option<i64>,
    pub owner_uid: Option<i64>,
    pub action: &'a [u8],
    pub subject: &'a [u8],
    pub outcome: &'a [u8],
    pub detail: &'a [u8],
}

fn put_field(h: &mut Sha256, bytes: &[u8]) {
    // Rows longer than 4 GiB cannot be stored; saturating keeps this total anyway.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    h.update(len.to_be_bytes());
    h.update(bytes);
}

fn put_int(h: &mut Sha256, v: Option<i64>) {
    match v {
        Some(v) => put_field(h, &v.to_be_bytes()),
        None => put_field(h, &[]),
    }
}

/// The chain hash of a row whose predecessor's hash is `prev`.
pub(crate) fn row_hash(prev: &[u8; HASH_LEN], f: &Fields<'_>) -> [u8; HASH_LEN] {
    let mut h = Sha256::new();
    h.update(ROW_DOMAIN);
    h.update(prev);
    put_int(&mut h, Some(f.seq));
    put_int(&mut h, Some(f.ts_ms));
    put_int(&mut h, Some(f.actor_uid));
    put_int(&mut h, f.actor_pid);
    put_int(&mut h, f.owner_uid);
    put_field(&mut h, f.action);
    put_field(&mut h, f.subject);
    put_field(&mut h, f.outcome);
    put_field(&mut h, f.detail);
    h.finalize().into()
}

fn head_mac(audit_key: &SecretBuf, tail: &Tail) -> Result<Hmac<Sha256>, StoreError> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(audit_key.expose_secret()).map_err(|_| {
            StoreError::Crypto {
                step: "audit head HMAC key setup",
            }
        })?;
    mac.update(HEAD_DOMAIN);
    mac.update(&tail.seq.to_be_bytes());
    mac.update(&tail.hash);
    Ok(mac)
}

/// The `audit_head` meta value for `tail`.
pub(crate) fn encode_head(audit_key: &SecretBuf, tail: &Tail) -> Result<Vec<u8>, StoreError> {
    crate::vault::scrubbed(|| encode_head_inner(audit_key, tail))
}

fn encode_head_inner(audit_key: &SecretBuf, tail: &Tail) -> Result<Vec<u8>, StoreError> {
    let tag = head_mac(audit_key, tail)?.finalize().into_bytes();
    let mut out = Vec::with_capacity(HEAD_LEN);
    out.extend_from_slice(&tail.seq.to_be_bytes());
    out.extend_from_slice(&tail.hash);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Decode and authenticate a head: `Ok(None)` when it is malformed or its MAC is wrong.
pub(crate) fn decode_head(audit_key: &SecretBuf, blob: &[u8]) -> Result<Option<Tail>, StoreError> {
    crate::vault::scrubbed(|| decode_head_inner(audit_key, blob))
}

fn decode_head_inner(audit_key: &SecretBuf, blob: &[u8]) -> Result<Option<Tail>, StoreError> {
    if blob.len() != HEAD_LEN {
        return Ok(None);
    }
    let (seq, rest) = blob.split_at(8);
    let (hash, tag) = rest.split_at(HASH_LEN);
    let (Ok(seq), Ok(hash)) = (<[u8; 8]>::try_from(seq), <[u8; HASH_LEN]>::try_from(hash)) else {
        return Ok(None);
    };
    let tail = Tail {
        seq: i64::from_be_bytes(seq),
        hash,
    };
    Ok(head_mac(audit_key, &tail)?
        .verify_slice(tag)
        .ok()
        .map(|()| tail))
}

/// Append `entry` after `tail` inside the caller's transaction; returns the new tail, which
/// the caller adopts only after its commit succeeds.
pub(crate) fn append(
    conn: &Connection,
    audit_key: &SecretBuf,
    tail: &Tail,
    entry: &AuditEntry<'_>,
) -> Result<Tail, StoreError> {
    let new_tail = append_row(conn, tail, entry, now_ms())?;
    write_head(conn, audit_key, &new_tail)?;
    Ok(new_tail)
}

/// Appends one row after `tail`, stamped `ts_ms`, without moving the keyed head: a batch
/// appends its rows and then calls [`write_head`] once.
pub(crate) fn append_row(
    conn: &Connection,
    tail: &Tail,
    entry: &AuditEntry<'_>,
    ts_ms: i64,
) -> Result<Tail, StoreError> {
    let seq = tail.seq.checked_add(1).ok_or(StoreError::Crypto {
        step: "audit sequence overflow",
    })?;
    let fields = Fields {
        seq,
        ts_ms,
        actor_uid: i64::from(entry.actor.uid),
        actor_pid: entry.actor.pid.map(i64::from),
        owner_uid: entry.owner_uid.map(i64::from),
        action: entry.action.as_bytes(),
        subject: entry.subject.as_bytes(),
        outcome: entry.outcome.as_str().as_bytes(),
        detail: entry.detail.as_bytes(),
    };
    let hash = row_hash(&tail.hash, &fields);
    conn.prepare_cached(
        "INSERT INTO audit (seq, ts_ms, actor_uid, actor_pid, owner_uid, action, subject,
                            outcome, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        seq,
        ts_ms,
        fields.actor_uid,
        fields.actor_pid,
        fields.owner_uid,
        entry.action,
        entry.subject,
        entry.outcome.as_str(),
        entry.detail,
        &tail.hash[..],
        &hash[..],
    ])?;
    Ok(Tail { seq, hash })
}

/// Moves the keyed head to `tail`.
pub(crate) fn write_head(
    conn: &Connection,
    audit_key: &SecretBuf,
    tail: &Tail,
) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
        .execute(params![HEAD_KEY, encode_head(audit_key, tail)?])?;
    Ok(())
}

/// The chain's actual last row.
fn last_row(conn: &Connection) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

fn stored_head(conn: &Connection) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([HEAD_KEY], |r| r.get(0))
        .optional()?)
}

/// Where appends continue, and (if the head and the last row disagree) why the chain's end is
/// not what the head promised.
pub(crate) fn load_tail(
    conn: &Connection,
    audit_key: &SecretBuf,
) -> Result<(Tail, Option<String>), StoreError> {
    let last = last_row(conn)?;
    let tail = match &last {
        None => Tail::GENESIS,
        Some((seq, hash)) => Tail {
            seq: *seq,
            // A malformed stored hash continues from zeros; verify reports the row as edited.
            hash: <[u8; HASH_LEN]>::try_from(hash.as_slice()).unwrap_or([0; HASH_LEN]),
        },
    };
    let problem = match (stored_head(conn)?, &last) {
        (None, None) => None,
        (None, Some(_)) => Some("rows exist but the audit head is missing".to_owned()),
        (Some(blob), _) => match decode_head(audit_key, &blob)? {
            None => Some("the audit head does not authenticate (forged)".to_owned()),
            Some(head) if head == tail => None,
            Some(head) => Some(format!(
                "the audit head names seq {} but the chain ends at seq {}",
                head.seq, tail.seq
            )),
        },
    };
    Ok((tail, problem))
}

fn int(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    }
}

fn opt_int(v: ValueRef<'_>) -> Option<Option<i64>> {
    match v {
        ValueRef::Null => Some(None),
        ValueRef::Integer(i) => Some(Some(i)),
        _ => None,
    }
}

fn bytes(v: ValueRef<'_>) -> Option<&[u8]> {
    match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(b),
        _ => None,
    }
}

/// One stored row, checked against its predecessor: the problem it shows, if any.
fn check_row(
    row: &rusqlite::Row<'_>,
    prev: &Tail,
) -> rusqlite::Result<(Tail, Option<(ProblemKind, String)>)> {
    let seq = int(row.get_ref(0)?).unwrap_or(i64::MIN);
    let parsed = (|| {
        let fields = Fields {
            seq,
            ts_ms: int(row.get_ref(1).ok()?)?,
            actor_uid: int(row.get_ref(2).ok()?)?,
            actor_pid: opt_int(row.get_ref(3).ok()?)?,
            owner_uid: opt_int(row.get_ref(4).ok()?)?,
            action: bytes(row.get_ref(5).ok()?)?,
            subject: bytes(row.get_ref(6).ok()?)?,
            outcome: bytes(row.get_ref(7).ok()?)?,
            detail: bytes(row.get_ref(8).ok()?)?,
        };
        let prev_hash = <[u8; HASH_LEN]>::try_from(bytes(row.get_ref(9).ok()?)?).ok()?;
        let hash = <[u8; HASH_LEN]>::try_from(bytes(row.get_ref(10).ok()?)?).ok()?;
        Some((fields, prev_hash, hash))
    })();
    let Some((fields, prev_hash, hash)) = parsed else {
        let here = Tail {
            seq,
            hash: [0; HASH_LEN],
        };
        let msg = "row has a malformed column (edited)".to_owned();
        return Ok((here, Some((ProblemKind::Edited, msg))));
    };
    let here = Tail { seq, hash };
    let problem = if row_hash(&prev_hash, &fields) != hash {
        Some((
            ProblemKind::Edited,
            "row content does not match its hash (edited or moved)".to_owned(),
        ))
    } else if prev_hash != prev.hash || Some(seq) != prev.seq.checked_add(1) {
        Some((
            ProblemKind::Missing,
            format!(
                "row does not follow seq {} (a row before it was deleted or inserted)",
                prev.seq
            ),
        ))
    } else if fields.action == ACTION_CHAIN_BREAK.as_bytes() {
        Some((
            ProblemKind::HeadMismatch,
            format!(
                "the chain's end was altered while the store was closed: {}",
                String::from_utf8_lossy(fields.detail)
            ),
        ))
    } else {
        None
    };
    Ok((here, problem))
}

impl Store {
    /// Record an event the daemon decided (an approval, a denial of a request) in its own
    /// transaction, fsynced like every state change.
    pub fn audit_event(&mut self, entry: AuditEntry<'_>) -> Result<(), StoreError> {
        self.commit_entry(super::Durability::Full, &entry)
    }

    /// Record an authorization denial in its own transaction. `synchronous=NORMAL`: like
    /// read rows, it may be lost on power loss only.
    pub fn audit_denial(&mut self, entry: AuditEntry<'_>) -> Result<(), StoreError> {
        self.commit_entry(super::Durability::Normal, &entry)
    }

    /// Rows after `after_seq`, oldest first, at most `limit` (capped at [`AUDIT_LIST_MAX`]).
    /// `owner = Some(uid)`: the rows about that owner or acted by that uid; `None`: all.
    pub fn audit_list(
        &mut self,
        owner: Option<u32>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        self.flush_audit()?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, ts_ms, actor_uid, actor_pid, owner_uid, action, subject, outcome, detail
             FROM audit
             WHERE seq > ?1 AND (?2 IS NULL OR owner_uid = ?2 OR actor_uid = ?2)
             ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![after_seq, owner, limit.min(AUDIT_LIST_MAX)], |r| {
            Ok(AuditRow {
                seq: r.get(0)?,
                ts_ms: r.get(1)?,
                actor_uid: r.get(2)?,
                actor_pid: r.get(3)?,
                owner_uid: r.get(4)?,
                action: r.get(5)?,
                subject: r.get(6)?,
                outcome: r.get(7)?,
                detail: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Walk the whole chain in seq order (constant memory) and check the keyed head.
    pub fn audit_verify(&mut self) -> Result<VerifyReport, StoreError> {
        self.flush_audit()?;
        let mut stmt = self.conn.prepare(
            "SELECT seq, ts_ms, actor_uid, actor_pid, owner_uid, action, subject, outcome,
                    detail, prev_hash, hash
             FROM audit ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        let mut prev = Tail::GENESIS;
        let mut count = 0u64;
        let mut first: Option<ChainProblem> = None;
        while let Some(row) = rows.next()? {
            count += 1;
            let (here, problem) = check_row(row, &prev)?;
            if let (None, Some((kind, message))) = (&first, problem) {
                first = Some(ChainProblem {
                    seq: here.seq,
                    kind,
                    message,
                });
            }
            prev = here;
        }
        if first.is_none() {
            first = self.check_head(&prev, count)?;
        }
        Ok(VerifyReport {
            rows: count,
            first_problem: first,
        })
    }

    fn check_head(&self, last: &Tail, rows: u64) -> Result<Option<ChainProblem>, StoreError> {
        let problem = |kind, message: String| {
            Some(ChainProblem {
                seq: last.seq,
                kind,
                message,
            })
        };
        Ok(match stored_head(&self.conn)? {
            None if rows == 0 => None,
            None => problem(
                ProblemKind::HeadMissing,
                "the audit head is missing".to_owned(),
            ),
            Some(blob) => match decode_head(&self.crypto.keys.audit, &blob)? {
                None => problem(
                    ProblemKind::HeadMismatch,
                    "the audit head does not authenticate (forged, or another master key)"
                        .to_owned(),
                ),
                Some(head) if head == *last => None,
                Some(head) => problem(
                    ProblemKind::HeadMismatch,
                    format!(
                        "the audit head names seq {} but the chain ends at seq {} (rows added \
                         or removed at the end)",
                        head.seq, last.seq
                    ),
                ),
            },
        })
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
