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

/// A Lambda event of `tests/fixtures/lambda/` (an SQS batch, a stream batch, an API request),
/// as the functions' unit tests read it.
pub fn lambda_event(name: &str) -> String {
    let path = format!(
        "{}/../tests/fixtures/lambda/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An item as capture wrote it before events were packed (issue 16): the organization, project
/// and message ids beside the key, the JSON as a string, or gzipped (as it was above 16 KiB).
pub fn item_written_before_packing(
    event: &crate::AuditEvent,
    message_id: &str,
    gzipped: bool,
    expires_at: i64,
) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    use crate::store::{partition_key, sort_key};
    use aws_sdk_dynamodb::types::AttributeValue::{B, N, S};
    let json = event.json();
    let body = if gzipped {
        B(aws_sdk_dynamodb::primitives::Blob::new(
            crate::compression::gzip(json.as_bytes(), flate2::Compression::default()),
        ))
    } else {
        S(json.to_owned())
    };
    [
        (
            "pk",
            S(partition_key(event.organization_id(), event.project_id())),
        ),
        ("sk", S(sort_key(event.timestamp(), message_id))),
        ("organization_id", S(event.organization_id().to_owned())),
        ("project_id", S(event.project_id().to_owned())),
        ("message_id", S(message_id.to_owned())),
        ("expires_at", N(expires_at.to_string())),
        ("event", body),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// A stored event's zstd frame as a newer release may have packed it, read after a rollback:
/// the same frame, naming a dictionary this release does not have.
pub fn packed_with_another_dictionary(mut packed: Vec<u8>) -> Vec<u8> {
    // After the magic number and the frame's descriptor: its dictionary's id.
    packed[5..9].copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(
        zstd::zstd_safe::get_dict_id_from_frame(&packed).map(|id| id.get()),
        Some(0x0403_0201),
        "the frame now names another dictionary"
    );
    packed
}
