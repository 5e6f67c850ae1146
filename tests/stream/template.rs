//! The template agrees with the stream function: its settings, its stream and its sweep.

use super::*;

#[test]
fn the_template_sweeps_the_lanes_through_the_index_the_code_queries() {
    let sweep = &resource("StreamFunction")["Events"]["LaneSweep"];
    assert_eq!(sweep["Type"].as_str(), Some("Schedule"));
    assert!(
        sweep["Properties"]["Schedule"]
            .as_str()
            .is_some_and(|s| s.starts_with("rate(")),
    );
    let indexes = &resource("ConfigTable")["GlobalSecondaryIndexes"];
    let index = indexes
        .as_sequence()
        .unwrap()
        .iter()
        .find(|i| i["IndexName"].as_str() == Some(audit_log::streaming::LANES_BY_NEXT_ATTEMPT))
        .expect("the lanes' index");
    let keys: Vec<&str> = index["KeySchema"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| k["AttributeName"].as_str().unwrap())
        .collect();
    use audit_log::streaming::lane_attr;
    assert_eq!(keys, [lane_attr::STATE, lane_attr::NEXT_ATTEMPT_AT]);
    // A call is lost only once SQS would have handed back one whose invocation failed.
    assert_eq!(
        resource("LaneQueue")["VisibilityTimeout"].as_u64(),
        Some(audit_log::lane::LANE_QUEUE_VISIBILITY.as_secs())
    );
    let policy = audit_log::lane::Policy::default();
    assert!(policy.lost_after >= audit_log::lane::LANE_QUEUE_VISIBILITY + policy.lease);
}

#[test]
fn the_template_bounds_the_backoff_where_the_function_does() {
    let parameter = &audit_log_tests::template()["Parameters"]["DeliveryRetryMaxBackoffSeconds"];
    assert_eq!(parameter["MinValue"].as_u64(), Some(1));
    assert_eq!(
        parameter["MaxValue"].as_u64(),
        Some(audit_log::lane::MOST_MAX_BACKOFF_SECONDS)
    );
}

#[test]
fn the_template_gives_stream_exactly_the_settings_it_reads() {
    let mut expected: Vec<String> = audit_log_stream::ENVIRONMENT
        .iter()
        .map(|s| s.to_string())
        .collect();
    expected.sort();
    assert_eq!(environment_of("StreamFunction"), expected);
    // The stream it reads back is the one its mapping reads, named by the template.
    let variables = &resource("StreamFunction")["Environment"]["Variables"];
    let mapped = &resource("StreamFunction")["Events"]["StoredEvents"]["Properties"]["Stream"];
    assert_eq!(&variables["EVENTS_STREAM_ARN"], mapped);
    assert!(
        matches!(mapped, serde_yaml::Value::Tagged(t) if t.tag == "GetAtt" && t.value.as_str() == Some("EventsTable.StreamArn")),
        "{mapped:?}"
    );
}

#[test]
fn the_template_streams_inserts_only_and_reports_partial_failures() {
    let stream = &resource("StreamFunction")["Events"]["StoredEvents"]["Properties"];
    let pattern: Value = serde_json::from_str(
        stream["FilterCriteria"]["Filters"][0]["Pattern"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(pattern, json!({"eventName": ["INSERT"]}));
    assert_eq!(
        stream["FunctionResponseTypes"][0].as_str(),
        Some("ReportBatchItemFailures")
    );
    assert_eq!(stream["BisectBatchOnFunctionError"].as_bool(), Some(true));
    assert!(stream["MaximumRetryAttempts"].as_u64().is_some());
    assert!(stream["MaximumRecordAgeInSeconds"].as_u64().is_some());
    assert!(!stream["DestinationConfig"]["OnFailure"]["Destination"].is_null());
}
