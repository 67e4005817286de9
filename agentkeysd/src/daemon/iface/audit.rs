//! `dev.agentkeys.Audit1`: read and verify the audit hash chain.
//!
//! Not in DESIGN §3.1's list: `agentkeysctl audit list|verify` need the daemon (the chain's
//! head is keyed with a key derived from the master key), so the audit trail gets its own
//! versioned interface rather than riding on another one.

use std::sync::Arc;

use zbus::interface;
use zbus::message::Header;

use crate::api::Error;
use crate::api::dict::{self, Dict, DictBuilder};
use crate::store::AuditRow;

use super::super::authz;
use super::super::errors::{DaemonError, to_public};
use super::super::state::{Shared, blocking};
use super::{audited, owner_for};

/// Most rows one `List` call returns.
pub const MAX_ROWS: u32 = 1000;

#[derive(Debug)]
pub struct Audit {
    pub shared: Arc<Shared>,
}

#[interface(name = "dev.agentkeys.Audit1")]
impl Audit {
    /// Rows after sequence number `after` (default 0), at most `limit` (default 100,
    /// at most 1000). Owners see rows about themselves; root sees all, or `owner`'s.
    async fn list(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        options: Dict,
    ) -> Result<Vec<Dict>, Error> {
        self.do_list(&hdr, options)
            .await
            .map_err(|e| to_public("List", e))
    }

    /// Walks the whole chain: `ok`, `rows`, and the first problem (`seq`, `problem`,
    /// `message`). Root only: it covers every owner's rows.
    async fn verify(&self, #[zbus(header)] hdr: Header<'_>) -> Result<Dict, Error> {
        self.do_verify(&hdr)
            .await
            .map_err(|e| to_public("Verify", e))
    }
}

impl Audit {
    async fn do_list(&self, hdr: &Header<'_>, options: Dict) -> Result<Vec<Dict>, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        dict::check_keys(&options, &["after", "limit", "owner"])?;
        let after = dict::get_i64(&options, "after")?.unwrap_or(0);
        let limit = dict::get_u32(&options, "limit")?.unwrap_or(100);
        if limit == 0 || limit > MAX_ROWS {
            return Err(DaemonError::Invalid(format!("limit must be 1–{MAX_ROWS}")));
        }
        let owner = dict::get_u32(&options, "owner")?;
        let filter = match (caller.is_root(), owner) {
            (true, None) => None,
            _ => Some(owner_for(&self.shared, &caller, "audit.list", "", owner).await?),
        };
        let rows = self
            .shared
            .with_store(move |store| Ok(store.audit_list(filter, after, limit)?))
            .await?;
        Ok(rows.iter().map(row_dict).collect())
    }

    async fn do_verify(&self, hdr: &Header<'_>) -> Result<Dict, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        // The walk reads every owner's rows and holds the store while it does: root's.
        audited(
            &self.shared,
            &caller,
            "audit.verify",
            "",
            authz::require_root(&caller, "verify the whole audit chain"),
        )
        .await?;
        // Off the async workers: the walk reads every row.
        let report = blocking(&self.shared, |store| Ok(store.audit_verify()?)).await?;
        let mut d = DictBuilder::new()
            .bool("ok", report.first_problem.is_none())
            .u64("rows", report.rows);
        if let Some(p) = &report.first_problem {
            d = d
                .i64("seq", p.seq)
                .str("problem", format!("{:?}", p.kind).to_lowercase())
                .str("message", &p.message);
        }
        Ok(d.build())
    }
}

fn row_dict(r: &AuditRow) -> Dict {
    DictBuilder::new()
        .i64("seq", r.seq)
        .i64("ts_ms", r.ts_ms)
        .u32("actor_uid", r.actor_uid)
        .opt_u32("actor_pid", r.actor_pid)
        .opt_u32("owner", r.owner_uid)
        .str("action", &r.action)
        .str("subject", &r.subject)
        .str("outcome", &r.outcome)
        .str("detail", &r.detail)
        .build()
}
