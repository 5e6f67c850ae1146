//! The lanes' items: how a lane and its owed events are laid out in the configuration table.

use super::*;

#[test]
fn owed_keys_order_by_when_they_became_owed_then_by_event() {
    let owed = |at: i64, sk: &str| Owed {
        event: StoredKey {
            sort_key: sk.into(),
            message_id: "m".into(),
            expires_at: 0,
        },
        owed_at_ms: at,
        bytes: 1,
    };
    let a = owed_sort_key("p", &owed(999, "2026-01-02T00:00:00.000000000Z#b"));
    let b = owed_sort_key("p", &owed(1_000, "2026-01-01T00:00:00.000000000Z#a"));
    let c = owed_sort_key("p", &owed(1_000, "2026-01-03T00:00:00.000000000Z#a"));
    assert!(a < b && b < c);
    // Another project's owed events never share the prefix.
    assert!(!owed_sort_key("p#q", &owed(1, "x")).starts_with(&prefix("p")));
}

#[test]
fn a_configuration_saved_before_lanes_delivers() {
    assert_eq!(lane_of(&HashMap::new()), Lane::default());
}
