//! The seed's example events (repaired where the seed is defective), for tests and benchmarks.
//! The files live in `tests/fixtures/events/`; built only for tests and the `test-util` feature.

macro_rules! seed {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/events/",
                $name,
                ".json"
            )),
        )
    };
}

/// `(name, body)` of every example in `seeds/audit-log-metadata.txt`.
pub const SEED_EVENTS: [(&str, &str); 5] = [
    seed!("bucket-labels-created"),
    seed!("version-revoked"),
    seed!("build-updated"),
    seed!("build-created-failed"),
    seed!("channel-version-assigned"),
];
