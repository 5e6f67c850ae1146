//! Claims and organizations, and secrets kept out of every answer and log line.

use super::*;

#[tokio::test]
async fn without_claims_every_route_is_401_and_with_another_organization_403_and_nothing_changes() {
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    w.store(&[event_at(
        &w.org,
        &w.project,
        now - Duration::from_secs(30),
        1,
    )])
    .await;
    let before = w.get().await.body;
    w.audit_events().await;
    let intruder = unique("intruder-org");
    for (method, suffix, body) in every_route() {
        let anonymous = w
            .call_as(None, &w.org, method, suffix, &[], &[], body.as_deref())
            .await;
        assert_eq!(anonymous.status, 401, "{method} {suffix}");
        assert_eq!(anonymous.body["error"]["code"], "unauthenticated");
        let other = w
            .call_as(
                Some(&intruder),
                &w.org,
                method,
                suffix,
                &[],
                &[],
                body.as_deref(),
            )
            .await;
        assert_eq!(other.status, 403, "{method} {suffix}");
        assert_eq!(other.body["error"]["code"], "forbidden");
        assert!(other.body.get("events").is_none() && other.body.get("external_id").is_none());
    }
    assert_eq!(w.get().await.body, before, "configuration untouched");
    assert!(
        matches!(w.stored_credentials().await.unwrap(), Credentials::Datadog { ref api_key } if api_key.expose_secret() == KEY)
    );
    for suffix in ["", "/projects"] {
        let anonymous = w.call_organization(None, &w.org, suffix, &[]).await;
        assert_eq!(anonymous.status, 401, "organization {suffix}");
        let other = w
            .call_organization(Some(&intruder), &w.org, suffix, &[])
            .await;
        assert_eq!(other.status, 403, "organization {suffix}");
        assert!(other.body.get("events").is_none() && other.body.get("projects").is_none());
    }
    assert!(w.datadog.received_requests().await.unwrap().is_empty());
    assert!(w.audit_events().await.is_empty());
    assert_eq!(
        w.list(&[]).await.body["events"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_cursor_cannot_reach_another_organizations_events() {
    let w = World::new().await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let victim = unique("victim-org");
    w.store(&[event_at(
        &victim,
        &w.project,
        now - Duration::from_secs(10),
        1,
    )])
    .await;
    w.store(&[
        event_at(&w.org, &w.project, now - Duration::from_secs(20), 2),
        event_at(&w.org, &w.project, now - Duration::from_secs(30), 3),
    ])
    .await;
    let first = w.list(&[("limit", "1")]).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = w.list(&[("limit", "1"), ("cursor", &cursor)]).await;
    let all: Vec<&Value> = first.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second.body["events"].as_array().unwrap())
        .collect();
    assert!(all.iter().all(|e| e["organization_id"] == w.org.as_str()));
    assert_eq!(all.len(), 2);
}

#[test]
fn a_caller_refused_for_another_organization_is_logged_with_the_organization_it_asked_for() {
    let intruder = unique("intruder-org");
    let (org, logs) = with_captured_logs(|| async {
        let w = World::new().await;
        let refused = w
            .call_as(Some(&intruder), &w.org, "GET", "/streaming", &[], &[], None)
            .await;
        assert_eq!(refused.status, 403);
        w.org.clone()
    });
    let requests: Vec<&Value> = logs
        .iter()
        .filter(|line| line["fields"]["message"] == "api request")
        .collect();
    assert_eq!(requests.len(), 1, "{logs:?}");
    assert_eq!(requests[0]["fields"]["status"], 403);
    assert_eq!(requests[0]["fields"]["organization_id"], org.as_str());
}

#[test]
fn no_route_ever_shows_or_logs_a_secret() {
    let sentinel_key = "5e7e11e15e7e11e15e7e11e15e7e11e1";
    let (replies, logs) = with_captured_logs(|| async {
        let w = World::new().await;
        w.mount(validate().respond_with(ResponseTemplate::new(403)))
            .await;
        w.mount(intake().respond_with(ResponseTemplate::new(401)))
            .await;
        let external_id = w.get().await.body["external_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut replies = Vec::new();
        let body = datadog(Some(sentinel_key)).to_string();
        for (method, suffix, b) in [
            ("PUT", "/streaming", Some(body.clone())),
            ("GET", "/streaming", None),
            ("POST", "/streaming/test", Some(body.clone())),
            ("POST", "/streaming/test", None),
            ("PUT", "/streaming", Some(datadog(None).to_string())),
            ("GET", "", None),
            (
                "PUT",
                "/streaming",
                Some(body.replace("datadoghq.eu", "nowhere.example")),
            ),
            ("DELETE", "/streaming", None),
        ] {
            let r = w
                .call_as(Some(&w.org), &w.org, method, suffix, &[], &[], b.as_deref())
                .await;
            replies.push(r.body.to_string());
        }
        replies.extend(w.audit_events().await.iter().map(Value::to_string));
        (replies, external_id)
    });
    let (replies, external_id) = replies;
    for reply in &replies {
        assert!(!reply.contains(sentinel_key), "{reply}");
    }
    let logs = serde_json::to_string(&logs).unwrap();
    assert!(logs.contains("api request"), "the routes were logged");
    assert!(!logs.contains(sentinel_key), "the key reached the logs");
    assert!(
        !logs.contains(&external_id),
        "the External ID reached the logs"
    );
}
