//! Ids in paths: what the id rules refuse, and what they take like any other id.

use super::*;

#[tokio::test]
async fn export_and_replay_ids_that_break_the_id_rules_are_400_and_unknown_ones_404() {
    let w = World::new().await;
    for job in ["/exports/", "/streaming/replays/"] {
        for id in ["a\u{1}b".to_owned(), "x".repeat(256)] {
            let encoded =
                percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC);
            let reply = w.call("GET", &format!("{job}{encoded}"), None).await;
            assert_eq!(reply.status, 400, "{job} {}", id.len());
            assert_eq!(reply.body["error"]["code"], "invalid_path");
        }
        let reply = w.call("GET", &format!("{job}no-such-job"), None).await;
        assert_eq!(reply.status, 404, "{job}");
        assert_eq!(reply.body["error"]["code"], "not_found");
    }
}

#[tokio::test]
async fn path_ids_that_break_the_id_rules_are_400_on_every_route() {
    let w = World::new().await;
    for id in ["a\u{1}b".to_owned(), "x".repeat(256), "😀".repeat(256)] {
        for (method, suffix, body) in every_route() {
            let encoded =
                percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            let path = format!("/v1/organizations/{encoded}/projects/p/audit-logs{suffix}");
            let claims = [("organization_id", id.as_str()), ("sub", "u")];
            let request = audit_log_tests::api_request(
                method,
                &path,
                &[],
                &[],
                body.as_deref(),
                Some(&claims),
            );
            let response = w.api.respond(&request).await;
            assert_eq!(response.status_code, 400, "{method} {suffix} {}", id.len());
            let Some(Body::Text(text)) = &response.body else {
                panic!("no body")
            };
            let body: Value = serde_json::from_str(text).unwrap();
            assert_eq!(body["error"]["code"], "invalid_path");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("`organization_id`")
            );
        }
        let project = format!(
            "/v1/organizations/{}/projects/{}/audit-logs/streaming/test",
            w.org,
            percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
        );
        let claims = [("organization_id", w.org.as_str()), ("sub", "u")];
        let request = audit_log_tests::api_request(
            "POST",
            &project,
            &[],
            &[],
            Some(&cloudwatch().to_string()),
            Some(&claims),
        );
        assert_eq!(w.api.respond(&request).await.status_code, 400);
    }
}

#[tokio::test]
async fn an_id_of_spaces_is_an_id_like_any_other() {
    // The contract's id rule is "non-empty": spaces are not nothing.
    let mut w = World::new().await;
    let start = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(60);
    let events: Vec<Value> = (0..2)
        .map(|i| event_at(&w.org, "   ", start + Duration::from_secs(i as u64), i))
        .collect();
    w.store(&events).await;
    w.project = "%20%20%20".into();
    let listed = w.list(&[]).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let mut newest_first = events.clone();
    newest_first.reverse();
    assert_eq!(listed.body["events"], json!(newest_first));
}

#[tokio::test]
async fn ids_of_255_wide_characters_are_ids_like_any_other() {
    // Percent-encoded into keys, these ids would take 1,530 and 3,060 bytes: they are kept as
    // UTF-8 with only their separators escaped, and the project is cut to fit sort keys.
    let mut w = World::new().await;
    let org = format!("{}{}", w.org, "é".repeat(255 - w.org.chars().count()));
    let project = "😀".repeat(255);
    let encode = |id: &str| {
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let start = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(60);
    let events: Vec<Value> = (0..3)
        .map(|i| event_at(&org, &project, start + Duration::from_secs(i as u64), i))
        .collect();
    w.store(&events).await;
    let mut newest_first = events.clone();
    newest_first.reverse();
    w.project = encode(&project);
    let path_org = encode(&org);
    let listed = w
        .call_as(Some(&org), &path_org, "GET", "", &[], &[], None)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["events"], json!(newest_first));
    let everywhere = w.call_organization(Some(&org), &path_org, "", &[]).await;
    assert_eq!(everywhere.body["events"], json!(newest_first));
    let projects = w
        .call_organization(Some(&org), &path_org, "/projects", &[])
        .await;
    assert_eq!(projects.status, 200, "{}", projects.body);
    assert_eq!(projects.body["projects"].as_array().unwrap().len(), 1);
    assert_eq!(projects.body["projects"][0]["project_id"], json!(project));
    let saved = w
        .call_as(
            Some(&org),
            &path_org,
            "PUT",
            "/streaming",
            &[],
            &[],
            Some(&datadog(Some(KEY)).to_string()),
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(
        (&saved.body["organization_id"], &saved.body["project_id"]),
        (&json!(org), &json!(project))
    );
    let view = w
        .call_as(Some(&org), &path_org, "GET", "/streaming", &[], &[], None)
        .await;
    assert_eq!(view.body["destination"]["provider"], "datadog");
}

#[tokio::test]
async fn projects_whose_ids_are_cut_to_fit_keys_are_listed_once_each_page_by_page() {
    let w = World::new().await;
    // 1,017 bytes each: their notes' keys hold their start and a digest, not the ids.
    let mut projects: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|end| "😀".repeat(254) + end)
        .collect();
    projects.push("plain".into());
    let start = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(60);
    let events: Vec<Value> = projects
        .iter()
        .enumerate()
        .map(|(n, project)| event_at(&w.org, project, start, n))
        .collect();
    w.store(&events).await;
    let (mut listed, mut cursor) = (Vec::new(), None::<String>);
    for _ in 0..10 {
        let mut query = vec![("limit", "1")];
        if let Some(c) = &cursor {
            query.push(("cursor", c.as_str()));
        }
        let page = w
            .call_organization(Some(&w.org), &w.org, "/projects", &query)
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        for project in page.body["projects"].as_array().unwrap() {
            listed.push(project["project_id"].as_str().unwrap().to_owned());
        }
        cursor = page.body["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "paging ends: {} listed", listed.len());
    listed.sort();
    projects.sort();
    assert_eq!(listed, projects);
}
