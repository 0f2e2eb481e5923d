//! Maps keyed by the ids this crate hands out (connections, sessions, sockets, streams), and by
//! the names the application registers handlers for. SipHash, the standard maps' hasher, defends
//! against keys an attacker picks; these keys are made here (random or counted) or by the
//! application, so a few multiplies suffice, and every event looks several of them up.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from an id made by this crate to `V`.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// A map from a name the application registered (a namespace, an event) to `V`. Only the
/// application inserts keys, so a client's names are only looked up: whatever they hash to,
/// they find at most the few entries the application put there. Eight bytes at a time.
pub(crate) type NameMap<V> = HashMap<String, V, BuildHasherDefault<NameHasher>>;

/// Bytes folded eight at a time (a multiply each), then the splitmix64 finaliser.
#[derive(Default, Clone, Copy)]
pub(crate) struct NameHasher(u64);

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        IdHasher(self.0).finish()
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            self.fold(u64::from_le_bytes(word));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            if let Some(dst) = word.get_mut(..rest.len()) {
                dst.copy_from_slice(rest);
            }
            self.fold(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }
}

impl NameHasher {
    fn fold(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

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

    /// Names that differ in one byte, in length only, or in where they end hash apart, and a
    /// name map finds what was put in it.
    #[test]
    fn names_hash_apart_and_are_found() {
        let h = BuildHasherDefault::<NameHasher>::default();
        let names = [
            "",
            "a",
            "ab",
            "abcdefgh",
            "abcdefghi",
            "abcdefgh\0",
            "chat:message",
            "chat:messagf",
        ];
        let hashes: std::collections::HashSet<u64> = names.iter().map(|n| h.hash_one(n)).collect();
        assert_eq!(hashes.len(), names.len());
        let mut m: NameMap<usize> = NameMap::default();
        for (i, n) in names.iter().enumerate() {
            m.insert(n.to_string(), i);
        }
        for (i, n) in names.iter().enumerate() {
            assert_eq!(m.get(*n), Some(&i));
        }
        assert_eq!(m.get("chat:messagg"), None);
    }

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
