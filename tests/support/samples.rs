//! Audit events as varied as real ones: the seed's examples with every id, name, e-mail address
//! and time drawn afresh, and what stays alike across a registry's events (actions, statuses,
//! platforms, regions, descriptions) kept. They train the stored events' dictionary and measure
//! what an event costs to store, so neither flatters itself with repeated ids.

use audit_log::fixtures::SEED_EVENTS;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value, json};

/// Values that repeat across events: kept as the seed has them.
const ALIKE: &[&str] = &[
    "status",
    "type",
    "action",
    "platform",
    "region",
    "description",
    "component_type",
    "os",
];
const ULID_DIGITS: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

pub fn uuid(rng: &mut impl Rng) -> String {
    let n: u128 = rng.random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..]
    )
}

fn ulid(rng: &mut impl Rng) -> String {
    let tail: String = (0..24)
        .map(|_| *ULID_DIGITS.choose(rng).unwrap_or(&b'0') as char)
        .collect();
    format!("01{tail}")
}

fn word(rng: &mut impl Rng) -> String {
    let len = rng.random_range(3..=14);
    (0..len)
        .map(|_| *b"abcdefghijklmnopqrstuvwxyz-".choose(rng).unwrap_or(&b'a') as char)
        .collect()
}

fn time(rng: &mut impl Rng) -> String {
    format!(
        "2026-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        rng.random_range(1..=12),
        rng.random_range(1..=28),
        rng.random_range(0..24),
        rng.random_range(0..60),
        rng.random_range(0..60)
    )
}

fn vary(value: &Value, key: &str, rng: &mut impl Rng) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), vary(v, k, rng)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| vary(v, key, rng)).collect()),
        Value::String(s) => Value::String(match key {
            "organization_id" | "project_id" | "principal_id" => uuid(rng),
            "id" if s.contains('-') => uuid(rng),
            "id" => ulid(rng),
            k if k.ends_with("_id") && s.len() == 26 => ulid(rng),
            "timestamp" => time(rng),
            k if ALIKE.contains(&k) => s.clone(),
            k if k.contains("email") || s.contains('@') => {
                format!("{}@{}.com", word(rng), word(rng))
            }
            _ => word(rng),
        }),
        other => other.clone(),
    }
}

/// One of the seed's events with its ids, names and time drawn afresh.
pub fn varied_event(rng: &mut impl Rng) -> Value {
    let (_, seed) = SEED_EVENTS.choose(rng).expect("seed events");
    vary(&serde_json::from_str(seed).expect("seed JSON"), "", rng)
}

/// Words of a person's note, as a registry's users write them.
const NOTE_WORDS: &[&str] = &[
    "build",
    "image",
    "golden",
    "base",
    "ubuntu",
    "rhel",
    "windows",
    "hardened",
    "patched",
    "release",
    "pipeline",
    "nightly",
    "security",
    "update",
    "kernel",
    "cve",
    "fix",
    "rollout",
    "staging",
    "production",
    "canary",
    "approved",
    "by",
    "the",
    "for",
    "team",
    "platform",
    "after",
    "review",
    "ticket",
    "ami",
    "region",
];

/// A varied event of the project at `timestamp`, made exactly `bytes` long as compact JSON by
/// a `notes` field (drawn from the seed's events that are not longer already).
pub fn event_of_size(
    rng: &mut impl Rng,
    organization_id: &str,
    project_id: &str,
    timestamp: &str,
    bytes: usize,
) -> String {
    let (mut event, base) = loop {
        let mut event = varied_event(rng);
        event["organization_id"] = json!(organization_id);
        event["project_id"] = json!(project_id);
        event["timestamp"] = json!(timestamp);
        event["notes"] = json!("");
        let base = event.to_string().len();
        if base <= bytes {
            break (event, base);
        }
    };
    let mut notes = String::new();
    while base + notes.len() < bytes {
        notes.push_str(NOTE_WORDS.choose(rng).unwrap_or(&"note"));
        notes.push(' ');
    }
    notes.truncate(bytes.saturating_sub(base));
    event["notes"] = json!(notes);
    event.to_string()
}

/// Samples the stored events' dictionary is trained on, and its size: 4 KiB did best on
/// held-out events (8 and 16 KiB gained nothing).
const TRAINING_SAMPLES: usize = 3_000;
const DICTIONARY_BYTES: usize = 4 * 1024;

/// The stored events' zstd dictionary, trained on varied events drawn from a fixed seed, so
/// the same dictionary comes out every time.
pub fn train_dictionary() -> Vec<u8> {
    use rand::SeedableRng;
    // ChaCha8 from a fixed seed gives the same samples on every version of rand.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let samples: Vec<Vec<u8>> = (0..TRAINING_SAMPLES)
        .map(|_| varied_event(&mut rng).to_string().into_bytes())
        .collect();
    zstd::dict::from_samples(&samples, DICTIONARY_BYTES).expect("training a dictionary")
}
