//! The configuration item's keys and layout.

use super::*;

#[test]
fn keys_separate_organizations_and_projects() {
    let a = key("org#1", "p");
    let b = key("org", "1#p");
    assert_ne!(a, b);
    assert_eq!(a["pk"].as_s().unwrap(), "org%231");
    assert_eq!(a["sk"].as_s().unwrap(), "project#p");
}

fn saved_at_version_3() -> StreamingConfig {
    StreamingConfig {
        organization_id: "o".into(),
        project_id: "p".into(),
        name: "prod-audit".into(),
        destination: Destination::Cloudwatch(crate::destination::CloudWatchSettings {
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            region: "us-west-2".into(),
        }),
        api_key_last4: None,
        secret_version: Some("0123456789abcdef0123456789abcdef".into()),
        version: 3,
        updated_at: "2026-01-01T00:00:00Z".into(),
        saved_by: Some("0123456789abcdef0123456789abcdef".into()),
        health: Health {
            last_success_at: Some("2026-01-01T00:00:00Z".into()),
            last_failure_at: Some("2026-01-01T00:00:05Z".into()),
            last_error: Some("Datadog answered HTTP 503".into()),
            failing_since: Some("2026-01-01T00:00:05Z".into()),
            last_failure_permanent: true,
            hours: vec![(493_000, 12, 3), (493_001, 0, 4)],
        },
        // The lane knows the version it was read with.
        lane: Lane {
            version: 3,
            ..Lane::default()
        },
    }
}

#[test]
fn a_configuration_survives_its_item_round_trip() {
    let config = saved_at_version_3();
    let item = config.to_item().unwrap();
    assert_eq!(StreamingConfig::from_item(&item).unwrap(), config);
    // The names items have always had, so items saved before read as they were.
    assert_eq!(item[attr::PROVIDER].as_s().unwrap(), "cloudwatch");
    assert_eq!(
        item[attr::ROLE_ARN].as_s().unwrap(),
        "arn:aws:iam::123456789012:role/r"
    );
    assert_eq!(item[attr::VERSION].as_n().unwrap(), "3");
    assert_eq!(item["hour_16"].as_n().unwrap(), "493000");
    assert!(!item.contains_key(attr::API_KEY_LAST4));

    let mut datadog = config.clone();
    datadog.destination = Destination::Datadog(crate::destination::DatadogSettings {
        site: crate::destination::DatadogSite::Eu1,
    });
    datadog.api_key_last4 = Some("cdef".into());
    datadog.health = Health::default();
    datadog.lane.state = crate::lane::LaneState::Retrying;
    let mut item = datadog.to_item().unwrap();
    assert_eq!(item[attr::SITE].as_s().unwrap(), "datadoghq.eu");
    // The lane's attributes share the item and are the lane's alone.
    item.insert(
        lanes::attr::STATE.into(),
        AttributeValue::S("retrying".into()),
    );
    assert_eq!(StreamingConfig::from_item(&item).unwrap(), datadog);
}

#[test]
fn a_damaged_configuration_is_reported_not_guessed() {
    let config = StreamingConfig::from_item(&key("o", "p"));
    assert!(matches!(config, Err(ConfigError::Corrupt(_))));
}

#[test]
fn a_replay_stores_nothing_for_what_it_lacks_and_reads_older_items() {
    let replay = Replay {
        replay_id: "r-1".into(),
        organization_id: "o".into(),
        project_id: "p".into(),
        state: ReplayState::Running,
        since: "2026-01-01T00:00:00Z".into(),
        until: "2026-01-02T00:00:00Z".into(),
        only_failed: true,
        cursor: None,
        saves: 3,
        paused: false,
        delivered: 7,
        failed: 1,
        created_at: "2026-01-02T00:00:00Z".into(),
        updated_at: "2026-01-02T00:00:01Z".into(),
        finished_at: None,
        last_error: None,
    };
    let now = time::macros::datetime!(2026-01-02 00:00:01 UTC);
    let item = replay.to_item(now).unwrap();
    assert!(
        item.values().all(|v| !v.is_null()),
        "no NULL attributes: {item:?}"
    );
    assert!(!item.contains_key("finished_at") && !item.contains_key("cursor"));
    assert_eq!(Replay::from_item(&item).unwrap(), replay);

    // An item written before replays kept their counts and filter.
    let mut older = item.clone();
    for name in ["delivered", "failed", "only_failed", "saves"] {
        older.remove(name);
    }
    let read = Replay::from_item(&older).unwrap();
    assert_eq!(
        (read.delivered, read.failed, read.only_failed, read.saves),
        (0, 0, false, 0)
    );
}

#[test]
fn a_project_cut_to_fit_its_key_is_read_from_its_item() {
    let long = "😀".repeat(255);
    let keys = key("o#1", &long);
    // The index's keys alone do not name it, and say so.
    assert!(!names_its_project_in_full(&keys));
    assert_eq!(project_of_key(&keys), None);
    let mut item = keys.clone();
    item.insert(attr::ORGANIZATION_ID.into(), s("o#1"));
    item.insert(attr::PROJECT_ID.into(), s(&long));
    assert_eq!(project_of_key(&item), Some(("o#1".into(), long)));
    // A project that fits is read from the keys, as it always was.
    let short = key("o#1", "p%2");
    assert!(names_its_project_in_full(&short));
    assert_eq!(project_of_key(&short), Some(("o#1".into(), "p%2".into())));
}

/// The project's configuration deleted (at `if_version`, when given) by a write that landed
/// though its answer was lost (HTTP 500), which DynamoDB answers as done when the SDK sends it
/// again with its token (made once per call, before its attempts); with the token the write
/// carried and how many times it was sent.
async fn delete_answered_late(
    if_version: Option<u64>,
) -> (
    Result<Option<StreamingConfig>, ConfigError>,
    Option<String>,
    usize,
) {
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
    use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use std::sync::{Arc, Mutex};
    let item = saved_at_version_3().to_item().unwrap();
    let read = mock!(Client::get_item).then_output(move || {
        GetItemOutput::builder()
            .set_item(Some(item.clone()))
            .build()
    });
    let noted = mock!(Client::update_item).then_output(|| UpdateItemOutput::builder().build());
    let token = Arc::new(Mutex::new(None));
    let seen = token.clone();
    let delete = mock!(Client::transact_write_items)
        .match_requests(move |r| {
            let deletes = r.transact_items().iter().filter(|i| i.delete().is_some());
            assert_eq!((deletes.count(), r.transact_items().len()), (1, 1));
            *seen.lock().unwrap() = r.client_request_token().map(str::to_owned);
            true
        })
        .sequence()
        .http_response(|| {
            HttpResponse::new(
                StatusCode::try_from(500).unwrap(),
                SdkBody::from(r#"{"__type":"InternalServerError","message":"m"}"#),
            )
        })
        .output(|| TransactWriteItemsOutput::builder().build())
        .build();
    let table = ConfigTable::new(
        mock_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&read, &noted, &delete]
        ),
        "config",
    );
    let deleted = table.delete("o", "p", if_version).await;
    let token = token.lock().unwrap().clone();
    (deleted, token, delete.num_calls())
}

// Paused: the SDK's own retry of the lost answer waits on tokio's clock.
#[tokio::test(start_paused = true)]
async fn a_delete_sent_again_after_it_landed_counts_as_deleted() {
    // Not a 412 for its own write, nor "nothing was saved": the caller goes on to delete the
    // credentials and write the audit entry.
    let deleted = StreamingConfig::from_item(&saved_at_version_3().to_item().unwrap());
    for if_version in [Some(3), None] {
        let (answer, token, sent) = delete_answered_late(if_version).await;
        assert_eq!(answer, deleted.clone().map(Some), "{if_version:?}");
        // Sent again, with a token: what makes DynamoDB answer it as the same delete.
        assert_eq!(sent, 2);
        assert!(token.is_some_and(|t| !t.is_empty()));
    }
}
