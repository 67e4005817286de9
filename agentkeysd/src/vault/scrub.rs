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

    const MARKER: [u8; 64] = [0x5A; 64];
    /// How far below its caller's frame the marker is left: deeper than the frames of the
    /// probe's own calls (so they cannot overwrite it), well within [`SCRUB_BYTES`].
    const DEPTH: usize = 6 * 1024;

    /// Leaves [`MARKER`] about [`DEPTH`] bytes down the stack, in a frame that is dead once
    /// this returns, and returns its address.
    #[inline(never)]
    fn leave_deep_marker() -> usize {
        let mut frame = [0u8; DEPTH];
        frame[..MARKER.len()].copy_from_slice(&MARKER);
        let frame = std::hint::black_box(frame);
        std::hint::black_box(&frame) as *const _ as usize
    }

    /// The 64 bytes at `addr` of this thread's stack, read through /proc/self/mem so that
    /// reading dead stack is an ordinary file read, not undefined behaviour.
    fn read_stack(addr: usize) -> [u8; 64] {
        let mut out = [0u8; 64];
        let f = std::fs::File::open("/proc/self/mem").unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut out, addr as u64).unwrap();
        out
    }

    #[test]
    fn scrubbed_returns_the_closures_value() {
        assert_eq!(scrubbed(|| 40 + 2), 42);
    }

    #[test]
    fn an_unscrubbed_dead_frame_keeps_its_bytes() {
        // The positive control: without scrubbing the marker is still there, so the test
        // below can fail.
        let addr = leave_deep_marker();
        assert_eq!(read_stack(addr), MARKER);
    }

    #[test]
    fn the_stack_a_scrubbed_closure_used_is_overwritten() {
        let addr = scrubbed(leave_deep_marker);
        assert_ne!(read_stack(addr), MARKER, "the marker survived the scrub");
    }
}
