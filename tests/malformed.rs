//! Bad input loses nothing and leaks nothing: 10,000 malformed SQS messages, each refused with
//! a reason in one log line (never the payload), none stored, every one handed back to SQS
//! (which dead-letters it after its receives).

use audit_log::Retention;
use audit_log::store::EventTable;
use audit_log_capture::Capture;
use audit_log_tests::{
    create_table, emulator, failed_ids, scan_all, sqs_batch, unique, with_captured_logs,
};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

const SENTINEL: &str = "Kx7payloadsentinel";

/// The `i`-th malformed body, cycling through every kind of mistake.
fn malformed(i: usize) -> String {
    let valid = || -> Value {
        json!({"status": "OK", "action": "create", "description": format!("d {SENTINEL}"),
               "organization_id": "o", "project_id": "p", "timestamp": "2026-01-01T00:00:00Z",
               "actor": {"principal_id": SENTINEL, "type": "TYPE_USER"}})
    };
    let without = |field: &str| {
        let mut v = valid();
        v.as_object_mut().unwrap().remove(field);
        v.to_string()
    };
    let with = |field: &str, value: Value| {
        let mut v = valid();
        v[field] = value;
        v.to_string()
    };
    match i % 16 {
        0 => format!("{{\"status\": \"{SENTINEL}"),
        1 => format!("not json {SENTINEL}"),
        2 => String::new(),
        3 => json!([SENTINEL, 1, 2]).to_string(),
        4 => "null".into(),
        5 => with("status", json!(5)),
        6 => with("actor", json!(SENTINEL)),
        7 => without("actor"),
        8 => without("timestamp"),
        9 => with("action", json!(SENTINEL)),
        10 => with("timestamp", json!(SENTINEL)),
        11 => format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)),
        // A lone surrogate: not a character.
        12 => format!("{{\"description\": \"\\ud800 {SENTINEL}\"}}"),
        13 => with("organization_id", json!("")),
        // A huge string in an event that is otherwise missing its actor.
        14 if i % 1_000 == 14 => {
            let mut v = valid();
            v.as_object_mut().unwrap().remove("actor");
            v["description"] = json!(format!("{SENTINEL}{}", "h".repeat(300_000)));
            v.to_string()
        }
        // Over SQS's 1 MiB.
        15 if i % 1_000 == 15 => format!("{{\"pad\": \"{SENTINEL}{}\"}}", "x".repeat(1024 * 1024)),
        _ => with("project_id", json!(null)),
    }
}

#[test]
fn ten_thousand_malformed_messages_are_all_refused_with_a_reason_and_none_stored() {
    let ids: Vec<String> = (0..10_000)
        .map(|i| format!("{}-{i}", unique("bad")))
        .collect();
    let (outcome, logs) = with_captured_logs(|| async {
        let config = emulator().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let table = create_table(&dynamodb, "EventsTable").await;
        let config_table = create_table(&dynamodb, "ConfigTable").await;
        let capture = Capture::new(
            EventTable::new(dynamodb.clone(), &table),
            audit_log::streaming::ConfigTable::new(dynamodb.clone(), config_table),
            Retention::default(),
        );
        let mut refused_batches = 0;
        for chunk in ids.chunks(1_000) {
            let bodies: Vec<(String, String)> = chunk
                .iter()
                .enumerate()
                .map(|(j, id)| {
                    (
                        id.clone(),
                        malformed(id.rsplit('-').next().unwrap().parse::<usize>().unwrap_or(j)),
                    )
                })
                .collect();
            let batch = sqs_batch(bodies.iter().map(|(id, b)| (id.clone(), b.as_str())));
            let answer = capture
                .capture(batch.records, Instant::now() + Duration::from_secs(30))
                .await;
            // Every record is invalid: each is answered as a batch item failure, so the whole
            // batch goes back to SQS (nothing is acknowledged).
            let answer = answer.expect("invalid messages are answered record by record");
            assert_eq!(
                failed_ids::<HashSet<_>>(&answer),
                chunk.iter().cloned().collect()
            );
            refused_batches += 1;
        }
        (refused_batches, scan_all(&dynamodb, &table).await.len())
    });
    let (refused_batches, stored) = outcome;
    assert_eq!(refused_batches, 10);
    assert_eq!(stored, 0, "nothing malformed was stored");
    let rejections: Vec<&Value> = logs
        .iter()
        .filter(|l| l["fields"]["message"] == "audit event rejected")
        .collect();
    let logged: HashSet<&str> = rejections
        .iter()
        .map(|l| l["fields"]["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(logged.len(), 10_000, "one rejection line per message");
    assert!(ids.iter().all(|id| logged.contains(id.as_str())));
    assert!(
        rejections
            .iter()
            .all(|l| !l["fields"]["reason"].as_str().unwrap().is_empty())
    );
    let text = serde_json::to_string(&logs).unwrap();
    assert!(!text.contains(SENTINEL), "a payload reached the logs");
}
