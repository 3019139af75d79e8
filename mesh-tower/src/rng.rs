//! The mesh's one source of random draws, for the pure decisions of `mesh-core` (weighted
//! picks, balancing, fault and mirror sampling, outlier enforcement, backoff jitter) and for
//! trace and request ids; mesh-xds draws its reconnect jitter here too.
//!
//! Each thread keeps a stream of mesh-core's SplitMix64 ([`Draws`]) seeded from the standard
//! library's per-process random hash keys, so draws are cheap (a few instructions), take no
//! lock, are independent across threads and differ between processes. They are not
//! cryptographic; nothing here needs that.

use std::{
    cell::Cell,
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
};

use mesh_core::lb::Draws;

thread_local! {
    static STREAM: Cell<Draws> = Cell::new(Draws::new({
        let mut h = RandomState::new().build_hasher();
        h.write_usize(std::ptr::addr_of!(h) as usize);
        h.finish()
    }));
}

/// One uniformly distributed `u64`.
pub fn draw() -> u64 {
    STREAM.with(|cell| {
        // A `Cell` rather than a `RefCell`: moving the one-word state out and back costs
        // nothing, a borrow flag would on every draw.
        let mut stream = cell.replace(Draws::new(0));
        // `Draws` is endless: `next` never returns `None`.
        let value = stream.next().unwrap_or_default();
        cell.set(stream);
        value
    })
}
