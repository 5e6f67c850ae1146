//! The input rules, field by field, with the contract's examples.

use super::*;
use serde_json::json;

fn check(body: Value) -> Result<DestinationInput, ApiError> {
    destination(body.to_string().as_bytes())
}

fn cloudwatch() -> Value {
    json!({"provider": "cloudwatch", "name": "prod-audit",
           "cloudwatch": {"role_arn": "arn:aws:iam::123456789012:role/hcp-log-streaming", "region": "us-west-2"}})
}

fn datadog() -> Value {
    json!({"provider": "datadog", "name": "dd-eu",
           "datadog": {"site": "datadoghq.eu", "api_key": "0123456789abcdef0123456789abcdef"}})
}

fn code(body: Value) -> &'static str {
    check(body).unwrap_err().code
}

#[test]
fn the_contract_examples_are_accepted() {
    let c = check(cloudwatch()).unwrap();
    assert_eq!(c.name, "prod-audit");
    assert!(matches!(c.destination, Destination::Cloudwatch(ref s) if s.region == "us-west-2"));
    let d = check(datadog()).unwrap();
    assert!(matches!(d.destination, Destination::Datadog(ref s) if s.site == DatadogSite::Eu1));
    assert!(d.api_key.is_some());
    let mut keep = datadog();
    keep["datadog"].as_object_mut().unwrap().remove("api_key");
    assert!(check(keep).unwrap().api_key.is_none());
}

#[test]
fn a_test_may_leave_the_name_out_but_not_give_a_bad_one() {
    for mut body in [cloudwatch(), datadog()] {
        body.as_object_mut().unwrap().remove("name");
        assert!(tested(body.to_string().as_bytes()).is_ok(), "{body}");
        assert_eq!(code(body.clone()), "missing_field");
        body["name"] = json!("");
        let refused = tested(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(refused.code, "invalid_field");
    }
}

#[test]
fn an_external_id_anywhere_is_refused() {
    let mut top = cloudwatch();
    top["external_id"] = json!("mine");
    assert_eq!(code(top), "external_id_not_settable");
    let mut inner = cloudwatch();
    inner["cloudwatch"]["external_id"] = json!("mine");
    assert_eq!(code(inner), "external_id_not_settable");
}

#[test]
fn unknown_fields_are_refused_and_named() {
    let mut top = datadog();
    top["colour"] = json!("blue");
    let err = check(top).unwrap_err();
    assert_eq!(err.code, "unknown_field");
    assert!(err.message.contains("colour"));
    let mut inner = datadog();
    inner["datadog"]["region"] = json!("eu");
    assert!(
        check(inner)
            .unwrap_err()
            .message
            .contains("datadog.\"region\"")
    );
}

#[test]
fn every_field_rule_is_enforced_without_echoing_values() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"name": "x", "cloudwatch": {}}),
            "missing_field",
            "provider",
        ),
        (
            json!({"provider": "splunk", "name": "x"}),
            "invalid_field",
            "provider",
        ),
        (
            json!({"provider": "cloudwatch", "cloudwatch": cloudwatch()["cloudwatch"]}),
            "missing_field",
            "name",
        ),
        (
            json!({"provider": "cloudwatch", "name": "", "cloudwatch": {}}),
            "invalid_field",
            "name",
        ),
        (
            json!({"provider": "cloudwatch", "name": "n".repeat(129), "cloudwatch": {}}),
            "invalid_field",
            "name",
        ),
        (
            json!({"provider": "cloudwatch", "name": "a\u{7}b", "cloudwatch": {}}),
            "invalid_field",
            "name",
        ),
        (
            json!({"provider": "cloudwatch", "name": 5}),
            "invalid_field",
            "name",
        ),
        (
            json!({"provider": "cloudwatch", "name": "x"}),
            "missing_field",
            "cloudwatch",
        ),
        (
            json!({"provider": "cloudwatch", "name": "x", "cloudwatch": "arn"}),
            "invalid_field",
            "cloudwatch",
        ),
        (
            json!({"provider": "cloudwatch", "name": "x", "cloudwatch": {"region": "us-west-2"}}),
            "missing_field",
            "cloudwatch.role_arn",
        ),
        (
            json!({"provider": "cloudwatch", "name": "x", "cloudwatch": {"role_arn": "arn:aws:iam::12345:role/r", "region": "us-west-2"}}),
            "invalid_field",
            "cloudwatch.role_arn",
        ),
        (
            json!({"provider": "cloudwatch", "name": "x", "cloudwatch": {"role_arn": "arn:aws:iam::123456789012:user/u", "region": "us-west-2"}}),
            "invalid_field",
            "cloudwatch.role_arn",
        ),
        (
            json!({"provider": "cloudwatch", "name": "x", "cloudwatch": {"role_arn": "arn:aws:iam::123456789012:role/r"}}),
            "missing_field",
            "cloudwatch.region",
        ),
        (
            json!({"provider": "cloudwatch", "name": "x", "cloudwatch": {"role_arn": "arn:aws:iam::123456789012:role/r", "region": "mars-1"}}),
            "invalid_field",
            "cloudwatch.region",
        ),
        (
            json!({"provider": "cloudwatch", "name": "x", "cloudwatch": {"role_arn": "arn:aws:iam::123456789012:role/r", "region": "US-WEST-2"}}),
            "invalid_field",
            "cloudwatch.region",
        ),
        (
            json!({"provider": "cloudwatch", "name": "x", "datadog": {}, "cloudwatch": {"role_arn": "arn:aws:iam::123456789012:role/r", "region": "us-west-2"}}),
            "invalid_field",
            "datadog",
        ),
        (
            json!({"provider": "datadog", "name": "x", "datadog": {"api_key": "0123456789abcdef0123456789abcdef"}}),
            "missing_field",
            "datadog.site",
        ),
        (
            json!({"provider": "datadog", "name": "x", "datadog": {"site": "evil.example.com"}}),
            "invalid_field",
            "datadog.site",
        ),
        (
            json!({"provider": "datadog", "name": "x", "datadog": {"site": "datadoghq.com", "api_key": "not-a-key-sentinel"}}),
            "invalid_field",
            "datadog.api_key",
        ),
        (
            json!({"provider": "datadog", "name": "x", "datadog": {"site": "datadoghq.com", "api_key": 97531}}),
            "invalid_field",
            "datadog.api_key",
        ),
        (
            json!({"provider": "datadog", "name": "x"}),
            "missing_field",
            "datadog",
        ),
    ];
    for (body, expected, field) in cases {
        let err = check(body.clone()).unwrap_err();
        assert_eq!(err.status, 400, "{body}");
        assert_eq!(err.code, expected, "{body}: {}", err.message);
        // First: the console says a refusal at the box it names there (console/dom.js, refused).
        assert!(
            err.message.starts_with(&format!("`{field}` ")),
            "{body}: {}",
            err.message
        );
        assert!(
            !err.message.contains("sentinel") && !err.message.contains("97531"),
            "{}",
            err.message
        );
    }
}

#[test]
fn regions_and_role_arns_of_every_partition_pass() {
    for (arn, region) in [
        ("arn:aws:iam::123456789012:role/a", "us-east-1"),
        ("arn:aws:iam::123456789012:role/a", "eu-central-2"),
        ("arn:aws:iam::123456789012:role/a", "ap-southeast-7"),
        ("arn:aws:iam::123456789012:role/a", "il-central-1"),
        ("arn:aws:iam::123456789012:role/a", "mx-central-1"),
        (
            "arn:aws-us-gov:iam::123456789012:role/path/to/role_name+=,.@-",
            "us-gov-west-1",
        ),
        (
            "arn:aws-cn:iam::123456789012:role/service-role/x",
            "cn-north-1",
        ),
    ] {
        assert!(ROLE_ARN.is_match(arn), "{arn}");
        let body = json!({"provider": "cloudwatch", "name": "x",
            "cloudwatch": {"role_arn": arn, "region": region}});
        assert!(check(body).is_ok(), "{arn} {region}");
    }
    assert_eq!(
        role_account("arn:aws:iam::123456789012:role/a"),
        "123456789012"
    );
    assert_eq!(
        role_partition("arn:aws-cn:iam::123456789012:role/a"),
        "aws-cn"
    );
}

#[test]
fn regions_that_do_not_exist_or_belong_to_another_partition_are_refused() {
    for (arn, region) in [
        ("arn:aws:iam::123456789012:role/a", "zz-evil-9"),
        ("arn:aws:iam::123456789012:role/a", "us-west-9"),
        ("arn:aws:iam::123456789012:role/a", "cn-north-1"),
        ("arn:aws-cn:iam::123456789012:role/a", "us-east-1"),
        ("arn:aws-us-gov:iam::123456789012:role/a", "us-east-1"),
    ] {
        let body = json!({"provider": "cloudwatch", "name": "x",
            "cloudwatch": {"role_arn": arn, "region": region}});
        let err = check(body).unwrap_err();
        assert_eq!((err.status, err.code), (400, "invalid_field"), "{region}");
        assert!(err.message.contains("`cloudwatch.region`"));
        assert!(!err.message.contains(region), "{}", err.message);
    }
}

#[test]
fn bodies_that_are_not_objects_are_refused() {
    assert_eq!(destination(b"{").unwrap_err().code, "invalid_json");
    assert_eq!(destination(b"[1]").unwrap_err().code, "invalid_body");
    for empty in [&b""[..], b" \n"] {
        let err = destination(empty).unwrap_err();
        assert_eq!((err.status, err.code), (400, "invalid_body"));
        assert_eq!(
            err.message,
            "the request has no body: it takes a JSON object"
        );
    }
}

mod replay {
    use super::super::*;
    use serde_json::json;

    #[test]
    fn replay_ranges_are_checked() {
        let ok = json!({"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"});
        assert!(!replay(ok.to_string().as_bytes()).unwrap().2);
        for (body, field) in [
            (json!({"until": "2026-02-01T00:00:00Z"}), "since"),
            (
                json!({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
                "until",
            ),
            (
                json!({"since": "2024-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
                "until",
            ),
            (
                json!({"since": "soon", "until": "2026-01-01T00:00:00Z"}),
                "since",
            ),
            (
                json!({"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z", "only_failed": "yes"}),
                "only_failed",
            ),
        ] {
            let err = replay(body.to_string().as_bytes()).unwrap_err();
            assert_eq!(err.status, 400, "{body}");
            assert!(
                err.message.contains(&format!("`{field}`")),
                "{body}: {}",
                err.message
            );
        }
        let extra = json!({"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z", "destination": "x"});
        assert_eq!(
            replay(extra.to_string().as_bytes()).unwrap_err().code,
            "unknown_field"
        );
    }
}
