//! Search: the filters, the organization's events across its projects, and its projects.

use super::*;

/// `n` events of the organization, `step` apart from `start`, its projects in turn.
fn across(
    org: &str,
    projects: &[String],
    n: usize,
    start: OffsetDateTime,
    step: Duration,
) -> Vec<Value> {
    (0..n)
        .map(|i| {
            event_at(
                org,
                &projects[i % projects.len()],
                start + step * i as u32,
                i,
            )
        })
        .collect()
}

#[tokio::test]
async fn each_filter_finds_exactly_the_events_it_names() {
    let w = World::new().await;
    // n % 5 picks the seed event: 0 bucket labels (create, a service), 1 revoked version
    // (update, a user, builds), 2 updated build, 3 created build (FAILED), 4 channel assigned
    // (a user, previous_builds).
    let events = w.series(20, Duration::from_secs(3600), Duration::from_secs(60));
    let descriptions: Vec<&str> = events[..5]
        .iter()
        .map(|e| e["description"].as_str().unwrap())
        .collect();
    assert_eq!(
        descriptions,
        [
            "Added bucket labels",
            "Revoked version",
            "Updated build",
            "Created build",
            "Assigned version to channel"
        ]
    );
    w.store(&events).await;
    let kind = |n: i64| n % 5;
    for (query, keep) in [
        (
            vec![("status", "FAILED")],
            Box::new(move |n| kind(n) == 3) as Box<dyn Fn(i64) -> bool>,
        ),
        (
            vec![("action", "create")],
            Box::new(move |n| kind(n) == 0 || kind(n) == 3),
        ),
        (
            vec![("actor", "test.user@hashicorp.com")],
            Box::new(move |n| kind(n) == 1 || kind(n) == 4),
        ),
        (
            vec![("actor", "6f212631-5bcc-48a2-9082-37d752904032")],
            Box::new(move |n| kind(n) == 1 || kind(n) == 4),
        ),
        (
            vec![("resource_type", "channel")],
            Box::new(move |n| kind(n) == 4),
        ),
        (vec![("resource_type", "bucket")], Box::new(|_| true)),
        // In `builds` (1), as `build` (2), in `previous_builds` (4).
        (
            vec![("resource_id", "01H5APPBYYF4D0NMVZCRKR85E7")],
            Box::new(move |n| [1, 2, 4].contains(&kind(n))),
        ),
        (
            vec![("resource_id", "01GNZQS84K3PTGVVB2YY9R81BC")],
            Box::new(|_| true),
        ),
        (vec![("q", "rEvOkEd")], Box::new(move |n| kind(n) == 1)),
        (
            vec![("q", "test-channel-history")],
            Box::new(move |n| kind(n) == 4),
        ),
        (
            vec![("action", "update"), ("resource_type", "build")],
            Box::new(move |n| [1, 2, 4].contains(&kind(n))),
        ),
        (vec![("action", "delete")], Box::new(|_| false)),
    ] {
        let (found, _) = all_pages(&w, false, &query).await;
        assert_eq!(found, newest_first(19, &keep), "{query:?}");
    }
    // With a time range and a page size.
    let since = events[5]["timestamp"].as_str().unwrap().to_owned();
    let until = events[14]["timestamp"].as_str().unwrap().to_owned();
    let (found, pages) = all_pages(
        &w,
        false,
        &[
            ("status", "OK"),
            ("since", &since),
            ("until", &until),
            ("limit", "3"),
        ],
    )
    .await;
    assert_eq!(found, [14, 12, 11, 10, 9, 7, 6, 5]);
    assert!(pages.iter().all(|p| ns(p).len() <= 3));
}

/// A 429 `rate_limited` whose message says `why`, with when to come back within the minute.
fn turned_away(reply: &Reply, why: &str) {
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], "rate_limited");
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains(why), "{message}");
    let retry_after: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn searches_are_limited_per_organization_and_plain_pages_are_not() {
    // GIVEN an organization allowed four searches a minute, which it has made: two of a
    // project's events, one across its projects and a page of its projects
    let limit = audit_log::streaming::RateLimit {
        per_window: 4,
        ..audit_log::streaming::SEARCHES
    };
    // A clock of its own: the minute cannot turn between the searches.
    let clock = Arc::new(ManualClock::at(
        OffsetDateTime::now_utc().replace_second(10).unwrap(),
    ));
    let w = World::with(|api| api.with_search_limit(limit).with_clock(clock)).await;
    // Searches refused for their cursor read nothing, and are not counted.
    let bad = [("action", "delete"), ("cursor", "not-a-cursor")];
    assert_eq!(w.list(&bad).await.status, 400);
    let bad = [("cursor", "not-a-cursor")];
    let refused = w.call_organization(Some(&w.org), &w.org, "/projects", &bad);
    assert_eq!(refused.await.status, 400);
    assert_eq!(w.list(&[("action", "delete")]).await.status, 200);
    assert_eq!(
        w.list(&[("q", "revoked"), ("limit", "10")]).await.status,
        200
    );
    let across = w.call_organization(Some(&w.org), &w.org, "", &[]).await;
    assert_eq!(across.status, 200, "{}", across.body);
    let projects = w.call_organization(Some(&w.org), &w.org, "/projects", &[]);
    assert_eq!(projects.await.status, 200);
    // WHEN it searches once more, or lists its projects
    let limited = w.list(&[("status", "FAILED")]).await;
    // THEN it is told when to come back, and why
    turned_away(&limited, "4 searches");
    let projects = w.call_organization(Some(&w.org), &w.org, "/projects", &[]);
    turned_away(&projects.await, "4 searches");
    // AND a plain page of the project's events is not counted
    assert_eq!(w.list(&[("limit", "5")]).await.status, 200);
}

#[tokio::test]
async fn a_rare_search_answers_in_pages_of_bounded_reads_and_finds_every_match() {
    // A page may read 7 stored events: 1 match in 10 comes back a few at a time.
    let w = World::with(|api| api.with_search_budget(7)).await;
    let events = w.series(60, Duration::from_secs(7200), Duration::from_secs(60));
    w.store(&events).await;
    let (found, pages) = all_pages(&w, false, &[("status", "FAILED"), ("limit", "100")]).await;
    assert_eq!(found, newest_first(59, |n| n % 5 == 3));
    // A page reads 7 or 8 stored events, so it holds at most 2 of them, never 100.
    assert!(pages.len() >= 60 / 8, "{} pages", pages.len());
    assert!(pages.iter().all(|p| ns(p).len() <= 2));
}

#[tokio::test]
async fn bad_filters_get_a_400_that_names_the_parameter() {
    let w = World::new().await;
    for (query, named) in [
        (vec![("stauts", "OK")], "did you mean `status`"),
        (
            vec![("resourceType", "build")],
            "did you mean `resource_type`",
        ),
        (vec![("action", "destroy")], "`action`"),
        (vec![("status", "ok")], "`status`"),
        (vec![("resource_type", "registry")], "`resource_type`"),
        (vec![("actor", " ")], "`actor`"),
        (vec![("q", "x\u{1}")], "`q`"),
        (vec![("action", "create"), ("action", "read")], "`action`"),
    ] {
        let reply = w.list(&query).await;
        assert_eq!(reply.status, 400, "{query:?}");
        assert_eq!(reply.body["error"]["code"], "invalid_query");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{query:?}: {message}");
        let organization_wide = w.call_organization(Some(&w.org), &w.org, "", &query).await;
        assert_eq!(organization_wide.status, 400, "{query:?}");
    }
    // A parameter given empty, as clients that send every parameter send one they do not
    // use, is not given.
    w.store(&w.series(2, Duration::from_secs(600), Duration::from_secs(60)))
        .await;
    let unset = [
        ("cursor", ""),
        ("limit", ""),
        ("since", ""),
        ("actor", ""),
        ("q", ""),
    ];
    let reply = w.list(&unset).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(ns(&reply), [1, 0]);
    // Text keeps its commas (API Gateway splits parameters at them; the raw query does not).
    let mut commas = event_at(
        &w.org,
        &w.project,
        OffsetDateTime::now_utc() - Duration::from_secs(5),
        7,
    );
    commas["description"] = json!("Revoked version, then restored it");
    w.store(&[commas]).await;
    assert_eq!(ns(&w.list(&[("q", "version, THEN")]).await), [7]);
    // Text that looks like an expression is only text.
    let injected = w.list(&[("q", "') OR attribute_exists(pk) OR ('")]).await;
    assert_eq!(injected.status, 200);
    assert!(ns(&injected).is_empty());
}

#[tokio::test]
async fn a_cursor_only_goes_on_with_the_filters_that_made_it() {
    let w = World::new().await;
    w.store(&w.series(6, Duration::from_secs(600), Duration::from_secs(60)))
        .await;
    let first = w.list(&[("action", "update"), ("limit", "1")]).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let same = w
        .list(&[("action", "update"), ("limit", "1"), ("cursor", &cursor)])
        .await;
    assert_eq!(same.status, 200);
    for other in [
        vec![("action", "create")],
        vec![],
        vec![("action", "update"), ("q", "build")],
    ] {
        let mut query = other.clone();
        query.push(("cursor", &cursor));
        let reply = w.list(&query).await;
        assert_eq!(reply.status, 400, "{other:?}");
        assert_eq!(reply.body["error"]["code"], "invalid_cursor");
    }
    let elsewhere = w
        .call_organization(
            Some(&w.org),
            &w.org,
            "",
            &[("action", "update"), ("cursor", &cursor)],
        )
        .await;
    assert_eq!(
        elsewhere.body["error"]["code"], "invalid_cursor",
        "a project's cursor is not the organization's"
    );
}

#[tokio::test]
async fn the_organization_lists_every_projects_events_newest_first_deleted_registries_included() {
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    let start =
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(3600);
    // Three projects interleaved in time: this one (configured), another (never configured: a
    // deleted registry's logs), a third; and another organization's events at the same times.
    let projects = [
        w.project.clone(),
        unique("deleted-registry"),
        unique("third"),
    ];
    let mine = across(&w.org, &projects, 30, start, Duration::from_secs(60));
    let theirs: Vec<Value> = (0..5)
        .map(|i| {
            event_at(
                &unique("other-org"),
                &projects[0],
                start + Duration::from_secs(60 * i as u64 + 30),
                100 + i,
            )
        })
        .collect();
    w.store(&mine).await;
    w.store(&theirs).await;
    let (found, pages) = all_pages(&w, true, &[("limit", "7")]).await;
    assert_eq!(found, newest_first(29, |_| true));
    assert_eq!(pages.len(), 5);
    // Filters and ranges apply across projects.
    let since = mine[10]["timestamp"].as_str().unwrap().to_owned();
    let (failed, _) = all_pages(&w, true, &[("status", "FAILED"), ("since", &since)]).await;
    assert_eq!(failed, newest_first(29, |n| n >= 10 && n % 5 == 3));
    // Every event exactly as sent.
    let page = w
        .call_organization(Some(&w.org), &w.org, "", &[("limit", "1")])
        .await;
    assert_eq!(page.body["events"][0], mine[29]);
    // Only members of the organization.
    let intruder = w.call_organization(Some("intruder"), &w.org, "", &[]).await;
    assert_eq!(intruder.status, 403);
    let anonymous = w.call_organization(None, &w.org, "", &[]).await;
    assert_eq!(anonymous.status, 401);
}

/// Two projects may hold an event under the same sort key (the same time, and a message id
/// claimed alike in both): an organization's pages of one event list both, each once.
#[tokio::test]
async fn the_organization_lists_both_events_two_projects_hold_under_one_sort_key() {
    let w = World::new().await;
    let t = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(60);
    let id = unique("claimed");
    for (n, project) in [unique("twin-a"), unique("twin-b")].iter().enumerate() {
        // One message at a time, as two producers' would come.
        w.store_as(&[(id.clone(), event_at(&w.org, project, t, n))])
            .await;
    }
    for limit in ["1", "2"] {
        let (found, _) = all_pages(&w, true, &[("limit", limit)]).await;
        assert_eq!(found, [1, 0], "limit {limit}");
    }
}

#[tokio::test]
async fn projects_whose_events_were_stored_before_they_were_noted_are_found_after_noting() {
    let w = World::new().await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let (old, odd) = (unique("old"), unique("odd#project%"));
    // Written as capture wrote them before it noted projects.
    w.store_as_before(&[
        event_at(&w.org, &old, now - Duration::from_secs(600), 1),
        event_at(&w.org, &odd, now - Duration::from_secs(60), 2),
    ])
    .await;
    let before = w
        .call_organization(Some(&w.org), &w.org, "/projects", &[])
        .await;
    assert_eq!(before.body["projects"], json!([]));
    // One of them noted as capture noted projects from 2026-12-01 to 06, without a TTL, and
    // the other already noted for longer than its events (another container's, dated ahead).
    let dynamodb = aws_sdk_dynamodb::Client::new(&w.aws);
    let notes = audit_log::streaming::ConfigTable::new(dynamodb.clone(), &w.config_table);
    let far = (now + Duration::from_secs(800 * 86_400)).unix_timestamp();
    audit_log::streaming::ProjectIndex::note(
        &notes,
        &[
            ((w.org.clone(), old.clone()), None),
            ((w.org.clone(), odd.clone()), Some(far)),
        ],
    )
    .await
    .unwrap();
    // The README's command, as an operator runs it against the stack's tables (`cargo test
    // --workspace` builds it for the capture package's own tests).
    let binary = audit_log_tests::repo_root().join("target/debug/audit-log-note-projects");
    let out = std::process::Command::new(&binary)
        .env("EVENTS_TABLE_NAME", &w.events_table)
        .env("CONFIG_TABLE_NAME", &w.config_table)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (cargo test builds it with the capture package)",
                binary.display()
            )
        });
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.starts_with("noted "), "{said}");
    // Each note lasts as long as capture's would: past its project's last event; the one
    // without a TTL has one now, the longer one is kept.
    let mut last_expiry = std::collections::BTreeMap::<String, i64>::new();
    for (project, at) in audit_log_tests::scan_all(&dynamodb, &w.events_table)
        .await
        .iter()
        .map(|item| {
            let pk = item[audit_log::store::attr::PARTITION_KEY].as_s().unwrap();
            let (_, project) = audit_log::store::project_of(pk).unwrap();
            (
                project,
                audit_log::store::StoredKey::of(item).unwrap().expires_at,
            )
        })
    {
        let kept = last_expiry.entry(project).or_insert(at);
        *kept = (*kept).max(at);
    }
    let ahead = audit_log::streaming::NOTE_AHEAD_SECONDS;
    for (project, expected) in [(&old, last_expiry[old.as_str()] + ahead), (&odd, far)] {
        let note = audit_log_tests::scan_all(&dynamodb, &w.config_table)
            .await
            .into_iter()
            .find(|item| item.get("project_id").and_then(|v| v.as_s().ok()) == Some(project))
            .unwrap();
        let until = note
            .get("expires_at")
            .map(|at| at.as_n().unwrap().parse::<i64>().unwrap());
        assert_eq!(until, Some(expected), "{project}");
    }
    let pages = pages_of(&w, Listing::Projects, &[]).await;
    let mut found: Vec<&str> = pages
        .iter()
        .flat_map(|p| p.body["projects"].as_array().unwrap())
        .map(|p| p["project_id"].as_str().unwrap())
        .collect();
    found.sort_unstable();
    let mut expected = [old.as_str(), odd.as_str()];
    expected.sort_unstable();
    assert_eq!(found, expected);
    let (all, _) = all_pages(&w, true, &[]).await;
    assert_eq!(all, [2, 1]);
}

#[tokio::test]
async fn a_rare_search_across_many_projects_moves_on_every_page() {
    // Twelve projects, a budget of 30 items a page: less than one chunk of each.
    let w = World::with(|api| api.with_search_budget(30)).await;
    let start =
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(7200);
    let projects: Vec<String> = (0..12).map(|i| format!("{}-{i}", w.project)).collect();
    let events = across(&w.org, &projects, 120, start, Duration::from_secs(30));
    w.store(&events).await;
    let (found, pages) = all_pages(&w, true, &[("status", "FAILED")]).await;
    assert_eq!(found, newest_first(119, |n| n % 5 == 3));
    assert!(pages.len() <= 20, "{} pages for 120 events", pages.len());
}

#[tokio::test]
async fn listing_projects_reads_past_an_expired_tail_at_a_bounded_cost() {
    // GIVEN a project whose 4,000 oldest events are past their TTL and still in the table
    // (DynamoDB takes days to delete them; the emulator never does) before two live ones, and
    // a project whose 4,000 events have all expired
    let mut w = World::new().await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let long_ago = now - Duration::from_secs(500 * 86_400);
    let (tail, gone) = (unique("tail"), unique("gone"));
    for project in [&tail, &gone] {
        let expired: Vec<Value> = (0..4_000)
            .map(|i| event_at(&w.org, project, long_ago + Duration::from_secs(i as u64), i))
            .collect();
        for chunk in expired.chunks(1_000) {
            w.store(chunk).await;
        }
    }
    let live = [
        now - Duration::from_secs(3_600),
        now - Duration::from_secs(60),
    ];
    w.store(&[
        event_at(&w.org, &tail, live[0], 1),
        event_at(&w.org, &tail, live[1], 2),
    ])
    .await;
    // WHEN the organization's projects are listed, through a proxy that counts the reads
    let proxy = audit_log_tests::faults::AwsProxy::start(
        std::env::var("AWS_ENDPOINT_URL").unwrap(),
        audit_log_tests::faults::AwsFaults::default(),
    )
    .await;
    let counted = aws_config::from_env().endpoint_url(&proxy.url).load().await;
    w.api = Api::new(settings(&w.parts()), &counted);
    let reply = w
        .call_organization(Some(&w.org), &w.org, "/projects", &[])
        .await;
    // THEN the tail's project is listed from its oldest live event, the other not at all
    assert_eq!(reply.status, 200, "{}", reply.body);
    let rfc = |t: OffsetDateTime| t.format(&Rfc3339).unwrap();
    assert_eq!(
        reply.body["projects"],
        json!([{"project_id": tail, "newest_event_at": rfc(live[1]), "oldest_event_at": rfc(live[0])}])
    );
    // AND each end of a partition read a few items, then at most one step of expired items,
    // before going straight to where live events start: the noted projects (1), the tail's
    // newest (1) and oldest (3), where reading every expired item takes 5 each; the other's
    // note expired with its events, and its partition is not read
    assert_eq!(proxy.count("Query"), 5);
    // AND a note of such a project written before notes had a TTL (it stays) costs its newest
    // (3) more
    use audit_log::streaming::ProjectIndex;
    w.configs
        .note(&[((w.org.clone(), gone.clone()), None)])
        .await
        .unwrap();
    let again = w
        .call_organization(Some(&w.org), &w.org, "/projects", &[])
        .await;
    assert_eq!(again.body["projects"], reply.body["projects"]);
    assert_eq!(proxy.count("Query"), 5 + 8);
}

#[tokio::test]
async fn projects_with_stored_events_are_listed_with_their_newest_and_oldest_event() {
    let w = World::new().await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let at = |ago: u64| now - Duration::from_secs(ago);
    let gone = unique("gone");
    let expired = unique("expired");
    w.store(&[
        event_at(&w.org, &w.project, at(3600), 1),
        event_at(&w.org, &w.project, at(60), 2),
        event_at(&w.org, &w.project, at(600), 3),
        event_at(&w.org, &gone, at(7200), 4),
        // Past its TTL: DynamoDB has not deleted it yet, but it is not listed.
        event_at(&w.org, &expired, now - Duration::from_secs(500 * 86_400), 5),
        event_at(&unique("other-org"), &unique("theirs"), at(10), 6),
    ])
    .await;
    let reply = w
        .call_organization(Some(&w.org), &w.org, "/projects", &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let rfc = |t: OffsetDateTime| t.format(&Rfc3339).unwrap();
    let mut listed = reply.body["projects"].as_array().unwrap().clone();
    listed.sort_by_key(|p| p["project_id"].as_str().unwrap().to_owned());
    let mut expected = vec![
        json!({"project_id": w.project, "newest_event_at": rfc(at(60)), "oldest_event_at": rfc(at(3600))}),
        json!({"project_id": gone, "newest_event_at": rfc(at(7200)), "oldest_event_at": rfc(at(7200))}),
    ];
    expected.sort_by_key(|p| p["project_id"].as_str().unwrap().to_owned());
    assert_eq!(listed, expected);
    assert!(reply.body["next_cursor"].is_null());
    // One noted project per page (a page may list none: the expired project's).
    let pages = pages_of(&w, Listing::Projects, &[("limit", "1")]).await;
    assert!(
        pages
            .iter()
            .all(|p| p.body["projects"].as_array().unwrap().len() <= 1)
    );
    let mut paged: Vec<Value> = pages
        .iter()
        .flat_map(|p| p.body["projects"].as_array().unwrap().clone())
        .collect();
    paged.sort_by_key(|p| p["project_id"].as_str().unwrap().to_owned());
    assert_eq!(paged, expected);
    let intruder = w
        .call_organization(Some("intruder"), &w.org, "/projects", &[])
        .await;
    assert_eq!(intruder.status, 403);
    // The listing's bounds, as for events: a page looks at 100 projects at most.
    let most = w
        .call_organization(Some(&w.org), &w.org, "/projects", &[("limit", "1000")])
        .await;
    assert_eq!(most.status, 200, "{}", most.body);
    assert_eq!(most.body["projects"].as_array().unwrap().len(), 2);
    let bad = w
        .call_organization(Some(&w.org), &w.org, "/projects", &[("limit", "1001")])
        .await;
    assert_eq!(bad.status, 400);
    let foreign = w
        .call_organization(
            Some(&w.org),
            &w.org,
            "/projects",
            &[("cursor", "bm90IGEgY3Vyc29y")],
        )
        .await;
    assert_eq!(foreign.body["error"]["code"], "invalid_cursor");
}

#[tokio::test]
async fn a_search_through_large_events_that_pack_small_holds_a_bounded_part_unpacked() {
    use audit_log::store::pages::Chunks;
    use audit_log::store::{PageRequest, partition_key};
    let w = World::new().await;
    // Events of about 1 MiB that pack to a few kilobytes: one query reads all 40 of them,
    // 40 MiB once unpacked.
    let start = OffsetDateTime::now_utc() - Duration::from_secs(600);
    let bodies: Vec<(String, String)> = (0..40)
        .map(|i| {
            let mut event = event_at(
                &w.org,
                &w.project,
                start + Duration::from_secs(i),
                i as usize,
            );
            event["note"] = json!("all work and no play ".repeat(49_000));
            (unique("m"), event.to_string())
        })
        .collect();
    w.store_texts(&bodies).await;
    let request = PageRequest::new(
        1_000,
        usize::MAX,
        OffsetDateTime::now_utc().unix_timestamp(),
    );
    let chunk = w
        .events
        .chunk(
            &partition_key(&w.org, &w.project),
            &request,
            None,
            1_000,
            32 << 20,
        )
        .await
        .unwrap();
    let held: usize = chunk
        .events
        .iter()
        .map(|(_, e)| e.as_ref().unwrap().len())
        .sum();
    assert!(
        (1..40).contains(&chunk.events.len()) && held < (32 << 20) + (1 << 20),
        "{} events, {held} bytes unpacked at once",
        chunk.events.len()
    );
    assert_eq!(
        chunk.next.as_deref(),
        Some(chunk.events.last().unwrap().0.sort_key.as_str()),
        "the next chunk goes on below the last one held"
    );
    assert_eq!(
        chunk.scanned, 40,
        "what the query read counts against the budget"
    );

    // A search that matches none of them reads through them all (a page's 32 MiB, one
    // project's share, a chunk at a time); listed, each comes once.
    let (_, searched) = all_pages(&w, false, &[("q", "nowhere to be found")]).await;
    assert!(
        searched
            .iter()
            .all(|p| p.body["events"].as_array().unwrap().is_empty())
    );
    let (listed, _) = all_pages(&w, false, &[]).await;
    assert_eq!(listed, newest_first(39, |_| true));
}
