//! POST /streaming/test: Test connection, for the saved destination and for unsaved settings.

use super::*;

#[tokio::test]
async fn testing_the_saved_cloudwatch_destination_writes_to_the_test_log_group() {
    let w = World::new().await;
    w.put(cloudwatch()).await;
    let reply = w.call("POST", "/streaming/test", None).await;
    assert_eq!(reply.status, 200);
    let group = format!("{}/packer/audit-logs-test", w.log_group_prefix);
    assert_eq!(reply.body["success"], true, "{}", reply.body);
    assert_eq!(reply.body["provider"], "cloudwatch");
    assert_eq!(reply.body["log_group"], group.as_str());

    // In the customer's account (the role's), one test event.
    let logs = audit_log_tests::customer_logs(&w.aws, ROLE_ARN, "us-west-2").await;
    let events = logs
        .get_log_events()
        .log_group_name(&group)
        .log_stream_name(&w.project)
        .send()
        .await
        .unwrap()
        .events
        .unwrap_or_default();
    assert_eq!(events.len(), 1);
    let message: Value = serde_json::from_str(events[0].message.as_deref().unwrap()).unwrap();
    assert_eq!(message["description"], "Test connection");
    assert_eq!(message["organization_id"], w.org.as_str());
}

#[tokio::test]
async fn a_role_that_refuses_the_service_is_reported_in_words_to_act_on() {
    let refused = aws_smithy_mocks::mock!(aws_sdk_sts::Client::assume_role).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(403).unwrap(),
            aws_smithy_types::body::SdkBody::from(
                "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>no</Message></Error></ErrorResponse>",
            ),
        )
    });
    let sts = aws_smithy_mocks::mock_client!(
        aws_sdk_sts,
        aws_smithy_mocks::RuleMode::MatchAny,
        [&refused]
    );
    let w = World::with(|api| api.with_customer_sts(sts)).await;
    let reply = w.call("POST", "/streaming/test", Some(cloudwatch())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["success"], false);
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("trust policy")
            && message.contains("123456789012")
            && message.contains(ROLE_ARN),
        "{message}"
    );
    let external_id = w.get().await.body["external_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!message.contains(&external_id));
}

/// Datadog's intake answers requests with `key` with `status`.
async fn intake_answers(w: &World, key: &str, status: u16) {
    w.mount(
        intake()
            .and(header("DD-API-KEY", key))
            .respond_with(ResponseTemplate::new(status)),
    )
    .await;
}

#[tokio::test]
async fn testing_datadog_validates_the_key_and_sends_a_test_log() {
    let w = World::new().await;
    w.mount(
        validate()
            .and(header("DD-API-KEY", KEY))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"valid": true}))),
    )
    .await;
    intake_answers(&w, KEY, 202).await;
    let reply = w
        .call("POST", "/streaming/test", Some(datadog(Some(KEY))))
        .await;
    assert_eq!(reply.body["success"], true, "{}", reply.body);
    assert_eq!(reply.body["provider"], "datadog");
    assert!(reply.body.get("log_group").is_none());
    assert_eq!(w.datadog.received_requests().await.unwrap().len(), 2);
    assert_eq!(w.get().await.body["version"], 0, "testing saves nothing");
    // A test needs no name (a form is often tested before it is named); a save does.
    let mut unnamed = datadog(Some(KEY));
    unnamed.as_object_mut().unwrap().remove("name");
    let reply = w
        .call("POST", "/streaming/test", Some(unnamed.clone()))
        .await;
    assert_eq!(reply.body["success"], true, "{}", reply.body);
    assert_eq!(w.datadog.received_requests().await.unwrap().len(), 4);
    let refused = w.call("PUT", "/streaming", Some(unnamed)).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "missing_field");
    assert_eq!(w.get().await.body["version"], 0);
}

#[tokio::test]
async fn a_receiver_of_logs_only_is_tested_by_the_test_log() {
    // Datadog's validate call is unknown at the endpoint (a receiver that takes
    // `POST /api/v2/logs` alone): the log decides, either way.
    let w = World::new().await;
    intake_answers(&w, KEY, 202).await;
    let reply = w
        .call("POST", "/streaming/test", Some(datadog(Some(KEY))))
        .await;
    assert_eq!(reply.body["success"], true, "{}", reply.body);
    assert_eq!(
        reply.body["message"],
        "Datadog accepted a test log on datadoghq.eu."
    );
    let other = "0123456789abcdef0123456789abcdef";
    intake_answers(&w, other, 403).await;
    let reply = w
        .call("POST", "/streaming/test", Some(datadog(Some(other))))
        .await;
    assert_eq!(reply.body["success"], false, "{}", reply.body);
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("The test log was not accepted") && !message.contains(other),
        "{message}"
    );
}

#[tokio::test]
async fn a_test_without_a_key_uses_the_saved_one() {
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    w.mount(
        validate()
            .and(header("DD-API-KEY", KEY))
            .respond_with(ResponseTemplate::new(200)),
    )
    .await;
    intake_answers(&w, KEY, 202).await;
    let unsaved = w.call("POST", "/streaming/test", Some(datadog(None))).await;
    assert_eq!(unsaved.body["success"], true, "{}", unsaved.body);
    let saved = w.call("POST", "/streaming/test", None).await;
    assert_eq!(saved.body["success"], true, "{}", saved.body);
    // Clients that always send JSON say "nothing" as `{}` or `null`: the saved one is tested.
    for nothing in [json!({}), Value::Null] {
        let saved = w.call("POST", "/streaming/test", Some(nothing)).await;
        assert_eq!(saved.status, 200, "{}", saved.body);
        assert_eq!(saved.body["provider"], "datadog", "{}", saved.body);
    }
}

#[tokio::test]
async fn a_saved_destination_that_passes_is_tried_at_once_and_a_new_key_that_passes_is_not_it() {
    use audit_log::lane::{LaneKey, LaneStore, Owing};
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    let other = "0123456789abcdef0123456789abcdef";
    for key in [KEY, other] {
        intake_answers(&w, key, 202).await;
    }
    // The lane retrying, its next call 40 seconds away.
    let now_ms = audit_log::clock::epoch_ms(OffsetDateTime::now_utc());
    let owed = [owed(1, now_ms)];
    let retrying = retrying(now_ms, now_ms);
    let key = LaneKey::new(&w.org, &w.project);
    let owing = w.configs.owe(&key, &owed, Some(&retrying)).await.unwrap();
    assert_eq!(owing, Owing::Owed);
    let next_attempt = async |w: &World| {
        let lane = w.configs.read(&LaneKey::new(&w.org, &w.project)).await;
        lane.unwrap().unwrap().next_attempt_at
    };
    // A key not saved passes on the saved site: it says nothing of the saved key.
    let unsaved = w
        .call("POST", "/streaming/test", Some(datadog(Some(other))))
        .await;
    assert_eq!(unsaved.body["success"], true, "{}", unsaved.body);
    assert_eq!(next_attempt(&w).await, Some(now_ms + 40_000));
    // The saved destination passes: its lane calls at once.
    let saved = w.call("POST", "/streaming/test", None).await;
    assert_eq!(saved.body["success"], true, "{}", saved.body);
    assert!(next_attempt(&w).await.unwrap() < now_ms + 40_000);
}

#[tokio::test]
async fn a_key_datadog_refuses_is_a_failed_test_not_an_error() {
    let w = World::new().await;
    w.mount(validate().respond_with(
        ResponseTemplate::new(403).set_body_string("{\"errors\":[\"Forbidden sentinel body\"]}"),
    ))
    .await;
    let reply = w
        .call("POST", "/streaming/test", Some(datadog(Some(KEY))))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["success"], false);
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("API key") && message.contains("datadoghq.eu"),
        "{message}"
    );
    assert!(!message.contains(KEY) && !message.contains("sentinel"));
}

#[tokio::test]
async fn an_unreachable_datadog_is_a_failed_test_not_an_error() {
    // Bound and never listening, for the whole test: connections to it are refused, and no
    // other test's server can be given its port meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = socket.local_addr().unwrap().port();
    let w = World::with(move |api| {
        api.with_datadog(DatadogClient::with_timeout(
            Some(format!("http://127.0.0.1:{closed}")),
            Duration::from_secs(1),
        ))
    })
    .await;
    let reply = w
        .call("POST", "/streaming/test", Some(datadog(Some(KEY))))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["success"], false);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("Could not reach"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn testing_with_nothing_saved_and_no_body_is_404() {
    let w = World::new().await;
    let reply = w.call("POST", "/streaming/test", None).await;
    assert_eq!(reply.status, 404);
}

#[tokio::test]
async fn more_than_ten_tests_a_minute_are_refused_with_429() {
    // Eleven tests a second apart, all in one minute of the api's clock.
    let clock = minute_clock();
    let w = World::with({
        let clock = clock.clone();
        move |api| api.with_clock(clock)
    })
    .await;
    w.mount(validate().respond_with(ResponseTemplate::new(200)))
        .await;
    w.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    for i in 0..10 {
        clock.advance(Duration::from_secs(1));
        let reply = w
            .call("POST", "/streaming/test", Some(datadog(Some(KEY))))
            .await;
        assert_eq!(reply.status, 200, "test {i}");
    }
    clock.advance(Duration::from_secs(1));
    let limited = w
        .call("POST", "/streaming/test", Some(datadog(Some(KEY))))
        .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    let retry_after: u64 = limited
        .headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        retry_after, 49,
        "the minute's window closes 49 s after the eleventh test"
    );
    let other = unique("other-org");
    let theirs = w
        .call_as(
            Some(&other),
            &other,
            "POST",
            "/streaming/test",
            &[],
            &[],
            Some(&datadog(Some(KEY)).to_string()),
        )
        .await;
    assert_eq!(theirs.status, 200, "the limit is per organization");
}

#[tokio::test]
async fn the_last_ten_connection_tests_are_kept_newest_first() {
    let clock = minute_clock();
    let w = World::with({
        let clock = clock.clone();
        move |api| api.with_clock(clock)
    })
    .await;
    w.mount(
        validate()
            .respond_with(ResponseTemplate::new(403))
            .up_to_n_times(2),
    )
    .await;
    w.mount(validate().respond_with(ResponseTemplate::new(200)))
        .await;
    w.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    assert_eq!(
        w.call("GET", "/streaming/tests", None).await.body,
        json!({"tests": []})
    );
    for _ in 0..10 {
        clock.advance(Duration::from_secs(1));
        w.call("POST", "/streaming/test", Some(datadog(Some(KEY))))
            .await;
    }
    let listed = w.call("GET", "/streaming/tests", None).await;
    assert_eq!(listed.status, 200);
    let tests = listed.body["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 10);
    let outcomes: Vec<bool> = tests
        .iter()
        .map(|t| t["success"].as_bool().unwrap())
        .collect();
    assert_eq!(
        &outcomes[8..],
        [false, false],
        "the two oldest were refused"
    );
    assert!(outcomes[..8].iter().all(|&ok| ok));
    assert!(
        tests[9]["message"]
            .as_str()
            .unwrap()
            .contains("refused the API key")
    );
    let times: Vec<&str> = tests
        .iter()
        .map(|t| t["tested_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let newest_before = times[0].to_owned();

    // An eleventh test (in the next minute, past the rate limit's) pushes the oldest out.
    clock.advance(Duration::from_secs(61));
    let eleventh = w
        .call("POST", "/streaming/test", Some(datadog(Some(KEY))))
        .await;
    assert_eq!(eleventh.body["success"], true, "{}", eleventh.body);
    let tests = w.call("GET", "/streaming/tests", None).await.body["tests"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(tests.len(), 10);
    assert!(tests[0]["tested_at"].as_str().unwrap() > newest_before.as_str());
    assert_eq!(tests[0]["success"], true);
    let refused = tests.iter().filter(|t| t["success"] == false).count();
    assert_eq!(refused, 1, "only the newer of the two refused ones is kept");
    assert_eq!(tests[9]["success"], false);
}
