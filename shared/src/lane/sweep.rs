//! Which overdue lanes a sweep gives another call first. A sweep takes a bounded number, and a
//! lane it cannot heal (its organization's partition throttled) stays overdue: taken most
//! overdue first alone, one organization's thousands of lanes would fill every sweep and leave
//! another organization's lost call unsent for good. So organizations take turns: each one's
//! most overdue lane, then each one's second, and so on, the most overdue first within a turn.

use std::collections::BTreeMap;

/// A lane found overdue, as a store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue<T> {
    /// Its organization, as any text that tells organizations apart (a store's key for it).
    pub organization: String,
    /// When its call was due (epoch ms).
    pub due_ms: i64,
    pub lane: T,
}

/// At most `limit` of `found`, organizations taking turns.
pub fn take_turns<T>(found: Vec<Overdue<T>>, limit: usize) -> Vec<T> {
    let mut by_organization: BTreeMap<String, Vec<(i64, T)>> = BTreeMap::new();
    for overdue in found {
        by_organization
            .entry(overdue.organization)
            .or_default()
            .push((overdue.due_ms, overdue.lane));
    }
    let mut turns: Vec<(usize, i64, T)> = Vec::new();
    for (_, mut lanes) in by_organization {
        lanes.sort_by_key(|(due_ms, _)| *due_ms);
        turns.extend(
            lanes
                .into_iter()
                .enumerate()
                .map(|(turn, (due_ms, lane))| (turn, due_ms, lane)),
        );
    }
    turns.sort_by_key(|(turn, due_ms, _)| (*turn, *due_ms));
    turns
        .into_iter()
        .take(limit)
        .map(|(_, _, lane)| lane)
        .collect()
}

/// `lanes` (as [`take_turns`] ordered them) in runs of one organization each, in the order each
/// organization first comes: a sweep heals an organization's lanes one after another and
/// organizations side by side, so one whose every write waits out its retries holds up no
/// other.
pub fn by_organization<T>(lanes: Vec<T>, organization: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
    let mut runs: Vec<Vec<T>> = Vec::new();
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    for lane in lanes {
        let key = organization(&lane).to_owned();
        match at.get(&key) {
            Some(&i) => runs[i].push(lane),
            None => {
                at.insert(key, runs.len());
                runs.push(vec![lane]);
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn overdue(organization: &str, due_ms: i64) -> Overdue<(String, i64)> {
        Overdue {
            organization: organization.into(),
            due_ms,
            lane: (organization.into(), due_ms),
        }
    }

    #[test]
    fn organizations_take_turns_the_most_overdue_first_within_a_turn() {
        // One organization's many lanes, all more overdue than two others' one each.
        let mut found: Vec<_> = (0..10).map(|n| overdue("busy", n)).collect();
        found.push(overdue("calm", 500));
        found.push(overdue("quiet", 400));
        assert_eq!(
            take_turns(found.clone(), 5),
            [
                ("busy".into(), 0),
                ("quiet".into(), 400),
                ("calm".into(), 500),
                ("busy".into(), 1),
                ("busy".into(), 2)
            ]
        );
        // A turn cut short keeps its most overdue.
        assert_eq!(
            take_turns(found, 2),
            [("busy".into(), 0), ("quiet".into(), 400)]
        );
    }

    #[test]
    fn runs_keep_each_organizations_order_and_the_order_they_first_come() {
        let lanes = vec![("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2)];
        let runs = by_organization(lanes, |(org, _)| org);
        assert_eq!(
            runs,
            [
                vec![("a", 1), ("a", 2)],
                vec![("b", 1), ("b", 2)],
                vec![("c", 1)]
            ]
        );
    }

    proptest! {
        /// Whatever was found, a sweep takes as many as it may, each organization's most
        /// overdue, and no organization more than one lane ahead of another that has some left.
        #[test]
        fn no_organization_gets_ahead_of_another_with_lanes_left(
            found in proptest::collection::vec((0..5u8, 0..1_000i64), 0..60),
            limit in 0..40usize,
        ) {
            let found: Vec<_> = found
                .into_iter()
                .map(|(org, due)| overdue(&format!("org-{org}"), due))
                .collect();
            let chosen = take_turns(found.clone(), limit);
            prop_assert_eq!(chosen.len(), limit.min(found.len()));
            // As told turn by turn: every organization's n-th most overdue, most overdue first.
            let mut told = Vec::new();
            let mut lanes: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
            for o in &found {
                lanes.entry(&o.organization).or_default().push(o.due_ms);
            }
            for dues in lanes.values_mut() {
                dues.sort();
            }
            for turn in 0.. {
                let mut this: Vec<(String, i64)> = lanes
                    .iter()
                    .filter_map(|(org, dues)| Some((org.to_string(), *dues.get(turn)?)))
                    .collect();
                if this.is_empty() {
                    break;
                }
                this.sort_by_key(|(_, due)| *due);
                told.extend(this);
            }
            told.truncate(limit);
            prop_assert_eq!(&chosen, &told);
            let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
            for o in &found {
                per.entry(&o.organization).or_default().0 += 1;
            }
            for (org, _) in &chosen {
                per.get_mut(org.as_str()).unwrap().1 += 1;
            }
            for (org, &(had, took)) in &per {
                // Its most overdue ones.
                let mut dues: Vec<i64> = found
                    .iter()
                    .filter(|o| o.organization == *org)
                    .map(|o| o.due_ms)
                    .collect();
                dues.sort();
                let mut taken: Vec<i64> = chosen
                    .iter()
                    .filter(|(o, _)| o == org)
                    .map(|(_, due)| *due)
                    .collect();
                taken.sort();
                prop_assert_eq!(&taken[..], &dues[..took]);
                for &(other_had, other_took) in per.values() {
                    if other_took < other_had {
                        prop_assert!(took <= other_took + 1, "{per:?}");
                    }
                }
                prop_assert!(took <= had);
            }
        }
    }
}
