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
fn owed_keys_of_the_widest_project_and_longest_message_ids_fit_and_differ() {
    // 880 bytes percent-encoded: the widest part an id had before, kept as it was.
    let project = "é".repeat(146) + "abcd";
    assert_eq!(sort_key_part(&project).len(), crate::id::MAX_ID_KEY_BYTES);
    let owed = |id: &str| Owed {
        event: StoredKey {
            sort_key: format!("2026-01-01T00:00:00.000000000Z#{id}"),
            message_id: id.into(),
            expires_at: 0,
        },
        owed_at_ms: 1_767_225_600_000,
        bytes: 1,
    };
    let (one, two) = ("m".repeat(99) + "1", "m".repeat(99) + "2");
    let (one, two) = (
        owed_sort_key(&project, &owed(&one)),
        owed_sort_key(&project, &owed(&two)),
    );
    assert!(one.len() <= 1_024 && two.len() <= 1_024, "{}", one.len());
    assert_ne!(one, two);
    assert!(one.starts_with(&prefix(&project)));
    // Keys that fit are as they always were.
    let short = owed_sort_key("p", &owed("m-1"));
    assert_eq!(
        short,
        "owed#p#1767225600000#2026-01-01T00:00:00.000000000Z#m-1"
    );
}

#[test]
fn a_configuration_saved_before_lanes_delivers() {
    assert_eq!(lane_of(&HashMap::new()), Lane::default());
}

mod owe {
    use super::*;
    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::batch_write_item::{
        BatchWriteItemError, BatchWriteItemInput, BatchWriteItemOutput,
    };
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use std::sync::{Arc, Mutex};

    /// The sort keys of the request's puts, or of its deletes.
    fn keys_of(r: &BatchWriteItemInput, puts: bool) -> Vec<String> {
        let requests = r.request_items().unwrap().values().flatten();
        requests
            .filter_map(|w| match (puts, w.put_request(), w.delete_request()) {
                (true, Some(p), _) => Some(p.item()[crate::store::attr::SORT_KEY].clone()),
                (false, _, Some(d)) => Some(d.key()[crate::store::attr::SORT_KEY].clone()),
                _ => None,
            })
            .map(|sk| sk.as_s().unwrap().clone())
            .collect()
    }

    fn thirty_owed() -> Vec<Owed> {
        (0..30)
            .map(|i| Owed {
                event: StoredKey {
                    sort_key: format!("2026-01-01T00:00:00.000000000Z#m-{i:02}"),
                    message_id: format!("m-{i:02}"),
                    expires_at: 0,
                },
                owed_at_ms: 1_000,
                bytes: 1,
            })
            .collect()
    }

    // Paused: the SDK's own retries of the refused batch wait on tokio's clock.
    #[tokio::test(start_paused = true)]
    async fn owed_events_partly_written_when_a_write_fails_are_taken_back() {
        // 30 owed events: a batch of 25 is written, the batch of 5 is refused.
        let owed = thirty_owed();
        let refused = mock!(Client::batch_write_item)
            .match_requests(|r| keys_of(r, true).len() == 5)
            .then_error(|| {
                BatchWriteItemError::generic(
                    ErrorMetadata::builder()
                        .code("ProvisionedThroughputExceededException")
                        .build(),
                )
            });
        let deleted = Arc::new(Mutex::new(Vec::new()));
        let seen = deleted.clone();
        let written = mock!(Client::batch_write_item).then_compute_output(move |r| {
            seen.lock().unwrap().extend(keys_of(r, false));
            BatchWriteItemOutput::builder().build()
        });
        let table = ConfigTable::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&refused, &written]),
            "config",
        );
        let lane = LaneKey::new("o", "p");
        assert!(table.owe(&lane, &owed, None).await.is_err());
        let mut deleted = deleted.lock().unwrap().clone();
        deleted.sort();
        let every: Vec<String> = owed.iter().map(|o| owed_sort_key("p", o)).collect();
        assert_eq!(deleted, every, "every owed item taken back");
    }

    // Paused: the backoffs wait on tokio's clock.
    #[tokio::test(start_paused = true)]
    async fn an_owe_throttled_throughout_holds_its_caller_one_patience_not_two() {
        let owed = thirty_owed();
        // The organization's partition takes nothing: every write comes back unprocessed.
        let throttled = mock!(Client::batch_write_item).then_compute_output(|r| {
            BatchWriteItemOutput::builder()
                .set_unprocessed_items(r.request_items().cloned())
                .build()
        });
        let table = ConfigTable::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&throttled]),
            "config",
        );
        let started = tokio::time::Instant::now();
        assert!(
            table
                .owe(&LaneKey::new("o", "p"), &owed, None)
                .await
                .is_err()
        );
        // The write spent the patience (giving up when its next backoff would outlast it);
        // its take-back was tried, briefly.
        let took = started.elapsed();
        assert!(
            took >= crate::streaming::failures::UNPROCESSED_PATIENCE - TAKE_BACK_AT_LEAST,
            "{took:?}"
        );
        assert!(
            took <= crate::streaming::failures::UNPROCESSED_PATIENCE + TAKE_BACK_AT_LEAST,
            "{took:?}"
        );
        let deletes = throttled.num_calls();
        assert!(deletes > 2, "{deletes}");
    }

    /// DynamoDB that takes every batch of writes and never answers an `UpdateItem`.
    #[derive(Debug)]
    struct CountsGetNoAnswer;

    mod silent {
        use aws_smithy_runtime_api::client::http::{
            HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings,
            SharedHttpConnector,
        };
        use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
        use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;

        impl HttpConnector for super::CountsGetNoAnswer {
            fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
                let target = request.headers().get("x-amz-target").unwrap_or_default();
                if target.ends_with(".UpdateItem") {
                    return HttpConnectorFuture::new(std::future::pending());
                }
                let taken =
                    HttpResponse::new(StatusCode::try_from(200).unwrap(), SdkBody::from("{}"));
                HttpConnectorFuture::ready(Ok(taken))
            }
        }

        impl HttpClient for super::CountsGetNoAnswer {
            fn http_connector(
                &self,
                _: &HttpConnectorSettings,
                _: &RuntimeComponents,
            ) -> SharedHttpConnector {
                SharedHttpConnector::new(super::CountsGetNoAnswer)
            }
        }
    }

    // Paused: the SDK's attempt timeouts wait on tokio's clock.
    #[tokio::test(start_paused = true)]
    async fn an_owe_whose_count_gets_no_answer_holds_its_caller_one_patience() {
        // The functions' own settings: three attempts, each cut after 10 seconds.
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .retry_config(crate::sdk::standard_retries())
            .timeout_config(crate::sdk::attempts_cut_at(crate::sdk::ATTEMPT_TIMEOUT))
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "id", "secret", None, None, "test",
            ))
            .http_client(aws_smithy_runtime_api::client::http::SharedHttpClient::new(
                CountsGetNoAnswer,
            ))
            .build();
        let table = ConfigTable::new(Client::from_conf(config), "config");
        let started = tokio::time::Instant::now();
        let owed = table
            .owe(&LaneKey::new("o", "p"), &thirty_owed(), None)
            .await;
        assert!(owed.is_err(), "{owed:?}");
        // Written, not counted within the patience, taken back: not the SDK's 30 seconds.
        let took = started.elapsed();
        assert!(
            took >= crate::streaming::failures::UNPROCESSED_PATIENCE
                && took <= crate::streaming::failures::UNPROCESSED_PATIENCE + TAKE_BACK_AT_LEAST,
            "{took:?}"
        );
    }
}

mod sweep {
    use super::*;
    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::query::{QueryError, QueryOutput};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn refused(message: &'static str) -> QueryError {
        QueryError::generic(
            ErrorMetadata::builder()
                .code("ValidationException")
                .message(message)
                .build(),
        )
    }

    /// A lane as the keys-only index gives it: its keys and when its call was due.
    fn indexed(
        organization_id: &str,
        project_id: &str,
        due_ms: i64,
    ) -> HashMap<String, AttributeValue> {
        let mut item = key(organization_id, project_id);
        item.insert(attr::NEXT_ATTEMPT_AT.into(), n(due_ms));
        item
    }

    #[tokio::test]
    async fn lanes_are_found_in_every_shard_of_every_state_but_delivering_and_by_their_keys() {
        let asked = mock!(Client::query)
            .match_requests(|r| {
                r.index_name() == Some(LANES_BY_NEXT_ATTEMPT)
                    && r.expression_attribute_values().unwrap()[":before"] == n(1_000)
            })
            .then_compute_output(|r| {
                let state = r.expression_attribute_values().unwrap()[":state"].clone();
                let items = match state.as_s().unwrap().as_str() {
                    "retrying#00" => vec![indexed("org#1", "p%1", 10)],
                    "retrying#15" => vec![indexed("o", "q", 20)],
                    // Stored before shards.
                    "paused" => vec![indexed("o", "r", 40)],
                    "refused#07" => vec![indexed("o", "s", 30)],
                    _ => vec![],
                };
                QueryOutput::builder().set_items(Some(items)).build()
            });
        let table = ConfigTable::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&asked]),
            "config",
        );
        let found = table.overdue(1_000, 10).await.unwrap();
        // Organizations take turns, the most overdue first within a turn.
        assert_eq!(
            found,
            [
                LaneKey::new("org#1", "p%1"),
                LaneKey::new("o", "q"),
                LaneKey::new("o", "s"),
                LaneKey::new("o", "r"),
            ]
        );
        // Every shard of every state a lane waits in and its key from before shards,
        // delivering never.
        assert_eq!(asked.num_calls(), 4 * 17);
        // At most the limit, each organization's first turn before anyone's second.
        assert_eq!(
            table.overdue(1_000, 2).await.unwrap(),
            [LaneKey::new("org#1", "p%1"), LaneKey::new("o", "q")]
        );
    }

    #[tokio::test]
    async fn a_partition_that_cannot_be_read_holds_back_none_of_the_others() {
        let asked = mock!(Client::query).then_compute_output(|r| {
            let state = r.expression_attribute_values().unwrap()[":state"].clone();
            let items = match state.as_s().unwrap().as_str() {
                "retrying#03" => vec![indexed("o", "q", 20)],
                _ => vec![],
            };
            QueryOutput::builder().set_items(Some(items)).build()
        });
        let failing = mock!(Client::query)
            .match_requests(|r| {
                r.expression_attribute_values().unwrap()[":state"] == s("catching_up#01")
            })
            .then_error(|| refused("the partition is unreachable"));
        let table = ConfigTable::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&failing, &asked]),
            "config",
        );
        assert_eq!(
            table.overdue(1_000, 10).await.unwrap(),
            [LaneKey::new("o", "q")]
        );
        assert_eq!(failing.num_calls(), 1);
        assert_eq!(asked.num_calls(), 4 * 17 - 1);
    }

    #[tokio::test]
    async fn an_index_still_being_built_finds_nothing_and_other_failures_are_errors() {
        let building = mock!(Client::query).then_error(|| {
            refused("Cannot read from backfilling global secondary index: lanes-by-next-attempt")
        });
        let table = ConfigTable::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&building]),
            "config",
        );
        assert_eq!(table.overdue(1_000, 10).await.unwrap(), []);
        let missing = mock!(Client::query)
            .then_error(|| refused("The table does not have the specified index"));
        let table = ConfigTable::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&missing]),
            "config",
        );
        assert!(table.overdue(1_000, 10).await.is_err());
    }
}

mod lost_answers {
    use super::*;
    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    fn answer(status: u16, kind: &str) -> HttpResponse {
        HttpResponse::new(
            StatusCode::try_from(status).unwrap(),
            SdkBody::from(format!(r#"{{"__type":"{kind}","message":"m"}}"#)),
        )
    }

    /// A lane write whose first attempt lands but is answered 500, so that the SDK's retry
    /// fails its condition; the lane then read waits for `found`. What `update` and
    /// `update_from` answer.
    async fn written_late(found: &'static str) -> (bool, bool) {
        let write = || {
            mock!(Client::update_item)
                .sequence()
                .http_response(|| answer(500, "InternalServerError"))
                .http_response(|| answer(400, "ConditionalCheckFailedException"))
                .build()
        };
        let read = mock!(Client::get_item).then_output(move || {
            let lane = Lane {
                state: LaneState::Paused,
                attempt: Some(found.into()),
                ..Lane::default()
            };
            let key = LaneKey::new("o", "p");
            let item = super::super::key("o", "p")
                .into_iter()
                .chain(attributes(&key, &lane))
                .collect();
            GetItemOutput::builder().set_item(Some(item)).build()
        });
        let key = LaneKey::new("o", "p");
        let to = Lane {
            state: LaneState::Paused,
            attempt: Some("a2".into()),
            ..Lane::default()
        };
        let (by_state, by_attempt) = (write(), write());
        let table = ConfigTable::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&by_state, &read]),
            "config",
        );
        let from = table
            .update_from(&key, &[LaneState::Delivering], &to)
            .await
            .unwrap();
        let table = ConfigTable::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&by_attempt, &read]),
            "config",
        );
        let held = table.update(&key, "a1", &to).await.unwrap();
        assert_eq!((by_state.num_calls(), by_attempt.num_calls()), (2, 2));
        (from, held)
    }

    // Paused: the SDK's own retry of the lost answer waits on tokio's clock.
    #[tokio::test(start_paused = true)]
    async fn a_lane_write_retried_by_the_sdk_after_it_landed_counts_as_written() {
        // A pause whose answer was lost is a pause (the api writes its audit event), a call's
        // lease is its own (the call goes on instead of leaving the lane to the lease).
        assert_eq!(written_late("a2").await, (true, true));
        // Another writer's attempt: the condition failed for real.
        assert_eq!(written_late("a3").await, (false, false));
    }
}
