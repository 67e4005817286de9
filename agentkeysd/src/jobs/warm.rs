//! Warm runners: `agentkeys-runner`s started ahead of the next runs, each with its run's
//! cgroups made (see `sandbox::spec`, warm start): the runner's exec and start and the
//! groups' creation are done before any run asks. A run takes the oldest warm runner if
//! there is one; without one (more runs at once than spares, or warm starts failing) it
//! starts cold.
//!
//! When the spares are made matters as much as having them: a runner being prepared
//! (clone, exec, cgroup joins) competes for the CPU with whatever the
//! daemon does at that moment. So the pool is topped up once a run's end has been told
//! ([`refill`]), in the gap before the client's next run, and not while a run is being
//! built or seen to its end; only a run that left the pool empty tops it up at once.
//! [`SPARES`] runners are kept so that back-to-back runs find one even when a preparation
//! takes longer than a whole run (on a busy machine).
//!
//! Invariants: at most [`SPARES`] warm runners (ready or being prepared); they hold no
//! secret (those come with the spec); one that died or that nobody took is ended, reaped
//! and its cgroups removed (or its v1 groups kept for a later run, `RunCgroups::recycle`),
//! also one still being prepared when the daemon stops ([`close`], [`stop`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::daemon::state::Shared;
use crate::sandbox::launch::{self, Warm};
use crate::sandbox::run_cgroups::RunCgroups;

use super::lock;

/// Warm runners kept ready (or on their way).
pub const SPARES: usize = 2;

/// Starts warm runners in the background until [`SPARES`] are ready or on their way,
/// unless warm starts failed before (then runs start cold, and say why if that fails too).
pub fn refill(shared: &Arc<Shared>) {
    let runs = &shared.runs;
    let Ok((_, cgroups)) = runs.setup() else {
        return;
    };
    if runs.warm_failed.load(Ordering::Relaxed) || runs.warm_closed.load(Ordering::Acquire) {
        return;
    }
    let missing = {
        // Counted and claimed under the pool's lock (which `prepare_one` holds when it moves
        // a runner from warming to ready), so two callers do not both start the same spares.
        let pool = lock(&runs.warm);
        let missing = SPARES.saturating_sub(pool.len() + runs.warming.load(Ordering::Acquire));
        runs.warming.fetch_add(missing, Ordering::AcqRel);
        missing
    };
    for _ in 0..missing {
        prepare_one(shared.clone(), cgroups.clone());
    }
}

/// Tops the pool up only if it is empty (a run just took the last spare, or found none).
pub fn refill_if_empty(shared: &Arc<Shared>) {
    let runs = &shared.runs;
    if lock(&runs.warm).is_empty() && runs.warming.load(Ordering::Acquire) == 0 {
        refill(shared);
    }
}

/// Prepares one warm runner on the blocking pool and adds it to the pool.
fn prepare_one(shared: Arc<Shared>, cgroups: RunCgroups) {
    tokio::spawn(async move {
        let runner = shared.config.runner.runner_path();
        let prepared = match crate::store::new_run_id() {
            Ok(id) => {
                let cg = cgroups.clone();
                tokio::task::spawn_blocking(move || {
                    let plan = cg.adopt(&id);
                    launch::prepare(&runner, &plan).inspect_err(|_| recycle(&cg, &plan))
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            }
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        let runs = &shared.runs;
        let unwanted = {
            let mut pool = lock(&runs.warm);
            match prepared {
                // Kept only while the daemon is not stopping: `stop` takes the pool after
                // `close`, so it finds a runner kept here.
                Ok(warm) if pool.len() < SPARES && !runs.warm_closed.load(Ordering::Acquire) => {
                    pool.push(warm);
                    runs.warming.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
                Ok(warm) => Some(warm),
                Err(e) => {
                    runs.warm_failed.store(true, Ordering::Relaxed);
                    tracing::warn!(error = %e, "no warm runner: runs start cold");
                    None
                }
            }
        };
        if let Some(warm) = unwanted {
            // Ending a runner may wait for it: off the async workers.
            let _ = tokio::task::spawn_blocking(move || discard(&cgroups, warm)).await;
        }
        // Only now: `stop` waits for this count to reach zero, so a runner being prepared
        // when the daemon stops is gone with its cgroups before the daemon is.
        runs.warming.fetch_sub(1, Ordering::AcqRel);
    });
}

/// The oldest warm runner that is still alive (dead ones are cleaned up).
pub fn take(shared: &Shared) -> Option<Warm> {
    loop {
        let mut warm = {
            let mut pool = lock(&shared.runs.warm);
            if pool.is_empty() {
                return None;
            }
            pool.remove(0)
        };
        if warm.alive() {
            return Some(warm);
        }
        if let Ok((_, cgroups)) = shared.runs.setup() {
            discard(cgroups, warm);
        }
    }
}

/// At shutdown, first: no warm runner is started from now on (the runs ended next would
/// start some), and one that becomes ready is ended.
pub fn close(shared: &Shared) {
    shared.runs.warm_closed.store(true, Ordering::Release);
}

/// At shutdown, after [`close`]: waits (until `deadline` at most) for the runners still
/// being prepared to be ended, then ends the ready ones; all go with their cgroups.
pub async fn stop(shared: &Shared, deadline: Instant) {
    while shared.runs.warming.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let pool = std::mem::take(&mut *lock(&shared.runs.warm));
    if let Ok((_, cgroups)) = shared.runs.setup() {
        for w in pool {
            discard(cgroups, w);
        }
    }
}

/// Ends and reaps `warm` (its drop), then keeps or removes its cgroups.
fn discard(cgroups: &RunCgroups, warm: Warm) {
    let plan = warm.plan().clone();
    drop(warm);
    recycle(cgroups, &plan);
}

/// Once the runner is gone: its v1 groups kept for a later run, or removed (see
/// [`RunCgroups::recycle`]).
fn recycle(cgroups: &RunCgroups, plan: &crate::sandbox::spec::CgroupPlan) {
    if let Err(e) = cgroups.recycle(plan) {
        tracing::warn!(error = %e, "could not remove a warm runner's cgroups");
    }
}
