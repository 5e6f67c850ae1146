use super::*;
use audit_log::fixtures::lambda_event as fixture;
use aws_lambda_events::event::dynamodb::Event;
use proptest::prelude::*;
use serde_json::{Value, json};

/// The fixture's record with this new image.
fn record_with_image(image: Value) -> Value {
    let mut payload: Value = serde_json::from_str(&fixture("dynamodb-stream-insert.json")).unwrap();
    payload["Records"][0]["dynamodb"]["NewImage"] = image;
    payload
}

/// The lean records must say what `aws_lambda_events`' full ones say, about what delivery reads.
fn assert_reads_as_full(payload: &str) {
    let full: Event = serde_json::from_str(payload).unwrap();
    let read: StreamRecords = serde_json::from_str(payload).unwrap();
    // The first record of a batch is read from a parsed value, not from the text.
    let value: Value = serde_json::from_str(payload).unwrap();
    let from_value: StreamRecords = serde_json::from_value(value).unwrap();
    assert_eq!(read.records.len(), full.records.len());
    for ((read, from_value), full) in read
        .records
        .iter()
        .zip(&from_value.records)
        .zip(&full.records)
    {
        let expected = StreamRecord::from(full);
        assert_eq!(read, &expected);
        assert_eq!(from_value, &expected);
    }
}

#[test]
fn a_record_gives_its_id_kind_sequence_number_and_the_stored_event_attributes() {
    let payload = record_with_image(json!({
        "pk": {"S": "org-1#project-1"},
        "sk": {"S": "2026-11-30T10:00:00.000000000Z#m-1"},
        "expires_at": {"N": "1800000000"},
        "event": {"B": "KLUv/QBYSQAAeyJpZCI6MX0="},
        "organization_id": {"S": "org-1"},
    }));
    let read: StreamRecords = serde_json::from_value(payload.clone()).unwrap();
    let record = &read.records[0];
    assert_eq!(record.event_id, "c4ca4238a0b923820dcc509a6f75849b");
    assert_eq!(record.event_name, "INSERT");
    assert_eq!(record.change.sequence_number.as_deref(), Some("111"));
    assert_eq!(
        record.change.new_image,
        Image {
            partition_key: Some(Attribute::S("org-1#project-1".into())),
            sort_key: Some(Attribute::S("2026-11-30T10:00:00.000000000Z#m-1".into())),
            expires_at: Some(Attribute::N("1800000000".into())),
            event: Some(Attribute::B(
                aws_smithy_types::base64::decode("KLUv/QBYSQAAeyJpZCI6MX0=").unwrap()
            )),
        }
    );
    assert_reads_as_full(&payload.to_string());
}

#[test]
fn attributes_of_every_other_type_are_skipped_and_the_named_ones_of_another_type_are_other() {
    let payload = record_with_image(json!({
        "map": {"M": {"sk": {"S": "not this one"}, "nested": {"L": [{"N": "1"}, {"NULL": true}]}}},
        "list": {"L": [{"S": "a"}, {"B": "AAE="}]},
        "flag": {"BOOL": false},
        "nothing": {"NULL": true},
        "strings": {"SS": ["a", "b"]},
        "numbers": {"NS": ["1", "2.5"]},
        "binaries": {"BS": ["AAE=", "AgM="]},
        "sk": {"N": "12"},
        "expires_at": {"S": "soon"},
        "event": {"M": {}},
    }));
    let read: StreamRecords = serde_json::from_value(payload.clone()).unwrap();
    let image = &read.records[0].change.new_image;
    assert_eq!(image.sort_key, Some(Attribute::N("12".into())));
    assert_eq!(image.expires_at, Some(Attribute::S("soon".into())));
    assert_eq!(image.event, Some(Attribute::Other));
    assert_reads_as_full(&payload.to_string());
}

#[test]
fn the_attributes_read_are_named_as_the_events_table_names_them() {
    let mut image = serde_json::Map::new();
    for (name, value) in [
        (attr::SORT_KEY, "a sort key"),
        (attr::EXPIRES_AT, "a TTL"),
        (attr::EVENT, "an event"),
        (attr::PARTITION_KEY, "a partition key"),
    ] {
        image.insert(name.into(), json!({ "S": value }));
    }
    let read: Image = serde_json::from_value(Value::Object(image)).unwrap();
    assert_eq!(read.sort_key, Some(Attribute::S("a sort key".into())));
    assert_eq!(read.expires_at, Some(Attribute::S("a TTL".into())));
    assert_eq!(read.event, Some(Attribute::S("an event".into())));
}

#[test]
fn a_binary_that_is_not_base64_spoils_its_record_only() {
    let mut payload = record_with_image(json!({"event": {"B": "not base64 at all!"}}));
    let good = record_with_image(json!({"event": {"B": "AAE="}}))["Records"][0].clone();
    payload["Records"].as_array_mut().unwrap().push(good);
    let read: StreamRecords = serde_json::from_str(&payload.to_string()).unwrap();
    assert_eq!(
        read.records[0].change.new_image.event,
        Some(Attribute::Other)
    );
    assert_eq!(
        read.records[1].change.new_image.event,
        Some(Attribute::B(vec![0, 1]))
    );
}

#[test]
fn a_record_without_an_image_or_a_sequence_number_still_reads() {
    for change in [
        r#"{"Keys": {"pk": {"S": "a"}}}"#,
        r#"{"Keys": null, "NewImage": null, "OldImage": null}"#,
        "null",
    ] {
        let payload = format!(
            r#"{{"Records": [{{"eventID": "1", "eventName": "REMOVE", "dynamodb": {change}}}]}}"#
        );
        let read: StreamRecords = serde_json::from_str(&payload).unwrap();
        assert_eq!(read.records[0].event_name, "REMOVE");
        assert_eq!(read.records[0].change.sequence_number, None);
        assert_eq!(read.records[0].change.new_image, Image::default());
    }
    assert_reads_as_full(&record_with_image(Value::Null).to_string());
}

#[test]
fn a_record_without_its_id_or_kind_is_not_a_stream_record() {
    for record in [r#"{"eventName": "INSERT"}"#, r#"{"eventID": "1"}"#] {
        let payload = format!(r#"{{"Records": [{record}]}}"#);
        assert!(serde_json::from_str::<StreamRecords>(&payload).is_err());
        assert!(serde_json::from_str::<Event>(&payload).is_err());
    }
}

/// As `lambda_runtime` reads each invocation (its `deserializer.rs`).
fn as_the_runtime_reads(body: &str) -> crate::Invocation {
    let mut json = serde_json::Deserializer::from_str(body);
    serde_path_to_error::deserialize(&mut json).unwrap()
}

#[test]
fn a_batch_reads_whole_through_the_runtime_first_record_and_rest_alike() {
    let mut payload = record_with_image(json!({
        "sk": {"S": "2026-11-30T10:00:00.000000000Z#m-1"},
        "expires_at": {"N": "1800000000"},
        "event": {"B": "KLUv/QBYSQAAeyJpZCI6MX0="},
    }));
    let record = payload["Records"][0].clone();
    payload["Records"] = json!([record, record, record]);
    let crate::Invocation::Stream(read) = as_the_runtime_reads(&payload.to_string()) else {
        panic!("a stream batch");
    };
    assert_eq!(read.records.len(), 3);
    let full: Event = serde_json::from_value(payload).unwrap();
    for (read, full) in read.records.iter().zip(&full.records) {
        assert_eq!(read, &StreamRecord::from(full));
        assert!(matches!(read.change.new_image.event, Some(Attribute::B(_))));
    }
}

#[test]
fn an_image_read_back_from_the_streams_api_is_the_image_lambda_sends() {
    use aws_sdk_dynamodbstreams::primitives::Blob;
    use aws_sdk_dynamodbstreams::types::AttributeValue as Sdk;
    let sdk: std::collections::HashMap<String, Sdk> = [
        ("pk", Sdk::S("org-1#project-1".into())),
        ("sk", Sdk::S("2026-11-30T10:00:00.000000000Z#m-1".into())),
        ("expires_at", Sdk::N("1800000000".into())),
        ("event", Sdk::B(Blob::new(vec![0, 1, 2]))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let full: aws_lambda_events::event::dynamodb::EventRecord = {
        let mut r = aws_lambda_events::event::dynamodb::EventRecord::default();
        r.change.new_image = sdk.clone().into();
        r
    };
    let sent = json!({"Records": [full]}).to_string();
    let read: StreamRecords = serde_json::from_str(&sent).unwrap();
    assert_eq!(Image::from_stream(sdk), read.records[0].change.new_image);
}

/// A DynamoDB JSON value of any type, nested a little.
fn any_attribute() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<String>().prop_map(|s| json!({"S": s})),
        any::<i64>().prop_map(|n| json!({"N": n.to_string()})),
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| json!({"B": aws_smithy_types::base64::encode(b)})),
        any::<bool>().prop_map(|b| json!({"BOOL": b})),
        Just(json!({"NULL": true})),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|l| json!({"L": l})),
            proptest::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| json!({"M": m})),
        ]
    })
}

proptest! {
    #[test]
    fn any_image_reads_as_aws_lambda_events_reads_it(
        image in proptest::collection::btree_map(
            prop_oneof![Just("sk".to_owned()), Just("expires_at".to_owned()), Just("event".to_owned()), "[a-z_]{1,8}"],
            any_attribute(),
            0..8,
        )
    ) {
        assert_reads_as_full(&record_with_image(json!(image)).to_string());
    }
}
