use super::*;
use crate::fixtures;
use serde_json::json;
use strum::IntoEnumIterator;

fn valid() -> Value {
    json!({
        "status": "OK",
        "action": "create",
        "description": "Created bucket",
        "organization_id": "77f447d4-def0-46f2-bf09-6850d36745ed",
        "project_id": "a98c3c31-5760-4db1-b62b-0988080a66ad",
        "timestamp": "2023-07-14T17:23:21Z",
        "actor": {"principal_id": "6f212631", "type": "TYPE_USER"}
    })
}

fn with(path: &[&str], replacement: Option<Value>) -> Value {
    let mut v = valid();
    let (last, parents) = path.split_last().unwrap();
    let mut target = &mut v;
    for p in parents {
        target = target.get_mut(*p).unwrap();
    }
    let obj = target.as_object_mut().unwrap();
    match replacement {
        Some(r) => {
            obj.insert(last.to_string(), r);
        }
        None => {
            obj.remove(*last);
        }
    }
    v
}

const REQUIRED: [(&[&str], &str); 8] = [
    (&["status"], "status"),
    (&["action"], "action"),
    (&["description"], "description"),
    (&["organization_id"], "organization_id"),
    (&["project_id"], "project_id"),
    (&["timestamp"], "timestamp"),
    (&["actor"], "actor"),
    (&["actor", "principal_id"], "actor.principal_id"),
];

#[test]
fn ids_follow_the_id_rules() {
    for (id, field) in [
        ("organization_id", "organization_id"),
        ("project_id", "project_id"),
    ] {
        for bad in [
            "".to_owned(),
            "a\nb".to_owned(),
            "😀".repeat(256),
            "x".repeat(256),
        ] {
            let err = AuditEvent::from_value(with(&[id], Some(json!(bad)))).unwrap_err();
            assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
            assert!(bad.is_empty() || !err.to_string().contains(&bad), "{err}");
        }
    }
}

#[test]
fn a_minimal_event_is_accepted() {
    let e = AuditEvent::from_value(valid()).unwrap();
    assert_eq!(e.organization_id(), "77f447d4-def0-46f2-bf09-6850d36745ed");
    assert_eq!(e.project_id(), "a98c3c31-5760-4db1-b62b-0988080a66ad");
    assert_eq!(e.status(), Status::Ok);
    assert_eq!(e.action(), Action::Create);
    assert_eq!(e.timestamp().unix_timestamp(), 1_689_355_401);
}

#[test]
fn every_required_field_missing_is_named() {
    let mut all = REQUIRED.to_vec();
    all.push((&["actor", "type"], "actor.type"));
    for (path, name) in all {
        let err = AuditEvent::from_value(with(path, None)).unwrap_err();
        assert_eq!(err, EventError::Missing(name), "removing {name}");
        let err = AuditEvent::from_value(with(path, Some(Value::Null))).unwrap_err();
        assert_eq!(err, EventError::Missing(name), "null {name}");
    }
}

#[test]
fn every_required_field_of_the_wrong_type_is_named() {
    for (path, name) in REQUIRED
        .iter()
        .chain([(&["actor", "type"][..], "actor.type")].iter())
    {
        for wrong in [json!(42), json!(true), json!(["x"]), json!({"x": 1})] {
            let expect_object = *name == "actor";
            if expect_object && wrong.is_object() {
                continue;
            }
            let err = AuditEvent::from_value(with(path, Some(wrong.clone()))).unwrap_err();
            let expected = if expect_object {
                "an object"
            } else {
                "a string"
            };
            assert_eq!(
                err,
                EventError::WrongType {
                    field: name,
                    expected
                },
                "{name} = {wrong}"
            );
        }
    }
    assert_eq!(
        AuditEvent::from_value(with(&["actor"], Some(json!("someone")))).unwrap_err(),
        EventError::WrongType {
            field: "actor",
            expected: "an object"
        }
    );
}

#[test]
fn empty_text_fields_are_refused() {
    for name in ["description", "organization_id", "project_id"] {
        let err = AuditEvent::from_value(with(&[name], Some(json!("")))).unwrap_err();
        assert_eq!(err, EventError::Empty(name));
        // The contract asks for non-empty text: spaces are text.
        let kept = AuditEvent::from_value(with(&[name], Some(json!("   ")))).unwrap();
        assert!(kept.json().contains(r#""   ""#), "{name}");
    }
}

#[test]
fn every_enum_value_is_accepted_and_others_refused() {
    for s in Status::iter() {
        let e = AuditEvent::from_value(with(&["status"], Some(json!(s.as_str())))).unwrap();
        assert_eq!(e.status(), s);
    }
    for a in Action::iter() {
        let e = AuditEvent::from_value(with(&["action"], Some(json!(a.as_str())))).unwrap();
        assert_eq!(e.action(), a);
    }
    for t in ActorType::iter() {
        AuditEvent::from_value(with(&["actor", "type"], Some(json!(t.as_str())))).unwrap();
    }
    for (path, bad) in [
        (&["status"][..], "ok"),
        (&["status"], "SUCCESS"),
        (&["action"], "CREATE"),
        (&["action"], "revoke"),
        (&["actor", "type"], "PERSON"),
        (&["actor", "type"], "type_user"),
    ] {
        let err = AuditEvent::from_value(with(path, Some(json!(bad)))).unwrap_err();
        assert!(
            matches!(err, EventError::NotAllowed { .. }),
            "{path:?}={bad}: {err}"
        );
        assert!(
            !err.to_string().contains(bad),
            "the reason must not echo the value"
        );
    }
}

#[test]
fn a_timestamp_not_joined_by_t_or_a_space_is_refused_coming_in_and_read_when_stored() {
    for joined in ["2023-07-14X17:23:21Z", "2023-07-14\u{7f}17:23:21Z"] {
        let event = with(&["timestamp"], Some(json!(joined)));
        // Coming in, by either path (a required field given twice takes the parsed one)
        let body = event.to_string();
        let parsed_path = body.replacen('{', "{\"status\":\"OK\",", 1);
        for body in [&body, &parsed_path] {
            let refused = AuditEvent::from_json(body).unwrap_err();
            assert_eq!(refused, EventError::BadTimestamp, "{joined:?}");
        }
        assert!(AuditEvent::from_value(event.clone()).is_err(), "{joined:?}");
        // Stored before capture held it to that, it still reads back, by either path
        for stored in [body, parsed_path] {
            let read =
                AuditEvent::from_stored(stored).unwrap_or_else(|e| panic!("{joined:?}: {e}"));
            assert_eq!(read.timestamp().unix_timestamp(), 1_689_355_401);
        }
    }
}

#[test]
fn bad_timestamps_are_refused() {
    for bad in [
        "",
        "yesterday",
        "2023-07-14",
        "2023-07-14 17:23:21",
        "2023-07-14_17:23:21Z",
        "2023-07-14T17:23:21",
        "2023-13-14T17:23:21Z",
        "2023-07-14T25:23:21Z",
        "2023-07-14T17:23:21+02:00",
        "2023-07-14 17:34:31.196808811 +0000 UTC",
        "1689355401",
    ] {
        let err = AuditEvent::from_value(with(&["timestamp"], Some(json!(bad)))).unwrap_err();
        assert_eq!(err, EventError::BadTimestamp, "{bad:?}");
    }
    for good in [
        "2023-07-14T17:23:21Z",
        "2023-07-14T17:23:21.123456789Z",
        "2023-07-14T17:23:21+00:00",
        "2023-07-14t17:23:21z",
        // RFC 3339 lets a space join them, for readability (its section 5.6), as Python's
        // `str()` of a datetime does.
        "2023-07-14 17:23:21Z",
        "2023-07-14 17:23:21.123456+00:00",
    ] {
        let event = AuditEvent::from_value(with(&["timestamp"], Some(json!(good))))
            .unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(event.timestamp().unix_timestamp(), 1_689_355_401, "{good}");
        let body = with(&["timestamp"], Some(json!(good))).to_string();
        AuditEvent::from_json(&body).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

#[test]
fn unknown_fields_are_kept_verbatim_and_in_order() {
    let body = r#"{"zeta":{"nested":[1,2.5,"x",null]},"status":"OK","action":"read","description":"d","organization_id":"o","project_id":"p","timestamp":"2024-01-01T00:00:00Z","actor":{"type":"TYPE_ANONYMOUS","principal_id":"","extra":true},"alpha":"kept","skip_descendants_revocation":true}"#;
    let e = AuditEvent::from_json(body).unwrap();
    assert_eq!(e.json(), body);
}

#[test]
fn whitespace_is_compacted_but_the_value_is_unchanged() {
    let pretty = serde_json::to_string_pretty(&valid()).unwrap();
    let e = AuditEvent::from_json(&pretty).unwrap();
    let compact = e.json();
    assert!(!compact.contains('\n') && !compact.contains(": "));
    assert_eq!(serde_json::from_str::<Value>(compact).unwrap(), valid());
}

#[test]
fn a_leading_byte_order_mark_is_not_part_of_the_event() {
    let body = format!("\u{feff}{}", valid());
    let e = AuditEvent::from_json(&body).unwrap();
    assert_eq!(serde_json::from_str::<Value>(e.json()).unwrap(), valid());
    assert!(!e.json().contains('\u{feff}'));
    // Only at the start: anywhere else it is text JSON does not allow between tokens.
    let inside = format!("{} \u{feff}", valid());
    assert!(AuditEvent::from_json(&inside).is_err());
}

#[test]
fn non_objects_and_non_json_are_refused_without_echo() {
    assert_eq!(
        AuditEvent::from_json("[1,2]").unwrap_err(),
        EventError::NotAnObject
    );
    assert_eq!(
        AuditEvent::from_json("\"s\"").unwrap_err(),
        EventError::NotAnObject
    );
    let err = AuditEvent::from_json("{\"secret-token-123\": ").unwrap_err();
    assert!(matches!(err, EventError::NotJson(_)));
    assert!(!err.to_string().contains("secret-token-123"), "{err}");
    let err = AuditEvent::from_json("not json secret-token-123").unwrap_err();
    assert!(!err.to_string().contains("secret-token-123"), "{err}");
}

#[test]
fn bodies_over_the_sqs_limit_are_refused_before_parsing() {
    let body = format!("{{\"pad\":\"{}\"}}", "a".repeat(MAX_EVENT_BYTES));
    assert!(matches!(
        AuditEvent::from_json(&body).unwrap_err(),
        EventError::TooLarge { .. }
    ));
}

#[test]
fn every_seed_example_is_accepted() {
    for (name, body) in fixtures::SEED_EVENTS {
        let e = AuditEvent::from_json(body).unwrap_or_else(|err| panic!("{name}: {err}"));
        let original: Value = serde_json::from_str(body).unwrap();
        assert_eq!(e.clone().into_value(), original, "{name}");
        assert_eq!(e.organization_id(), "77f447d4-def0-46f2-bf09-6850d36745ed");
    }
    assert_eq!(fixtures::SEED_EVENTS.len(), 5);
}

#[test]
fn the_seed_examples_keep_their_undocumented_fields() {
    let (_, revoked) = fixtures::SEED_EVENTS
        .iter()
        .find(|(name, _)| *name == "version-revoked")
        .unwrap();
    let e = AuditEvent::from_json(revoked).unwrap();
    assert_eq!(e.fields()["skip_descendants_revocation"], json!(true));
}

#[test]
fn capture_refuses_a_required_field_given_twice() {
    let compact = valid().to_string();
    let twice = |from: &str, to: &str| {
        assert!(compact.contains(from), "{from}");
        AuditEvent::from_json(&compact.replacen(from, to, 1))
    };
    // Whichever value a reader keeps, the event would be valid: refused all the same.
    for (name, (from, to)) in [
        ("status", (r#"{"#, r#"{"status":"ERROR","#)),
        (
            "organization_id",
            (r#"}}"#, r#"},"organization_id":"other"}"#),
        ),
        ("actor", (r#"{"status""#, r#"{"actor":"someone","status""#)),
        (
            "actor",
            (
                r#"}}"#,
                r#"},"actor":{"principal_id":"p","type":"TYPE_SERVICE"}}"#,
            ),
        ),
        (
            "actor.type",
            (r#""type""#, r#""type":"TYPE_SERVICE","type""#),
        ),
        ("actor.principal_id", (r#"}}"#, r#","principal_id":"p"}}"#)),
        // Named with an escape, the same name to every reader.
        ("project_id", (r#"{"#, r#"{"pr\u006fject_id":"p","#)),
    ] {
        assert_eq!(twice(from, to), Err(EventError::GivenTwice(name)), "{to}");
    }
    assert_eq!(
        EventError::GivenTwice("actor.type").to_string(),
        "`actor.type` is given twice: an event names each of its required fields once"
    );
    // A value wrong either way is named as before.
    assert!(matches!(
        twice(r#"}}"#, r#"},"status":"BAD"}"#),
        Err(EventError::NotAllowed {
            field: "status",
            ..
        })
    ));
    // Other fields, and required names inside other fields, are the producer's to repeat.
    for (from, to) in [
        (r#"}}"#, r#"},"bucket":1,"bucket":2}"#),
        (
            r#"}}"#,
            r#"},"bucket":{"status":"a","status":"b","actor":[1],"actor":{}}}"#,
        ),
        (r#""type""#, r#""name":"a","name":"b","type""#),
    ] {
        let body = compact.replacen(from, to, 1);
        assert_eq!(AuditEvent::from_json(&body).unwrap().json(), body, "{to}");
    }
}

#[test]
fn a_stored_event_with_a_field_given_twice_reads_with_its_last_value() {
    // Capture took such events before it refused them: they stay readable, as it read them.
    let body = valid().to_string().replacen('{', r#"{"status":"BAD","#, 1);
    let e = AuditEvent::from_stored(body.clone()).unwrap();
    assert_eq!(e.status(), Status::Ok);
    assert_eq!(e.json(), body);
    assert_eq!(e.fields()["status"], "OK");
    let body = valid().to_string().replacen('}', r#"},"status":"BAD""#, 1);
    assert!(matches!(
        AuditEvent::from_stored(body).unwrap_err(),
        EventError::NotAllowed {
            field: "status",
            ..
        }
    ));
}

#[test]
fn arrays_are_not_events_even_with_the_fields_in_order() {
    let fields = r#"["OK","read","d","o","p","2024-01-01T00:00:00Z",["u","TYPE_USER"]]"#;
    assert_eq!(
        AuditEvent::from_json(fields).unwrap_err(),
        EventError::NotAnObject
    );
    assert_eq!(
        AuditEvent::from_stored(fields.into()).unwrap_err(),
        EventError::NotAnObject
    );
    let actor = with(&["actor"], Some(json!(["6f212631", "TYPE_USER"])));
    assert_eq!(
        AuditEvent::from_json(&actor.to_string()).unwrap_err(),
        EventError::WrongType {
            field: "actor",
            expected: "an object"
        }
    );
}

#[test]
fn escaped_text_in_required_fields_reads_as_its_value() {
    let body = valid()
        .to_string()
        .replace("Created bucket", r#"Created \"b\u00e9\" \\ bucket"#)
        .replace(r#""organization_id""#, r#""organization\u005fid""#);
    let e = AuditEvent::from_json(&body).unwrap();
    assert_eq!(e.description(), r#"Created "bé" \ bucket"#);
    assert_eq!(e.organization_id(), "77f447d4-def0-46f2-bf09-6850d36745ed");
    // Kept as the producer wrote it, escapes and all: the same JSON value.
    assert_eq!(e.json(), body);
}

#[test]
fn numbers_are_kept_as_written_and_ones_no_reader_takes_refused() {
    let body = valid().to_string().replace(
        r#""status":"OK""#,
        r#""status":"OK","build":{"n":12345678901234567890123,"r":1.50e2}"#,
    );
    assert!(body.contains("12345678901234567890123"), "{body}");
    let e = AuditEvent::from_json(&body).unwrap();
    assert_eq!(e.json(), body);
    let out_of_range = body.replace("1.50e2", "1e400");
    assert!(matches!(
        AuditEvent::from_json(&out_of_range),
        Err(EventError::NotJson(_))
    ));
}

#[test]
fn a_stored_event_reads_back_as_the_event_that_was_stored() {
    for (name, body) in fixtures::SEED_EVENTS {
        let e = AuditEvent::from_json(body).unwrap();
        assert_eq!(
            AuditEvent::from_stored(e.json().to_owned()).unwrap(),
            e,
            "{name}"
        );
    }
    // Text the in-place reading declines still reads as its event, by the parsed path.
    let twice = valid().to_string().replacen('{', r#"{"status":"BAD","#, 1);
    let read = AuditEvent::from_stored(twice.clone()).unwrap();
    assert_eq!((read.json(), read.status()), (twice.as_str(), Status::Ok));
    assert_eq!(
        AuditEvent::from_stored("{}".into()).unwrap_err(),
        EventError::Missing("status")
    );
}

#[test]
fn raw_fields_are_the_events_fields_as_json_text() {
    let e = AuditEvent::from_json(fixtures::SEED_EVENTS[0].1).unwrap();
    let raw = e.raw_fields();
    let fields = e.fields();
    assert_eq!(raw.0.len(), fields.len());
    for ((name, value), (parsed_name, parsed)) in raw.0.iter().zip(&fields) {
        assert_eq!(name, parsed_name);
        assert_eq!(&serde_json::from_str::<Value>(value.get()).unwrap(), parsed);
    }
    // A name given twice keeps its first place and its last value.
    let twice: RawFields = serde_json::from_str(r#"{"a":1,"b\u0032":2,"a":3}"#).unwrap();
    let names: Vec<(&str, &str)> = twice.0.iter().map(|(n, v)| (n.as_ref(), v.get())).collect();
    assert_eq!(names, [("a", "3"), ("b2", "2")]);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The text path and the parsed path are one validation: same verdict, same event.
        #[test]
        fn reading_in_place_and_parsing_agree(
            extra in proptest::collection::vec(("[a-z_]{1,12}", arb_json()), 0..6),
            replaced in proptest::option::of((0..REQUIRED.len(), arb_json())),
            pretty in any::<bool>(),
        ) {
            let mut v = valid();
            let obj = v.as_object_mut().unwrap();
            for (k, x) in &extra {
                obj.insert(k.clone(), x.clone());
            }
            if let Some((i, x)) = replaced {
                v = with(REQUIRED[i].0, Some(x));
            }
            let body = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
            prop_assert_eq!(AuditEvent::from_json(&body), AuditEvent::from_value(v.clone()));
        }

        #[test]
        fn arbitrary_text_never_panics(body in ".{0,300}") {
            let _ = AuditEvent::from_json(&body);
        }

        #[test]
        fn arbitrary_json_objects_never_panic(v in arb_json()) {
            let _ = AuditEvent::from_value(v);
        }

        #[test]
        fn extra_fields_survive_validation(extra in proptest::collection::btree_map("[a-z_]{1,12}", arb_json(), 0..6)) {
            let mut v = valid();
            let obj = v.as_object_mut().unwrap();
            for (k, x) in &extra {
                if !obj.contains_key(k) {
                    obj.insert(k.clone(), x.clone());
                }
            }
            let e = AuditEvent::from_value(v.clone()).unwrap();
            let back: Value = serde_json::from_str(e.json()).unwrap();
            prop_assert_eq!(back, v);
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[ -~]{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}

#[test]
fn bodies_nested_past_the_parsers_limit_are_refused_however_compact() {
    let nested = |depth: usize| {
        let mut event = valid();
        event["deep"] = json!(1);
        let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        event
            .to_string()
            .replace(r#""deep":1"#, &format!(r#""deep":{deep}"#))
    };
    for depth in [130, 200] {
        assert!(
            matches!(
                AuditEvent::from_json(&nested(depth)),
                Err(EventError::NotJson(_))
            ),
            "{depth} levels"
        );
    }
    // Deep, but within the limit: kept as it came, and read back whole.
    for depth in [100, 126] {
        let body = nested(depth);
        let kept = AuditEvent::from_json(&body).unwrap();
        assert_eq!(kept.json(), body);
        assert!(kept.fields().contains_key("deep"));
    }
    assert!(AuditEvent::from_json(&nested(127)).is_err());
}

/// Bodies the text path declines (a required field twice, an actor's field twice: stored
/// before capture refused them) are read through a parsed value, but kept as their text:
/// numbers exactly as written.
#[test]
fn every_valid_body_keeps_its_numbers_as_written() {
    let numbers = r#""build":{"n":12345678901234567890123,"r":1.50,"e":1E300}"#;
    let with_numbers = |body: String| body.replacen('{', &format!("{{{numbers},"), 1);
    let twice = valid().to_string().replacen('{', r#"{"status":"BAD","#, 1);
    let actor_twice = valid()
        .to_string()
        .replace(r#""type":"TYPE_USER""#, r#""type":"X","type":"TYPE_USER""#);
    let body = with_numbers(valid().to_string());
    assert_eq!(AuditEvent::from_json(&body).unwrap().json(), body);
    for body in [twice, actor_twice] {
        let body = with_numbers(body);
        let e = AuditEvent::from_stored(body.clone()).unwrap();
        assert_eq!(e.json(), body);
    }
}

/// A valid event's compact text with a field `x` whose JSON text is `x`.
fn with_x(x: &str) -> String {
    valid()
        .to_string()
        .replace(r#""status":"OK""#, &format!(r#""status":"OK","x":{x}"#))
}

#[test]
fn strings_serde_json_refuses_are_refused_and_the_rest_kept_as_written() {
    for refused in [r#""\ud800""#, r#""a\udc00""#, "\"a\u{1}b\"", r#""\x""#] {
        let body = with_x(refused);
        assert!(serde_json::from_str::<Value>(&body).is_err(), "{refused}");
        assert!(
            matches!(AuditEvent::from_json(&body), Err(EventError::NotJson(_))),
            "{refused}"
        );
    }
    let body = with_x(r#""\ud83d\ude00 \/ \t""#);
    assert_eq!(AuditEvent::from_json(&body).unwrap().json(), body);
}

#[test]
fn numbers_at_the_edge_of_a_double_are_judged_as_serde_json_reads_them() {
    // Near the largest double, where serde_json (as built) and Rust's own parser may round
    // apart: an event is taken exactly when serde_json reads it, and then kept as written.
    for number in [
        "1.7976931348623158e308",
        "17976931348623158e292",
        "1797693134862315787e290",
        "179769313486231581e291",
        "1.7976931348623157e308",
        "1e308",
        "1e309",
        "-1e400",
        "12345678901234567890123",
    ] {
        let body = with_x(number);
        match AuditEvent::from_json(&body) {
            Ok(event) => {
                assert!(serde_json::from_str::<Value>(&body).is_ok(), "{number}");
                assert_eq!(event.json(), body, "{number}");
            }
            Err(e) => {
                assert!(serde_json::from_str::<Value>(&body).is_err(), "{number}");
                assert!(
                    e.to_string().contains("number out of range"),
                    "{number}: {e}"
                );
            }
        }
    }
}

#[test]
fn json_that_cannot_be_read_says_why_without_repeating_it() {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let body = with_x(&deep);
    let err = AuditEvent::from_json(&body).unwrap_err();
    assert!(
        err.to_string().contains("recursion limit exceeded"),
        "{err}"
    );
    let err = AuditEvent::from_json(r#"{"x": "\ud800 secret-token-123"}"#).unwrap_err();
    assert!(err.to_string().contains("hex escape"), "{err}");
    assert!(!err.to_string().contains("secret-token-123"), "{err}");
}
