//! Uniform random draws for the pure decisions of `mesh-core`, without a shared lock.
//!
//! Each thread keeps a SplitMix64 state seeded from the standard library's per-process random
//! hash keys, so draws are cheap (a few instructions), independent across threads, and differ
//! between processes. They are not cryptographic; nothing here needs that.

use std::{
    cell::Cell,
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
};

thread_local! {
    static STATE: Cell<u64> = Cell::new({
        let mut h = RandomState::new().build_hasher();
        h.write_usize(std::ptr::addr_of!(h) as usize);
        h.finish()
    });
}

/// One uniformly distributed `u64`.
pub(crate) fn draw() -> u64 {
    STATE.with(|s| {
        let next = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}
