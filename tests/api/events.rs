//! GET (the base path): stored events page by page, their time ranges (an export's too) and
//! cursors.

use super::*;

#[tokio::test]
async fn stored_events_come_back_newest_first_page_by_page_exactly_as_sent() {
    let w = World::new().await;
    let mine = w.series(25, Duration::from_secs(3600), Duration::from_secs(60));
    let start = OffsetDateTime::now_utc() - Duration::from_secs(3600);
    let other_project: Vec<Value> = (0..3)
        .map(|i| event_at(&w.org, "another-project", start, 100 + i))
        .collect();
    w.store(&mine).await;
    w.store(&other_project).await;

    let (_, pages) = all_pages(&w, false, &[("limit", "10")]).await;
    let seen: Vec<Value> = pages
        .iter()
        .flat_map(|p| p.body["events"].as_array().unwrap().clone())
        .collect();
    assert_eq!(pages.len(), 3);
    let mut newest_first = mine.clone();
    newest_first.reverse();
    assert_eq!(
        seen, newest_first,
        "every event once, newest first, exactly as sent"
    );
}

#[tokio::test]
async fn events_stored_before_they_were_packed_list_exactly_as_sent_among_new_ones() {
    let w = World::new().await;
    let events = w.series(8, Duration::from_secs(3600), Duration::from_secs(60));
    // Two of every three as before, the rest as now.
    let (before, after): (Vec<Value>, Vec<Value>) = events
        .iter()
        .cloned()
        .partition(|e| e["n"].as_u64().unwrap() % 3 != 0);
    w.store_as_before(&before).await;
    w.store(&after).await;
    let page = w.list(&[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let mut newest_first = events.clone();
    newest_first.reverse();
    assert_eq!(page.body["events"].as_array().unwrap(), &newest_first);
}

#[tokio::test]
async fn numbers_past_a_double_come_back_digit_for_digit_listed_and_failed() {
    let w = World::new().await;
    let mut event = event_at(&w.org, &w.project, OffsetDateTime::now_utc(), 1);
    event["note"] = json!({"n": "N"});
    let digits = "12345678901234567890123.45678901234567890";
    let body = event.to_string().replace(r#""N""#, digits);
    w.store_texts(&[(unique("m"), body.clone())]).await;

    let listed = w.list(&[]).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert!(listed.text.contains(&body), "{}", listed.text);
    w.fail_all_stored().await;
    let failed = w.failures(&[]).await;
    assert_eq!(failed.status, 200, "{}", failed.text);
    assert!(failed.text.contains(&body), "{}", failed.text);
}

#[tokio::test]
async fn since_and_until_bound_the_page_inclusively() {
    let w = World::new().await;
    let events = w.series(10, Duration::from_secs(7200), Duration::from_secs(600));
    w.store(&events).await;
    let since = events[3]["timestamp"].as_str().unwrap().to_owned();
    let until = events[6]["timestamp"].as_str().unwrap().to_owned();
    let page = w.list(&[("since", &since), ("until", &until)]).await;
    let ns: Vec<i64> = page.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [6, 5, 4, 3]);
    assert_eq!(page.body["next_cursor"], Value::Null);
    let only_since = w.list(&[("since", &until)]).await;
    assert_eq!(only_since.body["events"].as_array().unwrap().len(), 4);
    let only_until = w.list(&[("until", &since)]).await;
    assert_eq!(only_until.body["events"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn events_past_their_ttl_are_left_out_before_dynamodb_deletes_them() {
    let w = World::new().await;
    let old = OffsetDateTime::now_utc() - Duration::from_secs(500 * 86_400);
    let recent = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(60);
    w.store(&[
        event_at(&w.org, &w.project, old, 1),
        event_at(&w.org, &w.project, recent, 2),
    ])
    .await;
    let page = w.list(&[]).await;
    let ns: Vec<i64> = page.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [2]);
}

#[tokio::test]
async fn bad_list_queries_get_a_400_that_says_what_to_fix() {
    let w = World::new().await;
    for query in [
        vec![("since", "yesterday")],
        vec![("since", "2026-01-01X00:00:00Z")],
        vec![("until", "2026-13-01T00:00:00Z")],
        vec![("limit", "0")],
        vec![("limit", "1001")],
        vec![("limit", "ten")],
        vec![("limit", "+5")],
        vec![
            ("since", "2026-02-01T00:00:00Z"),
            ("until", "2026-01-01T00:00:00Z"),
        ],
    ] {
        let reply = w.list(&query).await;
        assert_eq!(reply.status, 400, "{query:?}");
        assert_eq!(reply.body["error"]["code"], "invalid_query");
    }
    // The failures listing's own parameters, misspelt, too.
    let reply = w.failures(&[("limt", "5")]).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], "invalid_query");
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("did you mean `limit`"), "{message}");
    // A parameter that is nobody's misspelling means nothing to a route, which leaves it alone
    // (what an event made after AWS's example carries, a cache buster).
    assert_eq!(w.failures(&[("colour", "red")]).await.status, 200);
    for (method, suffix) in [("GET", "/streaming"), ("POST", "/streaming/pause")] {
        let org = Some(w.org.as_str());
        let reply = w
            .call_as(
                org,
                &w.org,
                method,
                suffix,
                &[("parameter1", "value1"), ("parameter1", "value2")],
                &[],
                None,
            )
            .await;
        // Served (the pause, with nothing saved, is a 404 for that reason alone).
        let expected = if method == "GET" { 200 } else { 404 };
        assert_eq!(reply.status, expected, "{suffix}: {}", reply.body);
    }
}

#[tokio::test]
async fn a_time_whose_utc_is_past_the_year_9999_gets_a_400_not_a_crash() {
    let w = World::new().await;
    let late = "9999-12-31T23:30:00-01:00";
    for query in [vec![("since", late)], vec![("until", late)]] {
        let reply = w.list(&query).await;
        assert_eq!(reply.status, 400, "{query:?}: {}", reply.body);
        assert_eq!(reply.body["error"]["code"], "invalid_query");
    }
    for (path, body, field) in [
        ("/exports", json!({"until": late}), "`until`"),
        (
            "/streaming/replay",
            json!({"since": "9999-12-30T00:00:00Z", "until": late}),
            "`until`",
        ),
    ] {
        let reply = w.call("POST", path, Some(body)).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert_eq!(reply.body["error"]["code"], "invalid_field");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message}");
    }
}

#[tokio::test]
async fn an_export_or_replay_given_its_fields_in_the_query_is_refused_not_run_without_them() {
    let w = World::new().await;
    for (suffix, query, meant) in [
        ("/exports", ("status", "FAILED"), "`status`"),
        ("/exports", ("format", "csv"), "`format`"),
        ("/exports", ("resourceType", "build"), "`resource_type`"),
        (
            "/streaming/replay",
            ("only_failed", "true"),
            "`only_failed`",
        ),
        (
            "/streaming/replay",
            ("since", "2026-01-01T00:00:00Z"),
            "`since`",
        ),
    ] {
        let body = json!({}).to_string();
        let org = Some(w.org.as_str());
        let reply = w
            .call_as(org, &w.org, "POST", suffix, &[query], &[], Some(&body))
            .await;
        assert_eq!(reply.status, 400, "{suffix}?{query:?}: {}", reply.body);
        assert_eq!(reply.body["error"]["code"], "invalid_query");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(meant) && message.contains("body"),
            "{message}"
        );
    }
    // Anything else in the query is left alone, as on every route that takes none.
    let body = json!({}).to_string();
    let org = Some(w.org.as_str());
    let started = w
        .call_as(
            org,
            &w.org,
            "POST",
            "/exports",
            &[("colour", "red")],
            &[],
            Some(&body),
        )
        .await;
    assert_eq!(started.status, 202, "{}", started.body);
}

#[tokio::test]
async fn a_range_that_ends_before_it_starts_reads_nothing_and_is_no_error() {
    // Exports saved before `since` was checked against now may hold such a range.
    let w = World::new().await;
    w.store(&w.series(3, Duration::from_secs(600), Duration::from_secs(60)))
        .await;
    let mut request = audit_log::store::PageRequest::new(10, usize::MAX, 0);
    let now = OffsetDateTime::now_utc();
    request.since = Some(now);
    request.until = Some(now - Duration::from_secs(3600));
    let page = w
        .events
        .page(
            &[audit_log::store::partition_key(&w.org, &w.project)],
            &request,
        )
        .await
        .unwrap();
    assert!(page.events.is_empty());
    assert!(page.next_after.is_none());
}

#[tokio::test]
async fn an_export_from_the_future_to_now_is_refused_before_it_starts() {
    let w = World::new().await;
    let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let reply = w
        .call("POST", "/exports", Some(json!({"since": tomorrow})))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], "invalid_field");
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`since`")
    );
    // It holds none of the organization's export slots: two others start.
    for _ in 0..2 {
        let started = w.call("POST", "/exports", Some(json!({}))).await;
        assert_eq!(started.status, 202, "{}", started.body);
        let shown = w.call("GET", &followed("/exports", &started), None).await;
        assert_eq!(shown.status, 200, "{}", shown.body);
        assert_eq!(shown.body["id"], started.body["id"]);
    }
}

#[tokio::test]
async fn time_ranges_with_offsets_select_the_same_instants_as_utc() {
    let w = World::new().await;
    let events = w.series(10, Duration::from_secs(7200), Duration::from_secs(600));
    w.store(&events).await;
    let at = |i: usize| {
        OffsetDateTime::parse(events[i]["timestamp"].as_str().unwrap(), &Rfc3339).unwrap()
    };
    let ns = |reply: &Reply| -> Vec<i64> {
        reply.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["n"].as_i64().unwrap())
            .collect()
    };
    for offset in [
        time::UtcOffset::from_hms(9, 0, 0).unwrap(),
        time::UtcOffset::from_hms(-8, 0, 0).unwrap(),
    ] {
        let since = at(3).to_offset(offset).format(&Rfc3339).unwrap();
        let until = at(6).to_offset(offset).format(&Rfc3339).unwrap();
        let page = w.list(&[("since", &since), ("until", &until)]).await;
        assert_eq!(page.status, 200, "{since}");
        assert_eq!(ns(&page), [6, 5, 4, 3], "{since} .. {until}");
        // An offset's `+` sent unencoded, as in a hand-made URL (form decoding reads a space):
        // the same instants.
        let bare = |t: &str| t.replace('+', " ");
        let page = w
            .list(&[("since", &bare(&since)), ("until", &bare(&until))])
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(ns(&page), [6, 5, 4, 3], "{since} .. {until}");
        // Date and time joined by the space RFC 3339 allows (and the `+` sent bare): the same.
        let spaced = |t: &str| bare(&t.replacen('T', " ", 1));
        let page = w
            .list(&[("since", &spaced(&since)), ("until", &spaced(&until))])
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(ns(&page), [6, 5, 4, 3], "{since} .. {until}");
        let paged = w
            .list(&[("since", &since), ("until", &until), ("limit", "2")])
            .await;
        let cursor = paged.body["next_cursor"].as_str().unwrap().to_owned();
        let rest = w
            .list(&[
                ("since", &since),
                ("until", &until),
                ("limit", "2"),
                ("cursor", &cursor),
            ])
            .await;
        assert_eq!(ns(&rest), [4, 3]);
    }
}

#[tokio::test]
async fn tampered_foreign_or_reused_cursors_are_400_invalid_cursor() {
    let w = World::new().await;
    let events = w.series(6, Duration::from_secs(3600), Duration::from_secs(60));
    w.store(&events).await;
    let first = w.list(&[("limit", "2")]).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let since = events[0]["timestamp"].as_str().unwrap();
    let tampered = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let text = String::from_utf8(engine.decode(&cursor).unwrap()).unwrap();
        engine.encode(text.replacen('2', "1", 1))
    };
    let garbage = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("zzz#m")
    };
    for query in [
        vec![("cursor", tampered.as_str())],
        vec![("cursor", garbage.as_str())],
        vec![("cursor", "%%%")],
        // Reused with another range.
        vec![("cursor", cursor.as_str()), ("since", since)],
    ] {
        let reply = w.list(&query).await;
        assert_eq!(reply.status, 400, "{query:?}: {}", reply.body);
        assert_eq!(reply.body["error"]["code"], "invalid_cursor");
    }
    // Another project's cursor.
    let other = w
        .call_as(
            Some(&w.org),
            &w.org,
            "GET",
            "",
            &[("cursor", cursor.as_str())],
            &[],
            None,
        )
        .await;
    assert_eq!(other.status, 200, "the same project takes it");
    let foreign_path = format!("/v1/organizations/{}/projects/another/audit-logs", w.org);
    let claims = [("organization_id", w.org.as_str()), ("sub", "u")];
    let request = audit_log_tests::api_request(
        "GET",
        &foreign_path,
        &[("cursor", cursor.as_str())],
        &[],
        None,
        Some(&claims),
    );
    assert_eq!(w.api.respond(&request).await.status_code, 400);
    // The failures listing: tampered and foreign cursors alike.
    for cursor in [tampered.as_str(), cursor.as_str(), garbage.as_str()] {
        let reply = w.failures(&[("cursor", cursor)]).await;
        assert_eq!(reply.status, 400);
        assert_eq!(reply.body["error"]["code"], "invalid_cursor");
    }
}

#[tokio::test]
async fn a_cursor_goes_on_with_its_range_written_another_way() {
    // GIVEN a first page of a range
    let w = World::new().await;
    let events = w.series(6, Duration::from_secs(3600), Duration::from_secs(60));
    w.store(&events).await;
    let first = w
        .list(&[("limit", "2"), ("since", "2000-01-01T00:00:00Z")])
        .await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    // WHEN the next is asked for with the same instant written otherwise
    for since in ["2000-01-01T00:00:00.000+00:00", "2000-01-01T01:00:00+01:00"] {
        let next = w
            .list(&[("limit", "2"), ("since", since), ("cursor", cursor)])
            .await;
        // THEN the listing goes on where it stood
        assert_eq!(next.status, 200, "{since}: {}", next.body);
        assert_eq!(
            ns(&next),
            ns(&first).iter().map(|n| n - 2).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn a_listing_that_reads_or_makes_no_cursor_needs_no_key() {
    let w = World::new().await;
    w.store(&w.series(3, Duration::from_secs(600), Duration::from_secs(60)))
        .await;
    // One page holds everything: Secrets Manager is not asked.
    let all = w.list(&[("limit", "10")]).await;
    assert_eq!(ns(&all).len(), 3);
    assert!(all.body["next_cursor"].is_null());
    assert!(
        w.service_key_made().await.is_none(),
        "no key made for a page without a cursor"
    );
    // A page with more after it makes the key, and its cursor goes on.
    let first = w.list(&[("limit", "2")]).await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    assert!(w.service_key_made().await.is_some());
    assert_eq!(
        ns(&w.list(&[("limit", "2"), ("cursor", cursor)]).await).len(),
        1
    );
}

#[tokio::test]
async fn every_container_of_a_deployment_signs_cursors_with_one_key_of_its_own() {
    let aws = emulator().await;
    let prefix = format!("{}/streaming/", unique("stack"));
    let container = || SecretStore::new(aws_sdk_secretsmanager::Client::new(&aws), &prefix);
    // Two containers meet the first listing at once: one makes the key, both use it.
    let (a, b) = (container(), container());
    let (ka, kb) = tokio::join!(a.service_key(), b.service_key());
    let (ka, kb) = (ka.unwrap(), kb.unwrap());
    assert_eq!(ka.expose_secret(), kb.expose_secret());
    assert_eq!(ka.expose_secret().len(), 64);
    // A later container reads it; another deployment has its own.
    let later = container().service_key().await.unwrap();
    assert_eq!(later.expose_secret(), ka.expose_secret());
    // Its logs never show it.
    audit_log_tests::watch_secret(ka.expose_secret());
    let elsewhere = SecretStore::new(
        aws_sdk_secretsmanager::Client::new(&aws),
        format!("{}/streaming/", unique("stack")),
    );
    assert_ne!(
        elsewhere.service_key().await.unwrap().expose_secret(),
        ka.expose_secret()
    );
}

/// An event of about `bytes` whose text is mostly quotes: each doubles once escaped into the
/// Lambda response.
fn quoted_event(w: &World, n: usize, bytes: usize) -> Value {
    let t = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
        - Duration::from_secs(600 - n as u64);
    let mut v = event_at(&w.org, &w.project, t, n);
    v["notes"] = json!("\"".repeat(bytes / 2));
    v
}

#[tokio::test]
async fn every_page_stays_under_lambdas_6_mb_counting_the_escaped_body() {
    let w = World::new().await;
    // Six events of 800 KB: 4.8 MB as JSON, about 9.6 MB inside a Lambda response.
    let events: Vec<Value> = (0..6).map(|n| quoted_event(&w, n, 800_000)).collect();
    for e in &events {
        w.store(std::slice::from_ref(e)).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "1000")];
        if let Some(c) = &cursor {
            query.push(("cursor", c));
        }
        let page = w.list(&query).await;
        assert_eq!(page.status, 200);
        assert!(
            page.lambda_bytes <= 6_291_456,
            "{} bytes",
            page.lambda_bytes
        );
        seen.extend(
            page.body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["n"].as_i64().unwrap()),
        );
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, [5, 4, 3, 2, 1, 0]);

    // The failures listing carries the events too.
    w.fail_all_stored().await;
    let mut listed = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![];
        if let Some(c) = &cursor {
            query.push(("cursor", c.as_str()));
        }
        let page = w.failures(&query).await;
        assert_eq!(page.status, 200);
        assert!(
            page.lambda_bytes <= 6_291_456,
            "{} bytes",
            page.lambda_bytes
        );
        listed += page.body["failures"].as_array().unwrap().len();
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed, 6);
}
