//! capture against the local AWS emulator, with the events table built from template.yaml.

use audit_log::fixtures::SEED_EVENTS;
use audit_log::store::{EventTable, StoredKey, attr, event_json};
use audit_log::streaming::ConfigTable;
use audit_log::{AuditEvent, Retention};
use audit_log_capture::{Capture, CaptureError, ENVIRONMENT, RetryQueue};
use audit_log_tests::{
    RequestCounter, create_table, emulator, environment_of, failed_ids, resource, scan_all,
    sqs_batch, unique, with_captured_logs,
};
use aws_lambda_events::event::sqs::SqsBatchResponse;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;

struct Fixture {
    client: aws_sdk_dynamodb::Client,
    requests: RequestCounter,
    table: String,
    config_table: String,
    capture: Capture,
}

impl Fixture {
    async fn new() -> Self {
        let config = emulator().await;
        let requests = RequestCounter::default();
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&config)
                .interceptor(requests.clone())
                .build(),
        );
        let table = create_table(&client, "EventsTable").await;
        let config_table = create_table(&client, "ConfigTable").await;
        let capture = Capture::new(
            EventTable::new(client.clone(), &table),
            ConfigTable::new(client.clone(), &config_table),
            Retention::default(),
        );
        Self {
            client,
            requests,
            table,
            config_table,
            capture,
        }
    }

    async fn capture(&self, batch: &[(String, String)]) -> Result<SqsBatchResponse, CaptureError> {
        let event = sqs_batch(batch.iter().map(|(id, body)| (id.clone(), body.as_str())));
        let deadline = Instant::now() + Duration::from_secs(20);
        self.capture.capture(event.records, deadline).await
    }

    async fn items(&self) -> HashMap<String, HashMap<String, AttributeValue>> {
        scan_all(&self.client, &self.table)
            .await
            .into_iter()
            .map(|item| (StoredKey::of(&item).unwrap().message_id, item))
            .collect()
    }
}

#[tokio::test]
async fn a_projects_note_lasts_as_long_as_the_longest_lived_events_it_was_written_for() {
    use audit_log::streaming::{NOTE_AHEAD_SECONDS, ProjectIndex};
    let f = Fixture::new().await;
    let org = unique("org");
    let response = f.capture(&[(unique("m"), event(&org, 1))]).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    let stored = f.items().await.into_values().next().unwrap();
    let expires_at = StoredKey::of(&stored).unwrap().expires_at;
    let project = AuditEvent::from_json(&event(&org, 1))
        .unwrap()
        .project_id()
        .to_owned();
    // The note's TTL, read from the configuration table (`None`: it has none).
    let note = async || {
        let notes: Vec<_> = scan_all(&f.client, &f.config_table)
            .await
            .into_iter()
            .filter(|item| item[attr::SORT_KEY].as_s().unwrap().starts_with("events#"))
            .collect();
        assert_eq!(notes.len(), 1, "{notes:?}");
        notes[0]
            .get(attr::EXPIRES_AT)
            .map(|at| at.as_n().unwrap().parse::<i64>().unwrap())
    };
    let ahead = expires_at + NOTE_AHEAD_SECONDS;
    assert_eq!(note().await, Some(ahead));
    // Noted again for events that expire sooner (another container's), it stays as it is;
    // for later ones, it lasts as long as they do.
    let table = ConfigTable::new(f.client.clone(), &f.config_table);
    let again = |at| [((org.clone(), project.clone()), at)];
    table.note(&again(Some(expires_at))).await.unwrap();
    assert_eq!(note().await, Some(ahead));
    table.note(&again(Some(ahead + 86_400))).await.unwrap();
    assert_eq!(note().await, Some(ahead + 86_400));
    // Noted for events whose times are not known (`audit-log-note-projects`), it is kept for
    // ever, and a later note with a TTL does not shorten that.
    table.note(&again(None)).await.unwrap();
    assert_eq!(note().await, None);
    table.note(&again(Some(ahead + 2 * 86_400))).await.unwrap();
    assert_eq!(note().await, None);
}

#[tokio::test]
async fn notes_past_their_ttl_are_left_out_of_the_listing_which_goes_on_past_them() {
    use audit_log::streaming::ProjectIndex;
    let f = Fixture::new().await;
    let table = ConfigTable::new(f.client.clone(), &f.config_table);
    let org = unique("org");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let note = |project: &str, until: i64| ((org.clone(), project.to_owned()), Some(until));
    let notes = [
        note("a#gone", now - 60),
        note("b#live", now + 3_600),
        note("c#gone", now - 1),
    ];
    table.note(&notes).await.unwrap();
    // A note at a time: a page whose note expired (DynamoDB deletes it days later) shows
    // nothing and goes on after it.
    let (mut pages, mut after) = (Vec::new(), None);
    loop {
        let (page, next) = table.noted(&org, after.as_deref(), 1, now).await.unwrap();
        pages.push(page);
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages.concat(), ["b#live"], "{pages:?}");
    assert!(pages[0].is_empty(), "{pages:?}");
}

/// A valid event for `org`'s project at `second` seconds past a fixed instant.
fn event(org: &str, second: u32) -> String {
    let mut v: Value =
        serde_json::from_str(SEED_EVENTS[second as usize % SEED_EVENTS.len()].1).unwrap();
    v["organization_id"] = json!(org);
    v["timestamp"] = json!(format!("2026-03-01T12:00:{:02}Z", second % 60));
    v.to_string()
}

fn batch_of_ten_with_three_invalid(run: &str) -> Vec<(String, String)> {
    let mut batch: Vec<(String, String)> = (0..7)
        .map(|i| {
            (
                format!("{run}-valid-{i}"),
                event(&format!("org-{}", i % 2), i),
            )
        })
        .collect();
    batch.insert(
        2,
        (format!("{run}-bad-json"), "{\"status\": \"OK\",".into()),
    );
    batch.insert(
        5,
        (format!("{run}-missing-actor"), {
            let mut v: Value = serde_json::from_str(&event("org-0", 1)).unwrap();
            v.as_object_mut().unwrap().remove("actor");
            v.to_string()
        }),
    );
    batch.push((
        format!("{run}-bad-status"),
        event("org-0", 2).replace("\"status\":\"OK\"", "\"status\":\"DONE\""),
    ));
    assert_eq!(batch.len(), 10);
    batch
}

#[tokio::test]
async fn a_batch_with_invalid_records_reports_exactly_those_and_stores_the_rest() {
    let f = Fixture::new().await;
    let run = unique("mixed");
    let batch = batch_of_ten_with_three_invalid(&run);
    let response = f
        .capture(&batch)
        .await
        .expect("a partial failure is not an error");
    assert_eq!(
        failed_ids::<BTreeSet<_>>(&response),
        BTreeSet::from([
            format!("{run}-bad-json"),
            format!("{run}-missing-actor"),
            format!("{run}-bad-status")
        ])
    );
    let items = f.items().await;
    assert_eq!(items.len(), 7);
    for (id, body) in batch.iter().filter(|(id, _)| id.contains("valid")) {
        let item = &items[id];
        let original: Value = serde_json::from_str(body).unwrap();
        let stored: Value = serde_json::from_str(&event_json(item).unwrap()).unwrap();
        assert_eq!(stored, original, "{id} comes back as it was sent");
        let event = AuditEvent::from_json(body).unwrap();
        let ttl: i64 = item[attr::EXPIRES_AT].as_n().unwrap().parse().unwrap();
        assert_eq!(
            ttl,
            event.timestamp().unix_timestamp() + 400 * 86_400,
            "{id}"
        );
    }
}

#[tokio::test]
async fn ids_of_255_characters_of_any_width_are_stored_beside_their_neighbours() {
    let f = Fixture::new().await;
    let run = unique("wide");
    let org = unique("org");
    let mut batch: Vec<(String, String)> = (0..22)
        .map(|i| (format!("{run}-valid-{i}"), event(&org, i)))
        .collect();
    // Percent-encoded, 2,295, 1,530 and 3,060 bytes: the last is 1,020 even kept as UTF-8.
    let wide = ["項".repeat(255), "é".repeat(255), "😀".repeat(255)];
    for (i, id) in wide.iter().enumerate() {
        let mut event: Value = serde_json::from_str(&event(&org, 40 + i as u32)).unwrap();
        event["organization_id"] = json!(id);
        event["project_id"] = json!(id);
        batch.insert(3 * i, (format!("{run}-wide-{i}"), event.to_string()));
    }
    let response = f.capture(&batch).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    let items = f.items().await;
    assert_eq!(items.len(), 25);
    for (i, id) in wide.iter().enumerate() {
        let item = &items[&format!("{run}-wide-{i}")];
        let pk = item[attr::PARTITION_KEY].as_s().unwrap();
        assert_eq!(
            audit_log::store::project_of(pk),
            Some((id.clone(), id.clone()))
        );
        let event: Value = serde_json::from_str(&event_json(item).unwrap()).unwrap();
        assert_eq!(event["project_id"], json!(id));
    }
}

#[tokio::test]
async fn the_same_batch_delivered_again_stores_nothing_new() {
    let f = Fixture::new().await;
    let batch = batch_of_ten_with_three_invalid(&unique("again"));
    let first = f.capture(&batch).await.unwrap();
    let before = f.items().await;
    let second = f.capture(&batch).await.unwrap();
    assert_eq!(failed_ids::<Vec<_>>(&first), failed_ids::<Vec<_>>(&second));
    assert_eq!(f.items().await, before, "same items, same content");
}

#[tokio::test]
async fn a_message_twice_in_one_batch_is_stored_once() {
    let f = Fixture::new().await;
    let id = unique("twice");
    let body = event("org-dup", 7);
    let response = f
        .capture(&[
            (id.clone(), body.clone()),
            (id.clone(), body),
            (unique("other"), event("org-dup", 8)),
        ])
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(f.items().await.len(), 2);
}

#[tokio::test]
async fn a_900_kb_event_round_trips_unchanged() {
    let f = Fixture::new().await;
    let mut v: Value = serde_json::from_str(SEED_EVENTS[2].1).unwrap();
    let builds: Vec<Value> = (0..4_000)
        .map(|i| {
            json!({"id": format!("01H5APPBYYF4D0NMVZC{i:07}"), "platform": "aws",
                "component_type": "amazon-ebs.ubuntu", "labels": {"os": "ubuntu", "n": i},
                "artifacts": [{"region": "us-west-2", "external_identifier": format!("ami-{i:012x}")}]})
        })
        .collect();
    v["builds"] = Value::Array(builds);
    let body = v.to_string();
    let pad = 900 * 1024 - body.len();
    v["padding"] = json!("·".repeat(pad / 2));
    let body = v.to_string();
    assert!(
        (880 * 1024..=1024 * 1024).contains(&body.len()),
        "{}",
        body.len()
    );
    let id = unique("big");
    let response = f.capture(&[(id.clone(), body.clone())]).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    let items = f.items().await;
    let stored: Value = serde_json::from_str(&event_json(&items[&id]).unwrap()).unwrap();
    assert_eq!(stored, v);
}

#[tokio::test]
async fn a_batch_of_100_makes_4_batch_write_item_calls() {
    let f = Fixture::new().await;
    let run = unique("hundred");
    let batch: Vec<_> = (0..100)
        .map(|i| (format!("{run}-{i}"), event(&format!("org-{}", i % 5), i)))
        .collect();
    let response = f.capture(&batch).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(f.requests.count("BatchWriteItem"), 4);
    assert_eq!(
        f.requests.count("PutItem"),
        5,
        "one note per project with events (five organizations), none per event"
    );
    assert_eq!(f.items().await.len(), 100);
    let again: Vec<_> = (100..200)
        .map(|i| (format!("{run}-{i}"), event(&format!("org-{}", i % 5), i)))
        .collect();
    f.capture(&again).await.unwrap();
    assert_eq!(f.requests.count("BatchWriteItem"), 8);
    assert_eq!(
        f.requests.count("PutItem"),
        5,
        "noted projects are not noted again"
    );
}

#[tokio::test]
async fn a_batch_of_invalid_messages_reports_each_as_a_batch_item_failure() {
    let f = Fixture::new().await;
    let run = unique("all-bad");
    let batch: Vec<_> = (0..3)
        .map(|i| (format!("{run}-{i}"), format!("not json {i}")))
        .collect();
    let response = f.capture(&batch).await.unwrap();
    let sent: Vec<String> = batch.into_iter().map(|(id, _)| id).collect();
    assert_eq!(failed_ids::<Vec<_>>(&response), sent);
    assert!(f.items().await.is_empty());
    assert_eq!(f.requests.count("BatchWriteItem"), 0);
}

#[tokio::test]
async fn a_table_that_cannot_be_written_fails_the_batch_for_redelivery() {
    let config = emulator().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let config_table = create_table(&client, "ConfigTable").await;
    let capture = Capture::new(
        EventTable::new(client.clone(), unique("no-such-table")),
        ConfigTable::new(client, config_table),
        Retention::default(),
    );
    let batch = sqs_batch([("m-valid".to_owned(), event("org", 1).as_str())]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let err = capture.capture(batch.records, deadline).await.unwrap_err();
    assert!(matches!(err, CaptureError::EveryRecordFailed(1)));
}

#[tokio::test]
async fn the_lambda_handler_takes_the_sqs_event_as_lambda_sends_it() {
    let f = Fixture::new().await;
    let id = unique("handler");
    let mut payload = sqs_batch([(id.clone(), SEED_EVENTS[0].1)]);
    payload.records.push(
        sqs_batch([(unique("bad"), "Hello from SQS!")])
            .records
            .remove(0),
    );
    let context = audit_log_tests::invocation_context(Duration::from_secs(10));
    let response = f
        .capture
        .handle(lambda_runtime::LambdaEvent::new(
            // As Lambda sends it: the JSON of the SQS event, read as the handler reads it.
            serde_json::from_str(&serde_json::to_string(&payload).unwrap()).unwrap(),
            context,
        ))
        .await
        .unwrap();
    let json = serde_json::to_value(&response).unwrap();
    assert_eq!(json["batchItemFailures"].as_array().unwrap().len(), 1);
    assert!(f.items().await.contains_key(&id));
}

#[test]
fn the_template_gives_capture_exactly_the_settings_it_reads() {
    let mut expected: Vec<String> = ENVIRONMENT.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(environment_of("CaptureFunction"), expected);
}

#[test]
fn the_template_declares_the_key_schema_and_ttl_the_code_writes() {
    let table = resource("EventsTable");
    let keys: Vec<(&str, &str)> = table["KeySchema"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().unwrap(),
                k["KeyType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [(attr::PARTITION_KEY, "HASH"), (attr::SORT_KEY, "RANGE")]
    );
    assert_eq!(
        table["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some(attr::EXPIRES_AT)
    );
    assert_eq!(
        table["TimeToLiveSpecification"]["Enabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        table["StreamSpecification"]["StreamViewType"].as_str(),
        Some("NEW_IMAGE")
    );
}

#[test]
fn the_template_routes_invalid_events_to_a_dead_letter_queue() {
    let queue = resource("EventsQueue");
    assert_eq!(queue["RedrivePolicy"]["maxReceiveCount"].as_u64(), Some(5));
    let timeout = resource("CaptureFunction")["Timeout"].as_u64().unwrap();
    assert!(queue["VisibilityTimeout"].as_u64().unwrap() >= 6 * timeout);
    let sqs = &resource("CaptureFunction")["Events"]["AuditEvents"]["Properties"];
    assert_eq!(
        sqs["FunctionResponseTypes"][0].as_str(),
        Some("ReportBatchItemFailures")
    );
}

#[test]
fn each_rejected_message_is_logged_once_with_its_id_and_reason_but_never_its_payload() {
    let sentinel = "payload-sentinel-7c1e";
    let run = unique("logged");
    let bad_type = event("org-log", 3).replace("\"TYPE_", &format!("\"{sentinel}_TYPE_"));
    let batch = vec![
        (format!("{run}-ok"), event("org-log", 1)),
        (format!("{run}-not-json"), format!("{{\"{sentinel}\": ")),
        (format!("{run}-bad-type"), bad_type),
    ];
    let (response, logs) = with_captured_logs(|| async {
        let f = Fixture::new().await;
        f.capture(&batch).await
    });
    let response = response.unwrap();
    assert_eq!(response.batch_item_failures.len(), 2);
    let rejected: Vec<&Value> = logs
        .iter()
        .filter(|l| l["fields"]["message"] == "audit event rejected")
        .collect();
    let ids: BTreeSet<&str> = rejected
        .iter()
        .map(|l| l["fields"]["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(rejected.len(), 2);
    assert_eq!(
        ids,
        BTreeSet::from([
            format!("{run}-not-json").as_str(),
            format!("{run}-bad-type").as_str()
        ])
    );
    for line in &rejected {
        assert!(!line["fields"]["reason"].as_str().unwrap().is_empty());
        assert_eq!(line["level"], "WARN");
    }
    let all = serde_json::to_string(&logs).unwrap();
    assert!(!all.contains(sentinel), "a payload reached the logs");
    assert!(!all.contains("Created bucket") && !all.contains("Revoked version"));
}

#[test]
fn copies_of_a_rejected_message_are_each_logged_by_their_own_id() {
    // Two copies of one message redriven from the dead-letter queue: new ids, one claimed.
    let run = unique("copies");
    let body = event("org-log", 4).replace("\"TYPE_", "\"NOT_A_TYPE_");
    let ids = [format!("{run}-a"), format!("{run}-b")];
    let (response, logs) = with_captured_logs(|| async {
        let f = Fixture::new().await;
        let batch = ids
            .iter()
            .map(|id| carrying(id, &format!("{run}-first"), &body))
            .collect::<Vec<_>>();
        let deadline = Instant::now() + Duration::from_secs(20);
        f.capture.capture(batch, deadline).await
    });
    let failed: BTreeSet<String> = failed_ids(&response.unwrap());
    assert_eq!(failed, ids.iter().cloned().collect());
    let logged: BTreeSet<&str> = logs
        .iter()
        .filter(|l| l["fields"]["message"] == "audit event rejected")
        .map(|l| l["fields"]["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(logged, ids.iter().map(String::as_str).collect());
}

#[test]
fn each_event_handed_back_for_want_of_its_project_is_logged_with_its_id() {
    let run = unique("unnoted");
    let ids = [format!("{run}-1"), format!("{run}-2")];
    let batch: Vec<(String, String)> = ids
        .iter()
        .zip(1..)
        .map(|(id, second)| (id.clone(), event("org-unnoted", second)))
        .collect();
    // And two copies of a third, redriven under new ids: each is told by its own.
    let copies = [format!("{run}-copy-a"), format!("{run}-copy-b")];
    let third = event("org-unnoted", 3);
    let (outcome, logs) = with_captured_logs(|| async {
        let config = emulator().await;
        let client = aws_sdk_dynamodb::Client::new(&config);
        let table = create_table(&client, "EventsTable").await;
        // A configuration table that is not there: no project can be noted.
        let capture = Capture::new(
            EventTable::new(client.clone(), &table),
            ConfigTable::new(client, format!("{run}-missing")),
            Retention::default(),
        )
        .with_backoff(audit_log::retry::Backoff::NONE);
        let event = sqs_batch(batch.iter().map(|(id, body)| (id.clone(), body.as_str())));
        let mut records: Vec<audit_log_capture::Message> =
            event.records.into_iter().map(Into::into).collect();
        records.extend(
            copies
                .iter()
                .map(|id| carrying(id, &format!("{run}-first"), &third)),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        capture.capture(records, deadline).await
    });
    assert!(outcome.is_err(), "nothing stored: {outcome:?}");
    let told: Vec<&Value> = logs
        .iter()
        .filter(|l| l["fields"]["message"] == "audit event not stored")
        .collect();
    let told_ids: BTreeSet<&str> = told
        .iter()
        .map(|l| l["fields"]["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        told_ids,
        ids.iter().chain(&copies).map(String::as_str).collect()
    );
    for line in &told {
        let reason = line["fields"]["reason"].as_str().unwrap();
        assert!(reason.contains("could not be noted"), "{reason}");
        assert_eq!(line["fields"]["retryable"], true);
        assert_eq!(line["level"], "ERROR");
    }
}

/// One receive of the queue's messages as Lambda hands them over, attributes included.
async fn receive(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<aws_sdk_sqs::types::Message> {
    sqs.receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default()
}

/// The messages as capture's Lambda event from the queue `arn` gives them.
fn as_lambda_gives(
    messages: &[aws_sdk_sqs::types::Message],
    arn: &str,
) -> Vec<audit_log_capture::Message> {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), json!(v)))
                .collect();
            let message_attributes: serde_json::Map<String, Value> = m
                .message_attributes()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    let value = json!({"stringValue": v.string_value(), "stringListValues": [],
                                       "binaryListValues": [], "dataType": v.data_type()});
                    (k, value)
                })
                .collect();
            json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(),
                   "body": m.body(), "attributes": attributes,
                   "messageAttributes": message_attributes, "eventSource": "aws:sqs",
                   "eventSourceARN": arn})
        })
        .collect();
    let batch = json!({ "Records": records }).to_string();
    serde_json::from_str::<audit_log_capture::Messages>(&batch)
        .unwrap()
        .records
}

/// A new queue sized as the template's `logical` queue: its URL and ARN, and the largest
/// message it takes.
async fn queue_as_deployed(sqs: &aws_sdk_sqs::Client, logical: &str) -> (String, String, usize) {
    let largest =
        audit_log_tests::template()["Resources"][logical]["Properties"]["MaximumMessageSize"]
            .as_u64()
            .expect("a size") as usize;
    let url = sqs
        .create_queue()
        .queue_name(unique(logical))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
            largest.to_string(),
        )
        .send()
        .await
        .expect("queue")
        .queue_url
        .unwrap();
    let arn = audit_log_tests::queue_arn(sqs, &url).await;
    (url, arn, largest)
}

#[tokio::test]
async fn an_event_the_tables_refuse_past_its_third_receive_goes_round_and_is_stored_once() {
    // GIVEN the largest event that goes round (one whose copy on the retry queue, with
    // capture's attributes, a redrive of the dead-letter queue can put back on the events
    // queue), and the tables unreachable
    let config = emulator().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let (events_queue, events_arn, largest) = queue_as_deployed(&sqs, "EventsQueue").await;
    let (retry_queue, retry_arn, retry_largest) = queue_as_deployed(&sqs, "EventsRetryQueue").await;
    assert_eq!(largest, audit_log_capture::requeue::REDRIVABLE_BYTES);
    // SQS's message ids (the emulator's too) are UUIDs: 36 characters.
    let largest_sent_on = largest - audit_log_capture::requeue::size(0, &"0".repeat(36));
    let mut body: Value = serde_json::from_str(&event("org-outage", 7)).unwrap();
    body["padding"] = json!("");
    let padding = largest_sent_on - body.to_string().len();
    body["padding"] = json!("x".repeat(padding));
    let body = body.to_string();
    let sent = sqs
        .send_message()
        .queue_url(&events_queue)
        .message_body(&body)
        .message_group_id("org-outage")
        .send()
        .await
        .expect("send");
    let first_id = sent.message_id.unwrap();
    let unreachable = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .endpoint_url("http://127.0.0.1:9")
            .build(),
    );
    let retry = RetryQueue::new(sqs.clone(), &retry_queue).with_delay(0);
    let down = Capture::new(
        EventTable::new(unreachable.clone(), "events"),
        ConfigTable::new(unreachable, "config"),
        Retention::default(),
    )
    .with_backoff(audit_log::retry::Backoff::NONE)
    .with_requeue(retry.clone());
    // WHEN SQS hands it over three times while they stay down
    let mut first_sent = None;
    for receives in 1..=3 {
        let messages = receive(&sqs, &events_queue).await;
        assert_eq!(messages.len(), 1, "receive {receives}");
        let records = as_lambda_gives(&messages, &events_arn);
        assert_eq!(records[0].receives(), receives);
        first_sent = records[0].first_sent_ms(false);
        let deadline = Instant::now() + Duration::from_secs(5);
        let handle = messages[0].receipt_handle().unwrap();
        match down.capture(records, deadline).await {
            // THEN the first two times it is handed back, as SQS's redelivery retries it
            Err(CaptureError::EveryRecordFailed(1)) if receives < 3 => {
                sqs.change_message_visibility()
                    .queue_url(&events_queue)
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .unwrap();
            }
            // AND the third time it is sent on and answered as done, which Lambda deletes
            Ok(response) if receives == 3 => {
                assert!(response.batch_item_failures.is_empty());
                sqs.delete_message()
                    .queue_url(&events_queue)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .unwrap();
            }
            other => panic!("receive {receives}: {other:?}"),
        }
    }
    assert!(receive(&sqs, &events_queue).await.is_empty());
    // THEN a message on the retry queue carries it, with the first message's id and when it
    // was sent, in the organization's message group it came in
    let messages = receive(&sqs, &retry_queue).await;
    assert_eq!(messages.len(), 1);
    assert_ne!(messages[0].message_id(), Some(first_id.as_str()));
    assert_eq!(messages[0].body(), Some(body.as_str()));
    let group = aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId;
    let group = messages[0].attributes().and_then(|a| a.get(&group));
    assert_eq!(group.map(String::as_str), Some("org-outage"));
    // SQS counts a message's attributes toward its size (the emulator does not): the retry
    // queue, and the events queue it may be redriven to, have room for capture's beside it.
    let attributes: usize = messages[0]
        .message_attributes()
        .unwrap()
        .iter()
        .map(|(name, v)| name.len() + v.data_type().len() + v.string_value().map_or(0, str::len))
        .sum();
    assert!(attributes > 0 && body.len() + attributes <= largest.min(retry_largest));
    let records = as_lambda_gives(&messages, &retry_arn);
    assert_eq!(records[0].receives(), 1);
    assert_eq!(records[0].capture_id(), Some(first_id.as_str()));
    assert_eq!(records[0].first_sent_ms(true), first_sent);
    // AND once the tables are back it is stored under the first message's id
    let f = Fixture::new().await;
    let capture = Capture::new(
        EventTable::new(f.client.clone(), &f.table),
        ConfigTable::new(
            f.client.clone(),
            create_table(&f.client, "ConfigTable").await,
        ),
        Retention::default(),
    )
    .with_requeue(retry);
    let response = capture
        .capture(records, Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let items = f.items().await;
    assert_eq!(items.keys().collect::<Vec<_>>(), [&first_id]);
    let stored: Value = serde_json::from_str(&event_json(&items[&first_id]).unwrap()).unwrap();
    assert_eq!(stored, serde_json::from_str::<Value>(&body).unwrap());
}

/// A message on the events queue carrying capture's id attribute, as a redrive of the
/// dead-letter queue brings capture's own messages back there (with new ids), or as a producer
/// could send one.
fn carrying(id: &str, first: &str, body: &str) -> audit_log_capture::Message {
    serde_json::from_value(json!({
        "messageId": id,
        "body": body,
        "messageAttributes": {"capture-message-id": {"stringValue": first, "dataType": "String"}},
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events"
    }))
    .unwrap()
}

#[tokio::test]
async fn a_redriven_message_is_stored_once_under_its_first_id_and_overwrites_no_other_event() {
    let f = Fixture::new().await;
    let run = unique("redriven");
    let first = format!("{run}-first");
    let body = event("org-r", 1);
    let deadline = || Instant::now() + Duration::from_secs(20);
    // GIVEN an event stored under its first message's id
    let response = f.capture(&[(first.clone(), body.clone())]).await.unwrap();
    assert!(failed_ids::<Vec<String>>(&response).is_empty());
    // WHEN copies of it come back on the events queue under new ids, one batch each
    for copy in ["x1", "x2"] {
        let batch = vec![carrying(&format!("{run}-{copy}"), &first, &body)];
        let response = f.capture.capture(batch, deadline()).await.unwrap();
        assert!(failed_ids::<Vec<String>>(&response).is_empty());
    }
    // THEN it is still stored once
    assert_eq!(f.items().await.keys().collect::<Vec<_>>(), [&first]);
    // AND a message claiming that id for another event under the same key is refused, and
    // leaves the stored event as it was
    let mut other: Value = serde_json::from_str(&body).unwrap();
    other["description"] = json!("rewritten history");
    let batch = vec![
        carrying(&format!("{run}-x3"), &first, &other.to_string()),
        audit_log_capture::Message::new(&format!("{run}-plain"), &event("org-r", 2)),
    ];
    let response = f.capture.capture(batch, deadline()).await.unwrap();
    assert_eq!(failed_ids::<Vec<String>>(&response), [format!("{run}-x3")]);
    let items = f.items().await;
    let stored: Value = serde_json::from_str(&event_json(&items[&first]).unwrap()).unwrap();
    assert_eq!(stored, serde_json::from_str::<Value>(&body).unwrap());
    // AND an event claiming an id nothing is stored under is stored under it
    let never = format!("{run}-never");
    let batch = vec![carrying(&format!("{run}-x4"), &never, &event("org-r", 3))];
    let response = f.capture.capture(batch, deadline()).await.unwrap();
    assert!(failed_ids::<Vec<String>>(&response).is_empty());
    let mut ids: Vec<String> = f.items().await.into_keys().collect();
    ids.sort();
    let mut expected = vec![first, never, format!("{run}-plain")];
    expected.sort();
    assert_eq!(ids, expected);
}
