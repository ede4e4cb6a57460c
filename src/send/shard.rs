//! `--shard I/N`: which of a run's chunks one of N processes sends.
//!
//! Owns the rule that deals chunks out: a chunk's position in the manifest (all segments, in
//! manifest order, counted from 0) modulo N picks its shard, so every process computes the
//! same split from the manifest alone, whatever `--segment` narrows. It never takes locks
//! (the plan does) and never decides how many processes run at once (the scheduler does).

use std::fmt;
use std::str::FromStr;

/// One process's share of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process's index, `0 <= index < count`.
    pub index: u32,
    /// How many shards the run is split into.
    pub count: u32,
}

/// The most shards a run is split into: far beyond any scheduler's useful parallelism, and
/// each shard holds a lock file.
pub const MAX_SHARDS: u32 = 100_000;

impl Shard {
    /// Whether the chunk at `position` (see the module doc) is this shard's.
    pub fn owns(self, position: usize) -> bool {
        position % self.count as usize == self.index as usize
    }

    /// The file name of this shard's report under `RUN/reports/`.
    pub fn report_name(self) -> String {
        format!("shard-{}-of-{}.json", self.index, self.count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let how = "write I/N with 0 <= I < N, e.g. --shard 0/4 for the first of four (from $JOB_COMPLETION_INDEX, $SLURM_ARRAY_TASK_ID or $NOMAD_ALLOC_INDEX)";
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a shard: {how}"))?;
        let num = |t: &str| -> Result<u32, String> {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?} is not a shard ({t:?} is not a whole number): {how}"))
        };
        let (index, count) = (num(i)?, num(n)?);
        if count == 0 || count > MAX_SHARDS {
            return Err(format!(
                "{s:?}: the shard count must be 1 to {MAX_SHARDS}: {how}"
            ));
        }
        if index >= count {
            return Err(format!(
                "{s:?}: shard {index} does not exist when there are {count} (they are numbered from 0): {how}"
            ));
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_deal_every_chunk_to_exactly_one() {
        let s: Shard = "1/4".parse().unwrap();
        assert_eq!((s.index, s.count), (1, 4));
        assert_eq!(s.to_string(), "1/4");
        assert_eq!(s.report_name(), "shard-1-of-4.json");
        for position in 0..40 {
            let owners = (0..4)
                .filter(|&i| Shard { index: i, count: 4 }.owns(position))
                .count();
            assert_eq!(owners, 1);
        }
        for bad in ["4/4", "1", "-1/4", "0/0", "a/4", "1/x", "0/100001"] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains("0 <= I < N"), "{bad}: {e}");
        }
    }
}
