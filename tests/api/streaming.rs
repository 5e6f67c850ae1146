//! GET, PUT and DELETE /streaming: the saved destination, its secret, its version and the
//! organization's External ID.

use super::*;

#[tokio::test]
async fn before_anything_is_saved_the_view_shows_who_to_trust_and_no_destination() {
    let w = World::new().await;
    let first = w.get().await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["destination"], Value::Null);
    assert_eq!(
        first.body["aws_account_id"], "123456789012",
        "the emulator's own account"
    );
    assert_eq!(first.body["version"], 0);
    assert_eq!(first.body["health"]["status"], "unknown");
    let external_id = first.body["external_id"].as_str().unwrap().to_owned();
    assert_eq!(external_id.len(), 32);
    assert_eq!(
        w.get().await.body["external_id"],
        external_id.as_str(),
        "stable"
    );
    assert_eq!(first.headers.get("etag").unwrap(), "\"0\"");
}

#[tokio::test]
async fn concurrent_first_requests_agree_on_one_external_id() {
    let w = World::new().await;
    let replies = futures_join(&w).await;
    let ids: BTreeSet<String> = replies
        .iter()
        .map(|r| r.body["external_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1);
}

async fn futures_join(w: &World) -> Vec<Reply> {
    let (a, b, c, d) = tokio::join!(w.get(), w.get(), w.get(), w.get());
    vec![a, b, c, d]
}

#[tokio::test]
async fn organizations_get_different_external_ids() {
    let w = World::new().await;
    let mine = w.get().await.body["external_id"].clone();
    let other = unique("other-org");
    let theirs = w
        .call_as(Some(&other), &other, "GET", "/streaming", &[], &[], None)
        .await;
    assert_ne!(theirs.body["external_id"], mine);
}

#[tokio::test]
async fn saving_cloudwatch_stores_the_role_with_the_organizations_external_id() {
    let w = World::new().await;
    let external_id = w.get().await.body["external_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let saved = w.put(cloudwatch()).await;
    assert_eq!(saved.status, 200);
    assert_eq!(
        saved.body["destination"],
        json!({"provider": "cloudwatch", "name": "prod-audit", "cloudwatch": {"role_arn": ROLE_ARN, "region": "us-west-2"}})
    );
    assert_eq!(saved.body["version"], 1);
    assert_eq!(saved.body["external_id"], external_id.as_str());
    match w.stored_credentials().await.unwrap() {
        Credentials::Cloudwatch {
            role_arn,
            external_id: stored,
        } => {
            assert_eq!(role_arn, ROLE_ARN);
            assert_eq!(stored.expose_secret(), external_id);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.get().await.body["destination"], saved.body["destination"]);
    let audit = w.audit_events().await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["description"], "Created streaming configuration");
    assert_eq!(audit[0]["action"], "create");
    assert_eq!(audit[0]["actor"]["principal_id"], "user-7");
    assert_eq!(audit[0]["organization_id"], w.org.as_str());
    audit_log::AuditEvent::from_value(audit[0].clone()).expect("capture accepts it");
}

#[tokio::test]
async fn a_configuration_changes_audit_event_the_queue_refuses_is_stored_directly() {
    // GIVEN an events queue that refuses messages (gone)
    let w = World::new().await;
    w.lose_events_queue().await;
    // WHEN a destination is saved
    assert_eq!(w.put(datadog(Some(KEY))).await.status, 200);
    // THEN its audit event is stored all the same, as capture would have stored it, under an
    // id of the service's, and listed with the project's events
    let stored = w.stored_items().await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let (id, event) = &stored[0];
    assert!(id.starts_with("service-"), "{id}");
    assert_eq!(event["description"], "Created streaming configuration");
    let listed = w.list(&[]).await;
    assert_eq!(
        listed.body["events"][0]["description"],
        "Created streaming configuration"
    );
    // AND the organization's listing finds its project
    let projects = w
        .call_organization(Some(&w.org), &w.org, "/projects", &[])
        .await;
    assert!(
        projects.body.to_string().contains(&w.project),
        "{}",
        projects.body
    );
}

#[test]
fn a_change_whose_audit_event_neither_queue_nor_table_takes_is_logged_for_its_alarm() {
    let (reply, logs) = with_captured_logs(|| async {
        // GIVEN an events queue and an events table that are both gone
        let w = World::new().await;
        w.lose_events_queue().await;
        aws_sdk_dynamodb::Client::new(&w.aws)
            .delete_table()
            .table_name(&w.events_table)
            .send()
            .await
            .unwrap();
        // WHEN a destination is saved
        w.put(datadog(Some(KEY))).await
    });
    // THEN the change stands, and the line the template's metric filter counts is logged
    assert_eq!(reply.status, 200, "{}", reply.body);
    let lost: Vec<&Value> = logs
        .iter()
        .filter(|l| l["fields"]["message"] == audit_log_api::AUDIT_EVENT_LOST)
        .collect();
    assert_eq!(lost.len(), 1, "{logs:?}");
    assert_eq!(lost[0]["level"], "ERROR");
    assert_eq!(lost[0]["fields"]["action"], "create");
}

#[tokio::test]
async fn saving_the_same_destination_again_adds_no_secret_version() {
    let w = World::new().await;
    let secret = w.secrets.secret_name(&w.org, &w.project);
    let versions = || async {
        aws_sdk_secretsmanager::Client::new(&w.aws)
            .list_secret_version_ids()
            .secret_id(&secret)
            .include_deprecated(true)
            .send()
            .await
            .unwrap()
            .versions
            .unwrap_or_default()
            .len()
    };
    assert_eq!(w.put(cloudwatch()).await.status, 200);
    let saved = versions().await;
    // Saved again as it is, then renamed: the version saved holds them already.
    let mut renamed = cloudwatch();
    renamed["name"] = json!("prod-audit-2");
    for body in [cloudwatch(), renamed] {
        assert_eq!(w.put(body).await.status, 200);
    }
    assert_eq!(versions().await, saved);
    // Another role is another version.
    let mut other = cloudwatch();
    other["cloudwatch"]["role_arn"] = json!("arn:aws:iam::210987654321:role/other");
    assert_eq!(w.put(other).await.status, 200);
    assert_eq!(versions().await, saved + 1);
    assert!(matches!(
        w.stored_credentials().await.unwrap(),
        Credentials::Cloudwatch { role_arn, .. } if role_arn.ends_with("role/other")
    ));
}

#[tokio::test]
async fn switching_provider_and_rotating_the_key_leave_no_old_credential_behind() {
    let w = World::new().await;
    w.put(cloudwatch()).await;
    let dd = w.put(datadog(Some(KEY))).await;
    assert_eq!(dd.status, 200);
    assert_eq!(
        dd.body["destination"]["datadog"],
        json!({"site": "datadoghq.eu", "api_key_last4": &KEY[KEY.len() - 4..]})
    );
    assert_eq!(dd.body["version"], 2);
    assert!(
        matches!(w.stored_credentials().await.unwrap(), Credentials::Datadog { ref api_key } if api_key.expose_secret() == KEY)
    );

    let rotated = w.put(datadog(Some(ROTATED))).await;
    assert_eq!(
        rotated.body["destination"]["datadog"]["api_key_last4"],
        "3210"
    );
    assert!(
        matches!(w.stored_credentials().await.unwrap(), Credentials::Datadog { ref api_key } if api_key.expose_secret() == ROTATED)
    );

    // The replaced versions cannot be read back by label.
    let name = w.secrets.secret_name(&w.org, &w.project);
    let previous = aws_sdk_secretsmanager::Client::new(&w.aws)
        .get_secret_value()
        .secret_id(name)
        .version_stage("AWSPREVIOUS")
        .send()
        .await;
    assert!(previous.is_err(), "AWSPREVIOUS still readable");

    let back = w.put(cloudwatch()).await;
    assert!(back.body["destination"].get("datadog").is_none());
    assert!(matches!(
        w.stored_credentials().await.unwrap(),
        Credentials::Cloudwatch { .. }
    ));
    let descriptions: Vec<String> = w
        .audit_events()
        .await
        .iter()
        .map(|e| e["description"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        descriptions,
        [
            "Created streaming configuration",
            "Updated streaming configuration",
            "Updated streaming configuration",
            "Updated streaming configuration"
        ]
    );
}

#[tokio::test]
async fn a_datadog_put_without_a_key_keeps_the_saved_one_only_when_it_is_datadogs() {
    let w = World::new().await;
    let refused = w.put(datadog(None)).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["error"]["code"], "missing_field");
    w.put(datadog(Some(KEY))).await;
    let mut renamed = datadog(None);
    renamed["name"] = json!("dd-renamed");
    let kept = w.put(renamed).await;
    assert_eq!(kept.status, 200);
    assert_eq!(kept.body["destination"]["name"], "dd-renamed");
    assert_eq!(
        kept.body["destination"]["datadog"]["api_key_last4"],
        &KEY[KEY.len() - 4..]
    );
    assert!(
        matches!(w.stored_credentials().await.unwrap(), Credentials::Datadog { ref api_key } if api_key.expose_secret() == KEY)
    );
    w.put(cloudwatch()).await;
    assert_eq!(w.put(datadog(None)).await.status, 400);
}

#[tokio::test]
async fn a_stale_if_match_is_refused_with_412_and_changes_nothing() {
    let w = World::new().await;
    w.put(cloudwatch()).await;
    let text = datadog(Some(KEY)).to_string();
    let stale = w.conditional("PUT", "\"7\"", Some(&text)).await;
    assert_eq!(stale.status, 412);
    assert_eq!(stale.body["error"]["code"], "version_mismatch");
    assert!(matches!(
        w.stored_credentials().await.unwrap(),
        Credentials::Cloudwatch { .. }
    ));
    let fresh = w.conditional("PUT", "\"1\"", Some(&text)).await;
    assert_eq!(fresh.status, 200);
    let anything = w.conditional("PUT", "*", Some(&text)).await;
    assert_eq!(anything.status, 200);
    // A tag that names no version is a tag that does not match, as HTTP has it.
    let foreign = w.conditional("PUT", "\"yesterday\"", Some(&text)).await;
    assert_eq!(foreign.status, 412);
    assert_eq!(foreign.body["error"]["code"], "version_mismatch");
    let listed = w.conditional("PUT", "\"9\", \"3\"", Some(&text)).await;
    assert_eq!(listed.status, 200);
    let stale_delete = w.conditional("DELETE", "1", None).await;
    assert_eq!(stale_delete.status, 412);
    assert_eq!(w.get().await.body["version"], 4);
}

#[tokio::test]
async fn a_version_read_before_a_delete_never_matches_the_configuration_saved_after() {
    // GIVEN someone read the configuration at version 2
    let w = World::new().await;
    w.put(cloudwatch()).await;
    assert_eq!(w.put(datadog(Some(KEY))).await.body["version"], 2);
    // WHEN another deletes it, then saves twice
    assert_eq!(w.conditional("DELETE", "\"2\"", None).await.status, 204);
    assert_eq!(w.get().await.body["version"], 0);
    assert_eq!(w.put(cloudwatch()).await.body["version"], 3);
    assert_eq!(w.put(cloudwatch()).await.body["version"], 4);
    // THEN the first's save and delete, conditional on what it read, are refused
    let text = datadog(Some(KEY)).to_string();
    for (method, body) in [("PUT", Some(text.as_str())), ("DELETE", None)] {
        let stale = w.conditional(method, "\"2\"", body).await;
        assert_eq!(stale.status, 412, "{method}: {}", stale.body);
    }
    assert!(matches!(
        w.stored_credentials().await.unwrap(),
        Credentials::Cloudwatch { .. }
    ));
    // AND an unconditional delete, then a save, still count on
    assert_eq!(w.call("DELETE", "/streaming", None).await.status, 204);
    assert_eq!(w.put(cloudwatch()).await.body["version"], 5);
}

#[tokio::test]
async fn no_configuration_is_saved_in_place_of_none_while_a_deletion_is_under_way() {
    use audit_log::streaming::{Configurations, DELETION_MARK_LAPSE};
    // GIVEN two deletions of the project under way (each between its steps)
    let clock = minute_clock();
    let w = World::with({
        let clock = clock.clone();
        move |api| api.with_clock(clock)
    })
    .await;
    let now = clock.now();
    let (org, project) = (w.org.as_str(), w.project.as_str());
    let first = w.configs.begin_deletion(org, project, now).await.unwrap();
    let second = w.configs.begin_deletion(org, project, now).await.unwrap();
    // WHEN a save comes, THEN it is told to come back, and nothing of it is saved
    let refused = w.put(cloudwatch()).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "credentials_being_deleted");
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(w.get().await.body["version"], 0);
    // AND the later deletion ending first still leaves the earlier one's mark
    w.configs.end_deletion(org, project, &second).await.unwrap();
    assert_eq!(w.put(cloudwatch()).await.status, 429);
    // AND once the last is over, the same save lands
    w.configs.end_deletion(org, project, &first).await.unwrap();
    assert_eq!(w.put(cloudwatch()).await.status, 200);
    // AND a deletion cut short 40 seconds ago has saves come back when its mark lapses
    assert_eq!(w.call("DELETE", "/streaming", None).await.status, 204);
    let cut_short = w
        .configs
        .begin_deletion(org, project, clock.now() - time::Duration::seconds(40))
        .await
        .unwrap();
    let refused = w.put(cloudwatch()).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.headers["retry-after"], "20");
    // AND once it lapsed, the next deletion starts afresh and leaves no mark behind
    w.configs
        .end_deletion(org, project, &cut_short)
        .await
        .unwrap();
    let lapsed = now - DELETION_MARK_LAPSE - time::Duration::seconds(1);
    w.configs
        .begin_deletion(org, project, lapsed)
        .await
        .unwrap();
    assert_eq!(w.call("DELETE", "/streaming", None).await.status, 204);
    let saved = w.put(cloudwatch()).await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.body["version"], 2);
}

#[tokio::test]
async fn the_organizations_saved_destinations_are_counted_and_no_other_item() {
    use audit_log::destination::{DatadogSettings, DatadogSite, Destination};
    use audit_log::streaming::{Configurations, NewConfig};
    let w = World::new().await;
    // GIVEN a destination saved through the api (with the organization's own items beside it:
    // its External ID, its rate limit's counter, a connection test)
    assert_eq!(w.put(cloudwatch()).await.status, 200);
    w.call("POST", "/streaming/test", None).await;
    // AND two more of its projects, and one of another organization's
    let other = unique("org-other");
    let now = OffsetDateTime::now_utc();
    for (org, project) in [(&w.org, "second"), (&w.org, "third"), (&other, "first")] {
        let new = NewConfig {
            name: "dd".into(),
            destination: Destination::Datadog(DatadogSettings {
                site: DatadogSite::Us1,
            }),
            api_key_last4: None,
            secret_version: None,
            same_destination: false,
            save: NewConfig::new_save(),
        };
        w.configs.save(org, project, new, 0, now).await.unwrap();
    }
    // THEN the organization has three, the other one
    assert_eq!(w.configs.destinations(&w.org, 1_000).await.unwrap(), 3);
    assert_eq!(w.configs.destinations(&other, 1_000).await.unwrap(), 1);
    // AND a deleted one is no longer counted
    assert_eq!(w.call("DELETE", "/streaming", None).await.status, 204);
    assert_eq!(w.configs.destinations(&w.org, 1_000).await.unwrap(), 2);
}

#[tokio::test]
async fn a_delete_of_a_project_never_saved_leaves_no_item_behind() {
    let w = World::new().await;
    let removed_items = || async {
        let client = aws_sdk_dynamodb::Client::new(&w.aws);
        audit_log_tests::scan_all(&client, &w.config_table)
            .await
            .into_iter()
            .filter(|item| {
                item.get("sk")
                    .and_then(|sk| sk.as_s().ok())
                    .is_some_and(|sk| sk.starts_with("removed#"))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(w.call("DELETE", "/streaming", None).await.status, 204);
    assert!(removed_items().await.is_empty());
    // A deleted configuration's version stays, for the next one to count on from.
    w.put(cloudwatch()).await;
    assert_eq!(w.call("DELETE", "/streaming", None).await.status, 204);
    let kept = removed_items().await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["version"].as_n().unwrap(), "1");
}

#[tokio::test]
async fn each_invalid_body_gets_a_400_that_names_the_problem_and_causes_nothing() {
    let w = World::new().await;
    let cases: Vec<(String, &str)> = vec![
        ("{".into(), "invalid_json"),
        // Read as its last `provider` here, as its first elsewhere: refused.
        (format!(r#"{{"provider": "datadog", "provider": "cloudwatch", "name": "x", "cloudwatch": {{"role_arn": "{ROLE_ARN}", "region": "us-west-2"}}}}"#), "invalid_json"),
        ("[]".into(), "invalid_body"),
        (json!({"provider": "cloudwatch", "name": "x", "cloudwatch": {"role_arn": ROLE_ARN, "region": "us-west-2", "external_id": "mine"}}).to_string(), "external_id_not_settable"),
        (json!({"provider": "cloudwatch", "name": "x", "external_id": "mine", "cloudwatch": {"role_arn": ROLE_ARN, "region": "us-west-2"}}).to_string(), "external_id_not_settable"),
        (json!({"provider": "cloudwatch", "name": "x", "extra": 1, "cloudwatch": {"role_arn": ROLE_ARN, "region": "us-west-2"}}).to_string(), "unknown_field"),
        (json!({"provider": "cloudwatch", "name": "x", "cloudwatch": {"role_arn": "arn:aws:iam::1:role/x", "region": "us-west-2"}}).to_string(), "invalid_field"),
        (json!({"provider": "cloudwatch", "name": "x", "cloudwatch": {"role_arn": ROLE_ARN, "region": "moon-1"}}).to_string(), "invalid_field"),
        (json!({"provider": "datadog", "name": "x", "datadog": {"site": "evil.example.com", "api_key": KEY}}).to_string(), "invalid_field"),
        (json!({"provider": "datadog", "name": "x", "datadog": {"site": "datadoghq.com", "api_key": "short"}}).to_string(), "invalid_field"),
        (json!({"provider": "datadog", "name": "", "datadog": {"site": "datadoghq.com", "api_key": KEY}}).to_string(), "invalid_field"),
        (json!({"provider": "datadog", "name": "x".repeat(200), "datadog": {"site": "datadoghq.com", "api_key": KEY}}).to_string(), "invalid_field"),
        (json!({"provider": "splunk", "name": "x"}).to_string(), "invalid_field"),
        (json!({"name": "x"}).to_string(), "missing_field"),
    ];
    for (body, code) in &cases {
        for (method, suffix) in [("PUT", "/streaming"), ("POST", "/streaming/test")] {
            let reply = w
                .call_as(Some(&w.org), &w.org, method, suffix, &[], &[], Some(body))
                .await;
            assert_eq!(reply.status, 400, "{method} {body}");
            assert_eq!(
                reply.body["error"]["code"], *code,
                "{method} {body}: {}",
                reply.body
            );
            if body.contains(r#""provider": "cloudwatch""#) && *code == "invalid_json" {
                let message = reply.body["error"]["message"].as_str().unwrap();
                assert!(
                    message.starts_with("the body names `provider` twice (line 1, column"),
                    "{message}"
                );
            }
        }
    }
    assert_eq!(w.get().await.body["version"], 0, "nothing saved");
    assert!(matches!(
        w.stored_credentials().await,
        Err(CredentialsError::NotFound)
    ));
    assert!(
        w.datadog.received_requests().await.unwrap().is_empty(),
        "no outbound call"
    );
    assert!(w.audit_events().await.is_empty());
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let w = World::new().await;
    let mut body = cloudwatch();
    body["name"] = json!("x".repeat(100 * 1024));
    // Routes that take no body read it too, to refuse one.
    for (method, suffix) in [
        ("PUT", "/streaming"),
        ("POST", "/streaming/test"),
        ("POST", "/streaming/pause"),
        ("POST", "/streaming/resume"),
        ("DELETE", "/streaming"),
    ] {
        let reply = w.call(method, suffix, Some(body.clone())).await;
        assert_eq!(reply.status, 413, "{method} {suffix}");
        assert_eq!(reply.body["error"]["code"], "payload_too_large");
    }
}

#[tokio::test]
async fn delete_stops_streaming_and_removes_the_secret() {
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    let deleted = w.call("DELETE", "/streaming", None).await;
    assert_eq!(deleted.status, 204);
    let view = w.get().await;
    assert_eq!(view.body["destination"], Value::Null);
    assert_eq!(view.body["version"], 0);
    assert!(matches!(
        w.stored_credentials().await,
        Err(CredentialsError::NotFound)
    ));
    let descriptions: Vec<Value> = w
        .audit_events()
        .await
        .iter()
        .map(|e| e["description"].clone())
        .collect();
    assert_eq!(
        descriptions,
        [
            json!("Created streaming configuration"),
            json!("Deleted streaming configuration")
        ]
    );
    assert_eq!(
        w.call("DELETE", "/streaming", None).await.status,
        204,
        "idempotent"
    );
}

#[tokio::test]
async fn huge_and_deeply_nested_bodies_get_a_clear_4xx_and_change_nothing() {
    let w = World::new().await;
    let ten_megabytes = format!("{{\"name\": \"{}\"}}", "x".repeat(10 * 1024 * 1024));
    // Within the body limit, far past any sane depth.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    for (method, suffix) in [
        ("PUT", "/streaming"),
        ("POST", "/streaming/test"),
        ("POST", "/streaming/replay"),
    ] {
        let huge = w
            .call_as(
                Some(&w.org),
                &w.org,
                method,
                suffix,
                &[],
                &[],
                Some(&ten_megabytes),
            )
            .await;
        assert_eq!(huge.status, 413, "{method} {suffix}");
        let nested = w
            .call_as(Some(&w.org), &w.org, method, suffix, &[], &[], Some(&deep))
            .await;
        assert_eq!(nested.status, 400, "{method} {suffix}");
        assert_eq!(nested.body["error"]["code"], "invalid_json");
    }
    assert_eq!(w.get().await.body["version"], 0, "nothing saved");
    assert!(w.audit_events().await.is_empty());
}

/// The account moto's credentials belong to: the service's own.
const SERVICE_ACCOUNT: &str = "123456789012";

#[tokio::test]
async fn a_role_in_the_services_own_account_is_refused_before_any_call() {
    let w = World::new().await;
    let own = json!({"provider": "cloudwatch", "name": "deputy",
        "cloudwatch": {"role_arn": format!("arn:aws:iam::{SERVICE_ACCOUNT}:role/trusts-root"), "region": "us-west-2"}});
    for reply in [
        w.put(own.clone()).await,
        w.call("POST", "/streaming/test", Some(own.clone())).await,
    ] {
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.body["error"]["code"], "invalid_field");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("`cloudwatch.role_arn`"), "{message}");
        assert!(!message.contains("trusts-root"), "{message}");
    }
    assert_eq!(w.get().await.body["destination"], Value::Null);
    assert!(matches!(
        w.stored_credentials().await,
        Err(CredentialsError::NotFound)
    ));
    assert!(w.recent_tests().await.is_empty(), "no test was run");
}

#[tokio::test]
async fn a_region_that_does_not_exist_or_is_of_another_partition_is_a_400_and_no_call() {
    let w = World::new().await;
    for (arn, region) in [
        (ROLE_ARN, "zz-evil-9"),
        (ROLE_ARN, "us-west-9"),
        (ROLE_ARN, "cn-north-1"),
        ("arn:aws-cn:iam::111111111111:role/r", "us-west-2"),
    ] {
        let body = json!({"provider": "cloudwatch", "name": "x",
            "cloudwatch": {"role_arn": arn, "region": region}});
        for reply in [
            w.put(body.clone()).await,
            w.call("POST", "/streaming/test", Some(body.clone())).await,
        ] {
            assert_eq!(reply.status, 400, "{region}: {}", reply.body);
            assert!(
                reply.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("`cloudwatch.region`")
            );
        }
    }
    assert_eq!(w.get().await.body["destination"], Value::Null);
    assert!(w.recent_tests().await.is_empty(), "no test was run");
}

#[tokio::test]
async fn racing_puts_with_one_if_match_leave_the_winners_key_current_and_the_loser_is_told_the_current_version()
 {
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    w.mount(
        validate()
            .and(header("DD-API-KEY", ROTATED))
            .respond_with(ResponseTemplate::new(200)),
    )
    .await;
    w.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    for round in 0..6u64 {
        let version = w.get().await.body["version"].as_u64().unwrap();
        let keys = [
            format!("{:032x}", 0xa000 + round),
            format!("{:032x}", 0xb000 + round),
        ];
        for key in &keys {
            audit_log_tests::watch_secret(key);
        }
        let bodies: Vec<String> = keys.iter().map(|k| datadog(Some(k)).to_string()).collect();
        let if_match = version.to_string();
        let (a, b) = tokio::join!(
            w.conditional("PUT", &if_match, Some(&bodies[0])),
            w.conditional("PUT", &if_match, Some(&bodies[1])),
        );
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(statuses, [200, 412], "round {round}");
        let (winner, loser, winner_key) = if a.status == 200 {
            (&a, &b, &keys[0])
        } else {
            (&b, &a, &keys[1])
        };
        assert_eq!(winner.body["version"], version + 1);
        // The 412 states the version now stored, not the caller's.
        let message = loser.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("version {}", version + 1)),
            "{message}"
        );
        match w.stored_credentials().await.unwrap() {
            Credentials::Datadog { api_key } => assert_eq!(
                api_key.expose_secret(),
                winner_key.as_str(),
                "round {round}"
            ),
            other => panic!("{other:?}"),
        }
    }
    // The saved destination is tested (and would be delivered to) with the winner's key.
    let winner = w.put(datadog(Some(ROTATED))).await;
    assert_eq!(winner.status, 200);
    let tested = w.call("POST", "/streaming/test", None).await;
    assert_eq!(tested.body["success"], true, "{}", tested.body);
}

#[tokio::test]
async fn puts_and_deletes_without_if_match_never_answer_412() {
    let w = World::new().await;
    let bodies: Vec<Value> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                cloudwatch()
            } else {
                datadog(Some(KEY))
            }
        })
        .collect();
    let replies = futures::future::join_all(bodies.into_iter().map(|b| w.put(b))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Each save was one version: none lost, none doubled.
    assert_eq!(w.get().await.body["version"], 8);
    let (put, delete) = tokio::join!(w.put(cloudwatch()), w.call("DELETE", "/streaming", None));
    // A save that meets the deletion between its two steps is told to come back (429).
    let told_to_come_back =
        put.status == 429 && put.body["error"]["code"] == "credentials_being_deleted";
    assert!(put.status == 200 || told_to_come_back, "{}", put.body);
    assert_eq!(delete.status, 204);
}

#[tokio::test]
async fn a_staged_version_whose_secret_a_delete_removed_cannot_be_promoted() {
    use audit_log::credentials::{CredentialsError, Secrets};
    let aws = emulator().await;
    let store = SecretStore::new(
        aws_sdk_secretsmanager::Client::new(&aws),
        format!("{}/streaming/", unique("stack")),
    );
    let credentials = Credentials::Datadog {
        api_key: secrecy::SecretString::from(KEY),
    };
    let staged = store.stage("o", "p", &credentials).await.unwrap();
    // A DELETE of the project between a save's stage and its promotion.
    store.delete("o", "p").await.unwrap();
    let promoted = store.promote("o", "p", &staged).await;
    assert!(
        matches!(
            promoted,
            Err(CredentialsError::NotFound | CredentialsError::Deleting)
        ),
        "{promoted:?}"
    );
}
