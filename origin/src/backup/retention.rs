//! Which backups to keep: the last N, the newest of each of the last D days,
//! and the newest of each of the last W weeks (UTC; weeks start on Monday).
//! A backup kept by any rule is kept. Pure: the caller lists and deletes.

use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: usize,
    pub keep_daily: usize,
    pub keep_weekly: usize,
}

const DAY_MS: u64 = 86_400_000;

fn day(ms: u64) -> u64 {
    ms / DAY_MS
}

/// Day 0 (1970-01-01) was a Thursday: shift by 3 so weeks start on Monday.
fn week(ms: u64) -> u64 {
    (day(ms) + 3) / 7
}

/// `backups` are (id, created_ms). Returns the ids to keep.
pub fn keep(policy: Policy, backups: &[(String, u64)]) -> BTreeSet<String> {
    let mut newest_first: Vec<&(String, u64)> = backups.iter().collect();
    newest_first.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let mut kept = BTreeSet::new();
    for b in newest_first.iter().take(policy.keep_last) {
        kept.insert(b.0.clone());
    }
    for (period, n) in [
        (day as fn(u64) -> u64, policy.keep_daily),
        (week, policy.keep_weekly),
    ] {
        let mut seen = BTreeSet::new();
        for b in &newest_first {
            if seen.len() == n {
                break;
            }
            // The first backup met in a period is its newest.
            if seen.insert(period(b.1)) {
                kept.insert(b.0.clone());
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    #[test]
    fn last_daily_weekly() {
        // Every 6 hours for 30 days, starting on a Monday (1970-01-05).
        let start = 4 * DAY_MS;
        let all: Vec<(String, u64)> = (0..120)
            .map(|i| (format!("b{i:03}"), start + i * 6 * H))
            .collect();
        let p = Policy {
            keep_last: 3,
            keep_daily: 2,
            keep_weekly: 2,
        };
        let k = keep(p, &all);
        // Last 3: b119 b118 b117. Daily: newest of day 29 (b119) and day 28
        // (b115). Weekly: newest of this week (b119) and of the previous
        // one (day 27 is a Sunday: its last backup is b111).
        let want: BTreeSet<String> = ["b119", "b118", "b117", "b115", "b111"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(k, want);
    }

    #[test]
    fn nothing_to_keep_and_fewer_than_asked() {
        let none = Policy {
            keep_last: 0,
            keep_daily: 0,
            keep_weekly: 0,
        };
        let two = vec![("a".to_string(), 1), ("b".to_string(), 2)];
        assert!(keep(none, &two).is_empty());
        let many = Policy {
            keep_last: 10,
            keep_daily: 10,
            keep_weekly: 10,
        };
        assert_eq!(keep(many, &two).len(), 2);
    }
}
