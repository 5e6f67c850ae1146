//! Routes: the OpenAPI document, the template's routes and settings, and what no route serves.

use super::*;

#[tokio::test]
async fn every_documented_route_answers_as_documented() {
    let w = World::new().await;
    w.mount(validate().respond_with(ResponseTemplate::new(200)))
        .await;
    w.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    let operations = w.openapi.operations();
    assert_eq!(operations.len(), 15);
    let (mut replay_id, mut export_id) = (String::new(), String::new());
    for (method, template) in operations {
        if let Some(suffix) = template.strip_prefix(ORGANIZATION_BASE) {
            let reply = w.call_organization(Some(&w.org), &w.org, suffix, &[]).await;
            assert_eq!(reply.status, 200, "{method} {template}: {}", reply.body);
            continue;
        }
        // Every route but DELETE answers about a saved destination.
        if method != "DELETE" {
            w.put(datadog(Some(KEY))).await;
        }
        let suffix = template
            .strip_prefix(BASE)
            .unwrap()
            .replace("{replay_id}", &replay_id)
            .replace("{export_id}", &export_id);
        let body = match (method.as_str(), suffix.as_str()) {
            ("POST", "/streaming/replay") => {
                Some(json!({"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"}))
            }
            ("POST", "/streaming/pause" | "/streaming/resume") => None,
            ("POST", "/exports") => Some(json!({"format": "csv", "status": "FAILED"})),
            ("PUT", _) | ("POST", _) => Some(datadog(Some(KEY))),
            _ => None,
        };
        // `call` checks the answer against the document.
        let reply = w.call(&method, &suffix, body).await;
        assert!(
            reply.status < 300,
            "{method} {template}: {} {}",
            reply.status,
            reply.body
        );
        if let Some(id) = reply.body["replay_id"].as_str() {
            replay_id = id.to_owned();
        }
        if template.ends_with("/exports")
            && let Some(id) = reply.body["id"].as_str()
        {
            export_id = id.to_owned();
        }
    }
}

#[tokio::test]
async fn unknown_routes_are_404_to_the_organizations_own_callers_only() {
    let w = World::new().await;
    let request = api_request(
        "GET",
        "/v1/organizations/o/projects/p/elsewhere",
        &[],
        &[],
        None,
        Some(&[("organization_id", "o")]),
    );
    assert_eq!(w.api.respond(&request).await.status_code, 404);
    let request = api_request(
        "PATCH",
        "/v1/organizations/o/projects/p/audit-logs/streaming",
        &[],
        &[],
        None,
        Some(&[("organization_id", "o")]),
    );
    assert_eq!(w.api.respond(&request).await.status_code, 404);
    // Whose the path is, before whether it is well formed or a route at all: another
    // organization's caller learns nothing of a path of its.
    let long = "p".repeat(256);
    for (method, path, own) in [
        (
            "GET",
            format!("/v1/organizations/o/projects/{long}/audit-logs/streaming"),
            (400, "invalid_path"),
        ),
        (
            "PATCH",
            "/v1/organizations/o/projects/p/audit-logs/streaming".into(),
            (404, "not_found"),
        ),
        (
            "GET",
            "/v1/organizations/o/audit-logs/nowhere".into(),
            (404, "not_found"),
        ),
    ] {
        for (claims, (status, code)) in [
            (
                Some(&[("organization_id", "other")][..]),
                (403, "forbidden"),
            ),
            (None, (401, "unauthenticated")),
            (Some(&[("organization_id", "o")][..]), own),
        ] {
            let request = api_request(method, &path, &[], &[], None, claims);
            let response = w.api.respond(&request).await;
            let Some(Body::Text(text)) = &response.body else {
                panic!("no body")
            };
            let body: Value = serde_json::from_str(text).unwrap();
            assert_eq!(response.status_code, status, "{method} {path} {claims:?}");
            assert_eq!(body["error"]["code"], code, "{method} {path} {claims:?}");
        }
    }
}

#[tokio::test]
async fn an_event_made_after_aws_example_with_only_its_path_method_and_claims_set_is_served() {
    // As `sam local generate-event apigateway http-api-proxy` writes it: its `$default` route
    // key, its raw query and parameters (`parameter1`...), its base64 body, its claims.
    let w = World::new().await;
    assert_eq!(w.put(cloudwatch()).await.status, 200);
    let example: Value = serde_json::from_str(&audit_log::fixtures::lambda_event(
        "apigw-http-api-request.json",
    ))
    .unwrap();
    let base = format!(
        "/v1/organizations/{}/projects/{}/audit-logs",
        w.org, w.project
    );
    for (method, suffix, status) in [
        ("GET", "/streaming", 200),
        ("GET", "", 200),
        ("POST", "/streaming/pause", 200),
        ("POST", "/streaming/resume", 200),
        ("DELETE", "/streaming", 204),
    ] {
        let mut event = example.clone();
        let path = format!("{base}{suffix}");
        event["rawPath"] = path.clone().into();
        event["requestContext"]["http"]["method"] = method.into();
        event["requestContext"]["http"]["path"] = path.into();
        event["requestContext"]["authorizer"]["jwt"]["claims"]["organization_id"] =
            w.org.clone().into();
        let request = serde_json::from_value(event).unwrap();
        let response = w.api.respond(&request).await;
        assert_eq!(
            response.status_code, status,
            "{method} {suffix}: {:?}",
            response.body
        );
    }
}

#[tokio::test]
async fn the_catch_all_route_is_a_404_of_the_api_for_what_the_function_does_not_serve() {
    // The template's catch-all: no path, no method, the default JWT authorizer.
    let events = &audit_log_tests::resource("ApiFunction")["Events"];
    let catch_all: Vec<&serde_yaml::Value> = events
        .as_mapping()
        .unwrap()
        .values()
        .filter(|e| e["Type"].as_str() == Some("HttpApi"))
        .filter(|e| e["Properties"].get("Path").is_none())
        .collect();
    assert_eq!(catch_all.len(), 1, "one catch-all route");
    let properties = &catch_all[0]["Properties"];
    assert!(properties.get("Method").is_none());
    assert!(
        properties.get("Auth").is_none(),
        "it keeps the JWT authorizer"
    );
    // What API Gateway hands it: the catch-all's route key, for a method or path no route has.
    // The same key comes with a request for a route the function serves from a function URL
    // or from an event made after AWS's example (`tests/fixtures/lambda`): that one is served.
    let w = World::new().await;
    for (method, path, status) in [
        (
            "PATCH",
            "/v1/organizations/o/projects/p/audit-logs/streaming",
            404,
        ),
        ("GET", "/elsewhere", 404),
        (
            "GET",
            "/v1/organizations/o/projects/p/audit-logs/streaming",
            200,
        ),
    ] {
        let mut request = api_request(
            method,
            path,
            &[],
            &[],
            None,
            Some(&[("organization_id", "o")]),
        );
        request.route_key = Some("$default".into());
        let response = w.api.respond(&request).await;
        assert_eq!(response.status_code, status, "{method} {path}");
        let Some(Body::Text(text)) = &response.body else {
            panic!("no body")
        };
        let body: Value = serde_json::from_str(text).unwrap();
        match status {
            404 => assert_eq!(body["error"]["code"], "not_found", "{body}"),
            _ => assert_eq!(body["project_id"], "p", "{body}"),
        }
    }
    // Served by the catch-all, a route is still the caller's organization's only.
    let path = "/v1/organizations/o/projects/p/audit-logs/streaming";
    for (claims, status) in [
        (Some(&[("organization_id", "other")][..]), 403),
        (None, 401),
    ] {
        let mut request = api_request("GET", path, &[], &[], None, claims);
        request.route_key = Some("$default".into());
        assert_eq!(
            w.api.respond(&request).await.status_code,
            status,
            "{claims:?}"
        );
    }
}

#[test]
fn the_template_gives_the_api_exactly_the_settings_it_reads() {
    let mut expected: Vec<String> = audit_log_api::ENVIRONMENT
        .iter()
        .map(|s| s.to_string())
        .collect();
    expected.sort();
    assert_eq!(environment_of("ApiFunction"), expected);
}

/// The api function's HTTP routes in the template: the API's, or the console's static files.
fn template_routes(console: bool) -> Vec<serde_yaml::Value> {
    let events = &audit_log_tests::resource("ApiFunction")["Events"];
    events
        .as_mapping()
        .unwrap()
        .values()
        .filter(|e| e["Type"].as_str() == Some("HttpApi"))
        .filter(|e| {
            // The catch-all route has no path.
            let Some(path) = e["Properties"]["Path"].as_str() else {
                return false;
            };
            audit_log_api::console::is_console(path) == console
        })
        .cloned()
        .collect()
}

#[test]
fn only_the_console_files_are_served_without_a_token() {
    let console = template_routes(true);
    let paths: Vec<&str> = console
        .iter()
        .map(|e| e["Properties"]["Path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    for e in &console {
        assert_eq!(e["Properties"]["Method"].as_str(), Some("GET"));
        assert_eq!(e["Properties"]["Auth"]["Authorizer"].as_str(), Some("NONE"));
    }
    for e in template_routes(false) {
        assert!(
            e["Properties"].get("Auth").is_none(),
            "an API route keeps the default JWT authorizer: {e:?}"
        );
    }
}

#[test]
fn the_template_routes_match_the_openapi_document() {
    let mut routes: Vec<(String, String)> = template_routes(false)
        .iter()
        .map(|e| {
            (
                e["Properties"]["Method"].as_str().unwrap().to_owned(),
                e["Properties"]["Path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    routes.sort();
    let mut documented = OpenApi::load().operations();
    documented.sort();
    assert_eq!(routes, documented);
}

/// A DELETE without `If-Match` that saves keep beating, or whose secret Secrets Manager is
/// still deleting, is told to retry: the document says so beside the other statuses.
#[test]
fn stopping_streaming_documents_its_429() {
    let openapi = OpenApi::load();
    let path = "/v1/organizations/{organization_id}/projects/{project_id}/audit-logs/streaming";
    let responses = &openapi.doc["paths"][path]["delete"]["responses"];
    for status in ["204", "400", "412", "429"] {
        assert!(
            responses.get(status).is_some(),
            "DELETE {path}: no {status}"
        );
    }
}
