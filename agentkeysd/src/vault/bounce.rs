//! [`BounceBuffer`]: a one-call copy of a secret on its way out.
//!
//! Writing straight from secretmem into a memfd works today, but kernel paths that pin user
//! pages (GUP: `vmsplice`, `O_DIRECT`) fail on secretmem, and a heap or stack copy would
//! linger unlocked and dumpable. So outgoing bytes pass through locked, non-dumpable pages
//! that are zeroized when the call ends.
//!
//! The copy lives for one call; the pages need not. Single-page buffers (almost every API
//! key fits in 4 KiB) go back to a small pool after they are zeroized, because mapping,
//! locking, advising, unlocking and unmapping a page costs six syscalls on every read.
//! Larger buffers are unlocked and unmapped when the call ends.

use std::sync::Mutex;

use zeroize::Zeroize;

use super::VaultError;
use super::arena::page_size;
use super::sys::Mapping;

/// Zeroized single-page buffers waiting for the next call.
static POOL: Mutex<Vec<Mapping>> = Mutex::new(Vec::new());
/// Most pages kept in [`POOL`]: one per concurrent read is plenty (the daemon has two
/// worker threads); more are unmapped.
const POOL_MAX: usize = 4;

/// Page-rounded anonymous memory: `mlock`ed, `MADV_DONTDUMP`, `MADV_WIPEONFORK`.
/// Drop zeroizes; a single page then returns to the pool, anything larger is
/// `munlock`ed and `munmap`ped.
pub(super) struct BounceBuffer {
    map: Option<Mapping>,
    len: usize,
}

impl BounceBuffer {
    /// A zero-filled buffer of exactly `len` (> 0) bytes.
    pub(super) fn new(len: usize) -> Result<BounceBuffer, VaultError> {
        if len == 0 {
            return Err(VaultError::Empty);
        }
        let page = page_size();
        let map_len = len.div_ceil(page).saturating_mul(page);
        let pooled = if map_len == page { pool().pop() } else { None };
        let map = match pooled {
            Some(map) => map,
            None => Mapping::locked_anon(map_len)?,
        };
        Ok(BounceBuffer {
            map: Some(map),
            len,
        })
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        match self.map.as_mut() {
            Some(map) => map.as_mut_slice().get_mut(..len).unwrap_or_default(),
            None => &mut [],
        }
    }
}

impl Drop for BounceBuffer {
    fn drop(&mut self) {
        let Some(mut map) = self.map.take() else {
            return;
        };
        // The whole mapping, not just `len`: nothing of this call survives it.
        map.as_mut_slice().zeroize();
        let mut pool = pool();
        if map.as_mut_slice().len() == page_size() && pool.len() < POOL_MAX {
            pool.push(map);
        }
        // Otherwise `map` drops here: munlock, munmap.
    }
}

/// The pool, recovering from a poisoned lock (it only holds zeroized pages).
fn pool() -> std::sync::MutexGuard<'static, Vec<Mapping>> {
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_pages_come_back_zeroized() {
        let page = page_size();
        let ptr = {
            let mut b = BounceBuffer::new(16).unwrap();
            b.as_mut_slice().fill(0xAB);
            b.as_mut_slice().as_ptr() as usize
        };
        // Other tests share the pool; take pages until we get ours back, or give up.
        let mut held = Vec::new();
        for _ in 0..=POOL_MAX {
            let mut b = BounceBuffer::new(page).unwrap();
            if b.as_mut_slice().as_ptr() as usize == ptr {
                assert!(
                    b.as_mut_slice().iter().all(|x| *x == 0),
                    "pooled page not zeroized"
                );
            }
            held.push(b);
        }
    }

    #[test]
    fn bounce_buffer_has_exact_length_and_starts_zeroed() {
        let mut b = BounceBuffer::new(5000).unwrap();
        assert_eq!(b.as_mut_slice().len(), 5000);
        assert!(b.as_mut_slice().iter().all(|&x| x == 0));
        b.as_mut_slice().fill(1);
        assert!(matches!(BounceBuffer::new(0), Err(VaultError::Empty)));
    }
}
