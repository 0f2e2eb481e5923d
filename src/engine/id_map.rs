//! Maps keyed by the ids this crate hands out (connections, sessions, sockets, streams). SipHash,
//! the standard maps' hasher, defends against keys an attacker picks; these keys are made here
//! (random or counted), so a few multiplies suffice, and every event looks several of them up.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from an id made by this crate to `V`.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// The splitmix64 finaliser over one `u64`: every input bit reaches the bits hashbrown uses for
/// the bucket (the low ones) and for the control byte (the top seven).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(5) ^ n;
    }

    /// Not used by `u64` keys; kept correct for any other input all the same.
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_and_strided_ids_spread_over_buckets_and_control_bytes() {
        let build = BuildHasherDefault::<IdHasher>::default();
        // Connection ids (generation << 32 | slot) and socket ids a loop hands out (stride 8).
        for ids in [
            (0..4096u64).collect::<Vec<_>>(),
            (0..4096u64).map(|i| i * 8 + 3).collect(),
            (0..4096u64).map(|i| (7u64 << 32) | i).collect(),
        ] {
            let mut low = vec![0u32; 256];
            let mut top = vec![0u32; 128];
            for id in &ids {
                let h = build.hash_one(id);
                low[(h & 0xff) as usize] += 1;
                top[(h >> 57) as usize] += 1;
            }
            // 4096 ids over 256 buckets: 16 each on average; no bucket close to empty or crowded.
            assert!(low.iter().all(|&n| (4..=40).contains(&n)), "{low:?}");
            assert!(top.iter().all(|&n| (8..=70).contains(&n)), "{top:?}");
        }
    }

    #[test]
    fn an_id_map_behaves_as_a_map() {
        let mut m: IdMap<&str> = IdMap::default();
        m.insert(1, "a");
        m.insert(1 << 40, "b");
        assert_eq!(m.get(&1), Some(&"a"));
        assert_eq!(m.remove(&(1 << 40)), Some("b"));
        assert_eq!(m.len(), 1);
    }
}
