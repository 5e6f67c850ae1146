//! What storing an event costs, on events as varied as real ones, and the stored events'
//! dictionary: no emulator needed.

use audit_log_tests::samples::{event_of_size, train_dictionary, uuid};
use rand::SeedableRng;
use serde_json::Value;

#[test]
fn events_are_as_long_as_asked_and_differ_in_their_ids() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let a = event_of_size(&mut rng, "o", "p", "2026-01-01T00:00:00Z", 1024);
    let b = event_of_size(&mut rng, "o", "p", "2026-01-01T00:00:00Z", 1024);
    assert_eq!((a.len(), b.len()), (1024, 1024));
    let id = |e: &str| serde_json::from_str::<Value>(e).unwrap()["actor"]["principal_id"].clone();
    assert_ne!(id(&a), id(&b));
    audit_log::AuditEvent::from_json(&a).expect("a valid event");
}

/// Issue 16's storage target, on events the dictionary was not trained on, with ids as
/// long as real ones (UUIDs for organizations, projects and SQS messages).
#[test]
fn a_kilobyte_event_is_stored_in_at_most_700_bytes() {
    use audit_log::store::StoredEvent;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
    let sizes: Vec<usize> = (0..200)
        .map(|_| {
            let (org, project, message) = (uuid(&mut rng), uuid(&mut rng), uuid(&mut rng));
            let json = event_of_size(&mut rng, &org, &project, "2026-11-30T10:00:00Z", 1024);
            let event = audit_log::AuditEvent::from_json(&json).unwrap();
            StoredEvent::new(&message, &event, audit_log::Retention::default())
                .unwrap()
                .size()
        })
        .collect();
    let largest = *sizes.iter().max().unwrap();
    let mean = sizes.iter().sum::<usize>() / sizes.len();
    assert!(largest <= 700, "largest item {largest} bytes, mean {mean}");
}

#[test]
fn the_committed_dictionary_is_the_one_training_makes() {
    let committed = std::fs::read(
        audit_log_tests::repo_root().join("shared/src/store/dictionaries/events-1.zdict"),
    )
    .unwrap();
    assert!(
        train_dictionary() == committed,
        "the samples or the trainer changed: a new dictionary goes beside this one (tests/bin/dictionary.rs)"
    );
}
