//! The one hash function behind every placement decision, and the keys it hashes.
//!
//! Every edge and shard must compute the same placement from the same shard map, whatever its
//! process, platform or build. So nothing here uses std's `DefaultHasher`/`RandomState` (seeded
//! per process, and its algorithm is not a promise), and every key writes explicit
//! little-endian bytes rather than relying on std's `Hash` impls for integers and strings
//! (native-endian, length prefixes of platform width). The outputs are pinned in tests.

use std::hash::{BuildHasher, Hash, Hasher};

use sha2::{Digest, Sha256};

use crate::{GroupId, NodeId};

/// Builds [`StableHasher`]s; the `BuildHasher` of every ring in this crate.
///
/// hashring 0.3's own `DefaultHashBuilder` is SipHash-2-4 with zero keys (siphasher 0.3), which
/// *is* deterministic across processes — but it is that crate's private choice, which a
/// version bump could change and thereby move every replica at once. SHA-256 is a fixed
/// standard and `sha2` is already in the workspace; hashing a few thousand keys per plan makes
/// its cost irrelevant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StableHashBuilder;

impl BuildHasher for StableHashBuilder {
    type Hasher = StableHasher;

    fn build_hasher(&self) -> StableHasher {
        StableHasher(Sha256::new())
    }
}

/// SHA-256 over the bytes written; [`Hasher::finish`] is the digest's first 8 bytes read
/// little-endian.
#[derive(Clone)]
pub(crate) struct StableHasher(Sha256);

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    // std's default integer writers use native endianness; our keys only call `write`, but
    // fix the byte order anyway so a stray `Hash` impl cannot make big-endian nodes disagree.
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }

    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_le_bytes());
    }

    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }

    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }

    fn write_u128(&mut self, i: u128) {
        self.write(&i.to_le_bytes());
    }

    fn write_usize(&mut self, i: usize) {
        // Widened so 32- and 64-bit platforms feed the same bytes.
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

/// One point of a physical node on the node ring: its `index`-th virtual node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VNode {
    /// The physical node.
    pub(crate) node: NodeId,
    /// Which of the node's virtual nodes, `0..vnodes_per_node`.
    pub(crate) index: u32,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The tag keeps vnode points and group keys in separate hash domains.
        state.write(b"aigw/vnode\0");
        state.write(&self.node.to_le_bytes());
        state.write(&self.index.to_le_bytes());
    }
}

/// Where a shard group starts its walk around the node ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GroupKey(pub(crate) GroupId);

impl Hash for GroupKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(b"aigw/group\0");
        state.write(&self.0.to_le_bytes());
    }
}

/// The 64-bit key of an (account, gateway) pair.
pub(crate) fn gateway_key(account: &str, gateway: &str) -> u64 {
    let mut hasher = StableHashBuilder.build_hasher();
    hasher.write(b"aigw/gateway\0");
    // Length-prefixed so ("ab", "c") and ("a", "bc") differ.
    hasher.write_u64(account.len() as u64);
    hasher.write(account.as_bytes());
    hasher.write(gateway.as_bytes());
    hasher.finish()
}

/// Jump consistent hash (Lamping & Veach, 2014): a bucket in `0..buckets` for `key`.
///
/// Growing `buckets` from n to m moves exactly the keys that land in the new buckets — an
/// expected (m - n) / m of them — and the buckets are as even as the keys are random. The
/// paper's floating-point step is done in integers here, so the result cannot depend on a
/// platform's float rounding. `buckets` must be at least 1 (0 yields 0).
pub(crate) fn jump_consistent_hash(mut key: u64, buckets: u64) -> u64 {
    let mut bucket = 0u64;
    let mut next = 0u64;
    while next < buckets {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // floor((bucket + 1) * 2^31 / ((key >> 33) + 1)), exactly.
        let jump = (u128::from(bucket) + 1) << 31;
        let step = jump / (u128::from(key >> 33) + 1);
        next = u64::try_from(step).unwrap_or(u64::MAX);
    }
    bucket
}
