//! Stack scrubbing after code that handled key material.
//!
//! The crypto crates wipe their own state on drop (`aes`/`ghash`/`polyval` with `zeroize`),
//! but not the copies that moves leave behind in stack frames: `new_from_slice` copies the
//! key into a stack array, a cipher is returned by value, HMAC pads its key into a block.
//! Those frames are dead once the call returns, yet their bytes stay in the thread's stack
//! (readable memory, unlike the vault) until something else overwrites them. A test reads
//! every mapping of the daemon after 1,000 reads and found the credential key 14 times on
//! the two worker stacks before this existed.
//!
//! [`scrubbed`] runs the key-handling closure in its own non-inlined frame, then
//! overwrites [`SCRUB_BYTES`] of stack below its own frame, which is where the closure's
//! frames were. Same idea as `clear_on_drop::clear_stack_on_return`.

use zeroize::Zeroize;

/// How much stack below the caller is overwritten. An optimized AES-GCM or HMAC call chain
/// uses a few KiB; an unoptimized (debug) one was measured reaching ~30 KiB below the
/// caller. Each size leaves room; the key-scan test checks both builds. Overwriting more
/// than needed is not free: it evicts the L1 cache on every read.
pub const SCRUB_BYTES: usize = if cfg!(debug_assertions) {
    64 * 1024
} else {
    16 * 1024
};

/// Runs `f`, then overwrites the stack that `f` used.
#[inline(never)]
pub fn scrubbed<T>(f: impl FnOnce() -> T) -> T {
    let out = run(f);
    scrub_stack();
    out
}

#[inline(never)]
fn run<T>(f: impl FnOnce() -> T) -> T {
    std::hint::black_box(f())
}

#[inline(never)]
fn scrub_stack() {
    let mut area = [0u128; SCRUB_BYTES / 16];
    // Volatile writes: not optimized away although the array is never read.
    area.zeroize();
    std::hint::black_box(&area);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaves a marker in a dead frame and returns the address it was at.
    #[inline(never)]
    fn leave_marker() -> usize {
        let marker = std::hint::black_box([0x5Au8; 64]);
        std::hint::black_box(&marker) as *const _ as usize
    }

    #[test]
    fn scrubbed_returns_the_closures_value() {
        assert_eq!(scrubbed(|| 40 + 2), 42);
    }

    #[test]
    fn the_stack_a_scrubbed_closure_used_is_overwritten() {
        // Run the marker-leaving function inside `scrubbed`, then look at where the marker
        // was through a fresh frame at the same depth: it must be gone.
        let addr = scrubbed(leave_marker);
        let here = probe(addr);
        assert!(
            here.iter().all(|b| *b != 0x5A) || here.is_empty(),
            "marker survived: {here:?}"
        );
    }

    /// Reads 64 bytes at `addr` if it lies within the current thread's stack below us.
    #[inline(never)]
    fn probe(addr: usize) -> Vec<u8> {
        let local = 0u8;
        let top = std::hint::black_box(&local) as *const u8 as usize;
        // Only read what is below our frame and within the scrubbed span (still mapped,
        // part of this thread's stack); otherwise there is nothing to assert.
        if addr >= top || top - addr > SCRUB_BYTES {
            return Vec::new();
        }
        let mut out = vec![0u8; 64];
        let f = std::fs::File::open("/proc/self/mem").unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut out, addr as u64).unwrap();
        out
    }
}
