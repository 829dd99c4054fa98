//! Splitting one corpus over N processes or machines with no coordinator:
//! shard K takes the documents whose key hashes to K modulo N.

use sha2::{Digest, Sha256};

/// `K/N`: the K-th of N shards, K counted from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Parse `K/N` with `0 <= K < N`.
    pub fn parse(s: &str) -> Option<Self> {
        let (k, n) = s.split_once('/')?;
        let (index, count) = (k.trim().parse().ok()?, n.trim().parse().ok()?);
        (count > 0 && index < count).then_some(Self { index, count })
    }

    /// Whether the document with `key` (record id or file name) is in this
    /// shard. The hash is SHA-256, so the split is the same on every
    /// machine, build and run.
    pub fn contains(&self, key: &str) -> bool {
        let digest = Sha256::digest(key.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first) % self.count == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_keys() {
        assert_eq!(Shard::parse("1/4"), Some(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "1/0", "x/2", "2", "-1/3"] {
            assert_eq!(Shard::parse(bad), None, "{bad}");
        }
        let shards: Vec<Shard> = (0..4).map(|k| Shard { index: k, count: 4 }).collect();
        let mut sizes = [0; 4];
        for i in 0..1000 {
            let key = format!("record-{i}");
            let owners: Vec<usize> = (0..4).filter(|&k| shards[k].contains(&key)).collect();
            assert_eq!(owners.len(), 1, "{key} must be in exactly one shard");
            sizes[owners[0]] += 1;
        }
        // Roughly even (each would hold 250 on average).
        assert!(sizes.iter().all(|&n| (180..320).contains(&n)), "{sizes:?}");
    }

    #[test]
    fn the_split_is_pinned_so_machines_and_versions_agree() {
        // Shards of 1000 computed with Python's hashlib (first 8 bytes of
        // SHA-256, little-endian, mod 1000): a change of hash would silently
        // mix up the parts of a run split across versions.
        for (key, shard) in [
            ("doc-0", 149),
            ("https://example.com/a/1", 33),
            ("خبر-7", 148),
        ] {
            assert!(
                Shard {
                    index: shard,
                    count: 1000
                }
                .contains(key),
                "{key}"
            );
        }
    }
}
