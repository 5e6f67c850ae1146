//! The configuration table's index of lanes by state and next attempt (`template.yaml`), which
//! the sweep reads. Only lanes with a call scheduled have `lane_next_attempt_at`, so only they
//! are in it.
//!
//! DynamoDB takes at most 1,000 writes a second under one partition key of an index, and
//! cannot split a key whose sort key only grows (due times do). With the state alone as the
//! key, every retrying lane would write to one partition: in a mass outage, thousands of lanes
//! rescheduling would throttle each other and the updates of lanes just entering trouble or
//! just recovering, whoever's they are. So a lane waiting for a call stores its state with its
//! shard (`retrying#07`, a digest of its key), spreading each state over [`SHARDS`] keys. A
//! lane's shard never changes, so a condition on its state still names exact values. States
//! written before shards (`retrying`) still read and match, and the sweep still looks there.

use crate::lane::{LaneKey, LaneState};
use strum::IntoEnumIterator;

pub const LANES_BY_NEXT_ATTEMPT: &str = "lanes-by-next-attempt";

/// Partition keys per state: 16,000 index writes a second each, and 17 small queries per state
/// for every sweep.
pub const SHARDS: u8 = 16;

/// The state as `lane` stores it. Delivering lanes are never swept, and keep the plain name.
pub(super) fn stored(lane: &LaneKey, state: LaneState) -> String {
    match state {
        LaneState::Delivering => state.as_str().to_owned(),
        waiting => format!("{}#{:02}", waiting.as_str(), shard(lane)),
    }
}

/// Every value `lane` in `state` may hold: as stored now, and as stored before shards.
pub(super) fn forms(lane: &LaneKey, state: LaneState) -> Vec<String> {
    let now = stored(lane, state);
    let before = state.as_str();
    if now == before {
        vec![now]
    } else {
        vec![now, before.to_owned()]
    }
}

/// A stored state, with or without its shard.
pub(super) fn parse(stored: &str) -> Option<LaneState> {
    LaneState::parse(stored.split_once('#').map_or(stored, |(state, _)| state))
}

/// The index's partition keys the sweep reads: every shard of every state a lane waits in, and
/// each state's key from before shards.
pub(super) fn partitions() -> impl Iterator<Item = String> {
    LaneState::iter()
        .filter(|s| *s != LaneState::Delivering)
        .flat_map(|state| {
            (0..SHARDS)
                .map(move |shard| format!("{}#{shard:02}", state.as_str()))
                .chain(std::iter::once(state.as_str().to_owned()))
        })
}

fn shard(lane: &LaneKey) -> u8 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(lane.organization_id.as_bytes())
        .chain_update([0])
        .chain_update(lane.project_id.as_bytes())
        .finalize();
    digest[0] % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_waiting_lane_stores_its_state_with_its_shard_and_reads_it_back() {
        let lane = LaneKey::new("org-1", "project-1");
        for state in LaneState::iter() {
            let stored = stored(&lane, state);
            assert_eq!(parse(&stored), Some(state), "{stored}");
            assert_eq!(parse(state.as_str()), Some(state));
            assert!(forms(&lane, state).contains(&stored));
            assert!(forms(&lane, state).contains(&state.as_str().to_owned()));
        }
        assert_eq!(stored(&lane, LaneState::Delivering), "delivering");
        assert_eq!(forms(&lane, LaneState::Delivering), ["delivering"]);
        // A lane's shard is part of what is stored: it must never change between versions.
        assert_eq!(stored(&lane, LaneState::Retrying), "retrying#03");
        assert_eq!(parse("retrying#"), Some(LaneState::Retrying));
        assert_eq!(parse("Retrying#01"), None);
    }

    #[test]
    fn lanes_spread_over_every_shard_and_the_sweep_reads_them_all() {
        let mut per_shard: HashMap<String, usize> = HashMap::new();
        for i in 0..1_600 {
            let lane = LaneKey::new(format!("org-{}", i % 40), format!("project-{i}"));
            *per_shard
                .entry(stored(&lane, LaneState::Retrying))
                .or_default() += 1;
        }
        assert_eq!(per_shard.len(), usize::from(SHARDS));
        assert!(
            per_shard.values().all(|n| (50..=150).contains(n)),
            "{per_shard:?}"
        );
        let partitions: Vec<String> = partitions().collect();
        for key in per_shard.keys() {
            assert!(partitions.contains(key), "{key}");
        }
        for state in ["retrying", "refused", "paused", "catching_up"] {
            assert!(partitions.iter().any(|p| p == state), "{state}");
        }
        assert!(!partitions.iter().any(|p| p.starts_with("delivering")));
        assert_eq!(partitions.len(), 4 * (usize::from(SHARDS) + 1));
    }
}
