//! The allocator behind [`Vault`](super::Vault): a list of regions, each carved into
//! 64-byte granules tracked by a bitmap ([`Granules`], pure bookkeeping), grown one small
//! region at a time.
//!
//! Locks: the region list, then (inside it) a region's granule lock; a slot's release takes
//! only its region's lock. Neither is held across mapping a new region or zero-filling.
//! Poisoned locks are recovered: they guard bookkeeping whose updates cannot panic midway.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::sys::{Mapping, Region, SlotMem};
use super::{MAX_SLOT_LEN, SecretMemoryKind, SecretMemoryPolicy, VaultError, VaultStats};

/// Allocation unit: slots are whole granules, aligned to a granule.
pub(super) const GRANULE: usize = 64;

/// Size of an ordinary region. Small on purpose: each secretmem page costs a ~20 µs fault
/// and counts against RLIMIT_MEMLOCK.
pub(super) const REGION_LEN: usize = 16 * 1024;

/// Locks `m`, recovering from poisoning (the guarded data is bookkeeping, never left
/// half-updated by a panic because its updates do not panic).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which granules of a region are in use: one bit per granule, set = used.
#[derive(Debug)]
pub(super) struct Granules {
    bits: Vec<u64>,
    count: usize,
    slots: usize,
}

impl Granules {
    /// `count` free granules.
    pub(super) fn new(count: usize) -> Granules {
        Granules {
            bits: vec![0; count.div_ceil(64)],
            count,
            slots: 0,
        }
    }

    fn is_used(&self, i: usize) -> bool {
        self.bits
            .get(i / 64)
            .is_some_and(|word| word & (1 << (i % 64)) != 0)
    }

    fn set(&mut self, i: usize, used: bool) {
        if let Some(word) = self.bits.get_mut(i / 64) {
            if used {
                *word |= 1 << (i % 64);
            } else {
                *word &= !(1 << (i % 64));
            }
        }
    }

    /// First fit: marks `n` consecutive free granules used and returns the first index.
    /// Postcondition: `first + n <= count`, and none of them was in use.
    pub(super) fn alloc(&mut self, n: usize) -> Option<usize> {
        if n == 0 || n > self.count {
            return None;
        }
        let mut run_start = 0;
        let mut run_len = 0;
        for i in 0..self.count {
            if self.is_used(i) {
                run_start = i + 1;
                run_len = 0;
                continue;
            }
            run_len += 1;
            if run_len == n {
                for j in run_start..run_start + n {
                    self.set(j, true);
                }
                self.slots += 1;
                return Some(run_start);
            }
        }
        None
    }

    /// Returns granules `first..first+n` (one slot) to the free pool.
    pub(super) fn free(&mut self, first: usize, n: usize) {
        for i in first..first.saturating_add(n).min(self.count) {
            self.set(i, false);
        }
        self.slots = self.slots.saturating_sub(1);
    }

    /// Live slots.
    pub(super) fn slots(&self) -> usize {
        self.slots
    }

    /// Are granules `first..first+n` all free (and in range)?
    #[cfg(test)]
    pub(super) fn is_free(&self, first: usize, n: usize) -> bool {
        first
            .checked_add(n)
            .is_some_and(|end| end <= self.count && (first..end).all(|i| !self.is_used(i)))
    }
}

/// The regions of one vault and the kind of memory they are.
pub(super) struct Arena {
    kind: SecretMemoryKind,
    /// `regions[0]` is kept for the vault's life; others come and go.
    regions: Mutex<Vec<Arc<Region>>>,
}

impl Arena {
    /// Chooses the memory kind by mapping the first region (this is the probe).
    pub(super) fn new(policy: SecretMemoryPolicy) -> Result<Arena, VaultError> {
        let len = region_len_for(0);
        let (kind, first) = match policy {
            SecretMemoryPolicy::Mlock => (SecretMemoryKind::Mlock, Mapping::locked_anon(len)?),
            SecretMemoryPolicy::Require => match Mapping::secretmem(len) {
                Ok(map) => (SecretMemoryKind::MemfdSecret, map),
                Err(VaultError::SecretMemCreate(e)) => {
                    return Err(VaultError::SecretMemUnavailable(e));
                }
                Err(e) => return Err(e),
            },
            SecretMemoryPolicy::Prefer => match Mapping::secretmem(len) {
                Ok(map) => (SecretMemoryKind::MemfdSecret, map),
                Err(e) => {
                    tracing::warn!(
                        error = &e as &(dyn std::error::Error + 'static),
                        "memfd_secret is unavailable; secrets will be kept in mlocked, \
                         non-dumpable memory instead (set secret_memory = \"require\" to refuse)"
                    );
                    (SecretMemoryKind::Mlock, Mapping::locked_anon(len)?)
                }
            },
        };
        Ok(Arena {
            kind,
            regions: Mutex::new(vec![Arc::new(Region::new(first))]),
        })
    }

    pub(super) fn kind(&self) -> SecretMemoryKind {
        self.kind
    }

    /// A zero-filled slot of at least `len` bytes.
    pub(super) fn alloc(&self, len: usize) -> Result<SlotMem, VaultError> {
        if len == 0 {
            return Err(VaultError::Empty);
        }
        if len > MAX_SLOT_LEN {
            return Err(VaultError::TooLarge {
                len,
                max: MAX_SLOT_LEN,
            });
        }
        let found = lock(&self.regions).iter().find_map(|r| r.alloc(len));
        let mut slot = match found {
            Some(slot) => slot,
            None => self.grow(len)?,
        };
        // Already zero (released slots are zeroized, new pages are zero); cheap insurance.
        // Outside the list lock: on fresh secretmem pages this is where the faults happen.
        zeroize::Zeroize::zeroize(slot.as_mut_slice());
        Ok(slot)
    }

    /// Maps a region big enough for `len` (outside the list lock), takes the slot from it,
    /// then publishes the region.
    fn grow(&self, len: usize) -> Result<SlotMem, VaultError> {
        let region_len = region_len_for(len);
        let map = match self.kind {
            SecretMemoryKind::MemfdSecret => Mapping::secretmem(region_len)?,
            SecretMemoryKind::Mlock => Mapping::locked_anon(region_len)?,
        };
        let region = Arc::new(Region::new(map));
        let slot = region
            .alloc(len)
            .ok_or(VaultError::RegionTooSmall { len, region_len })?;
        lock(&self.regions).push(region);
        Ok(slot)
    }

    /// Called by a slot about to be released (it still counts as in use). Keeps the first
    /// region and at most one empty region as a spare; other empty regions leave the list,
    /// and so are unmapped when their last `Arc` (the releasing slot's) goes.
    pub(super) fn before_release(&self, releasing: &Arc<Region>) {
        let mut regions = lock(&self.regions);
        let mut index = 0;
        let mut spare_kept = false;
        regions.retain(|r| {
            let first = index == 0;
            index += 1;
            let left_in_use = if Arc::ptr_eq(r, releasing) { 1 } else { 0 };
            if first || r.slots_in_use() != left_in_use {
                return true;
            }
            !std::mem::replace(&mut spare_kept, true)
        });
    }

    pub(super) fn stats(&self) -> VaultStats {
        let regions = lock(&self.regions);
        VaultStats {
            regions: regions.len(),
            mapped_bytes: regions.iter().map(|r| r.mapped_len()).sum(),
            slots_in_use: regions.iter().map(|r| r.slots_in_use()).sum(),
        }
    }
}

/// Region size for a slot of `len` bytes: [`REGION_LEN`], or more if the slot needs it,
/// rounded up to whole pages.
fn region_len_for(len: usize) -> usize {
    let page = page_size();
    len.max(REGION_LEN).div_ceil(page).saturating_mul(page)
}

/// The system page size (4096 if it cannot be read).
pub(super) fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .filter(|p| p.is_power_of_two() && *p >= GRANULE)
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granules_first_fit_reuses_freed_runs() {
        let mut g = Granules::new(10);
        assert_eq!(g.alloc(3), Some(0));
        assert_eq!(g.alloc(3), Some(3));
        assert_eq!(g.alloc(5), None);
        assert_eq!(g.alloc(4), Some(6));
        assert_eq!(g.slots(), 3);
        g.free(0, 3);
        assert!(g.is_free(0, 3));
        assert_eq!(g.alloc(2), Some(0));
        assert_eq!(g.alloc(2), None);
        assert_eq!(g.alloc(1), Some(2));
        assert_eq!(g.slots(), 4);
    }

    #[test]
    fn granules_span_bitmap_words() {
        let mut g = Granules::new(200);
        assert_eq!(g.alloc(60), Some(0));
        assert_eq!(g.alloc(10), Some(60));
        assert!(!g.is_free(63, 2));
        g.free(60, 10);
        assert!(g.is_free(60, 140));
        assert!(!g.is_free(60, 141));
        assert_eq!(g.alloc(140), Some(60));
        assert_eq!(g.alloc(1), None);
    }

    #[test]
    fn granules_reject_zero_and_oversized_runs() {
        let mut g = Granules::new(4);
        assert_eq!(g.alloc(0), None);
        assert_eq!(g.alloc(5), None);
        assert_eq!(g.alloc(4), Some(0));
    }

    #[test]
    fn region_len_is_at_least_the_base_and_page_rounded() {
        assert_eq!(region_len_for(1), REGION_LEN);
        assert_eq!(region_len_for(MAX_SLOT_LEN), 17 * 4096);
    }
}
