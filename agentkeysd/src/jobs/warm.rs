//! The warm runner: one `agentkeys-runner` started ahead of the next run, already in that
//! run's cgroups (see `sandbox::spec`, warm start). Moving a process into a cgroup waits
//! for an RCU grace period whenever no migration happened lately — about 11 ms on the
//! reference machine, more than all the rest of a start — so it is done before any run
//! asks. A run takes the warm runner if there is one and starts the next in the
//! background; without one (two runs at once, or warm starts failing) it starts cold.
//!
//! Invariants: at most one warm runner; it holds no secret (those come with the spec); one
//! that died or that nobody took is killed, reaped and its cgroups removed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::daemon::state::Shared;
use crate::sandbox::launch::{self, Warm};
use crate::sandbox::run_cgroups::RunCgroups;

use super::lock;

/// Starts the next warm runner in the background, unless one is there or on its way, or
/// warm starts failed before (then runs start cold, and say why if that fails too).
pub fn warm_up(shared: &Arc<Shared>) {
    let runs = &shared.runs;
    let Ok((_, cgroups)) = runs.setup() else {
        return;
    };
    if runs.warm_failed.load(Ordering::Relaxed)
        || lock(&runs.warm).is_some()
        || runs.warming.swap(true, Ordering::AcqRel)
    {
        return;
    }
    let (cgroups, shared) = (cgroups.clone(), shared.clone());
    tokio::spawn(async move {
        let runner = shared.config.runner.runner_path();
        let prepared = match crate::store::new_run_id() {
            Ok(id) => {
                let plan = cgroups.plan(&id);
                let cg = cgroups.clone();
                tokio::task::spawn_blocking(move || {
                    launch::prepare(&runner, &plan).inspect_err(|_| remove(&cg, &plan))
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            }
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        let runs = &shared.runs;
        match prepared {
            Ok(warm) => {
                let spare = lock(&runs.warm).replace(warm);
                if let Some(w) = spare {
                    discard(&cgroups, w);
                }
            }
            Err(e) => {
                runs.warm_failed.store(true, Ordering::Relaxed);
                tracing::warn!(error = %e, "no warm runner: runs start cold");
            }
        }
        runs.warming.store(false, Ordering::Release);
    });
}

/// The warm runner, if one is ready and alive (a dead one is cleaned up).
pub fn take(shared: &Shared) -> Option<Warm> {
    let mut warm = lock(&shared.runs.warm).take()?;
    if warm.alive() {
        return Some(warm);
    }
    if let Ok((_, cgroups)) = shared.runs.setup() {
        discard(cgroups, warm);
    }
    None
}

/// At shutdown: the warm runner goes, with its cgroups.
pub fn stop(shared: &Shared) {
    let warm = lock(&shared.runs.warm).take();
    if let (Some(w), Ok((_, cgroups))) = (warm, shared.runs.setup()) {
        discard(cgroups, w);
    }
}

/// Kills and reaps `warm` (its drop), then removes its cgroups.
fn discard(cgroups: &RunCgroups, warm: Warm) {
    let plan = warm.plan().clone();
    drop(warm);
    remove(cgroups, &plan);
}

fn remove(cgroups: &RunCgroups, plan: &crate::sandbox::spec::CgroupPlan) {
    if let Err(e) = cgroups.remove(plan) {
        tracing::warn!(error = %e, "could not remove a warm runner's cgroups");
    }
}
