//! The customer's role (infra/) and the service's roles (template.yaml) against the code.

use audit_log_tests::{repo_root, resource, template};
use serde_json::Value;
use serde_yaml::Value as Yaml;
use std::collections::BTreeSet;

/// The CloudWatch Logs operations the stream and api functions call, read from their code
/// (tests excluded), as IAM actions.
fn logs_actions_the_code_calls() -> BTreeSet<String> {
    let pattern =
        regex_lite::Regex::new(r"\.((?:create|put|describe|delete|get|filter)_log_[a-z_]+)\(\)")
            .unwrap();
    let mut actions = BTreeSet::new();
    for dir in ["shared/src", "functions/stream/src", "functions/api/src"] {
        for file in walk(&repo_root().join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            for m in pattern.captures_iter(code) {
                let pascal: String = m[1]
                    .split('_')
                    .map(|w| w[..1].to_uppercase() + &w[1..])
                    .collect();
                actions.insert(format!("logs:{pascal}"));
            }
        }
    }
    actions
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// Every action a policy document allows, with the resources of its statement.
fn statements(policy: &Value) -> Vec<(Vec<String>, Vec<String>)> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Effect"] == "Allow")
        .map(|s| (strings(&s["Action"]), strings(&s["Resource"])))
        .collect()
}

fn actions(policy: &Value) -> BTreeSet<String> {
    statements(policy)
        .into_iter()
        .flat_map(|(a, _)| a)
        .collect()
}

fn yaml_to_json(y: &Yaml) -> Value {
    // CloudFormation tags (!Sub, !Ref) become their inner value, enough to read names.
    match y {
        Yaml::Tagged(t) => yaml_to_json(&t.value),
        Yaml::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), yaml_to_json(v)))
                .collect(),
        ),
        Yaml::Sequence(s) => Value::Array(s.iter().map(yaml_to_json).collect()),
        other => serde_json::to_value(other).unwrap(),
    }
}

fn customer_template() -> Value {
    let text = std::fs::read_to_string(repo_root().join("infra/cloudformation/customer-role.yaml"))
        .unwrap();
    yaml_to_json(&serde_yaml::from_str::<Yaml>(&text).unwrap())
}

fn terraform(name: &str, vars: &[(&str, &str)]) -> Value {
    let mut text =
        std::fs::read_to_string(repo_root().join("infra/terraform/customer-role").join(name))
            .unwrap();
    for (k, v) in vars {
        text = text.replace(&format!("${{{k}}}"), v);
    }
    assert!(
        !text.contains("${"),
        "every template variable is known: {text}"
    );
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_code_calls_the_logs_operations_the_scan_expects() {
    let called = logs_actions_the_code_calls();
    assert!(called.contains("logs:PutLogEvents"), "{called:?}");
    assert!(called.contains("logs:CreateLogGroup") && called.contains("logs:CreateLogStream"));
}

/// Each statement of a role's policy reaches exactly the two log groups the service writes
/// under `prefix` (as `events_log_group` and `test_log_group` name them), and the writes only
/// their streams.
fn reaches_only_the_services_log_groups(policy: &Value, arn_start: &str, prefix: &str) {
    let groups = BTreeSet::from([
        audit_log::destination::cloudwatch::events_log_group(prefix),
        audit_log::destination::cloudwatch::test_log_group(prefix),
    ]);
    for (actions, resources) in statements(policy) {
        let writes = actions.iter().any(|a| a != "logs:CreateLogGroup");
        let reached: BTreeSet<String> = resources
            .iter()
            .map(|r| {
                let group = r
                    .strip_prefix(arn_start)
                    .unwrap_or_else(|| panic!("{r} is a log group of the customer's account"));
                let group = match group.strip_suffix(":log-stream:*") {
                    Some(group) => group,
                    None if writes => panic!("{r}: writes reach log streams only"),
                    None => group.strip_suffix(":*").unwrap_or(group),
                };
                group.to_owned()
            })
            .collect();
        assert_eq!(reached, groups, "{actions:?} on {resources:?}");
    }
}

#[test]
fn the_cloudformation_role_allows_exactly_what_the_code_calls_on_its_log_groups() {
    let t = customer_template();
    let role = &t["Resources"]["LogStreamingRole"]["Properties"];
    let policy = &role["Policies"][0]["PolicyDocument"];
    assert_eq!(actions(policy), logs_actions_the_code_calls());
    let policy: Value = serde_json::from_str(
        &policy
            .to_string()
            .replace("${LogGroupPrefix}", "/hashicorp/a.b"),
    )
    .unwrap();
    reaches_only_the_services_log_groups(
        &policy,
        "arn:${AWS::Partition}:logs:*:${AWS::AccountId}:log-group:",
        "/hashicorp/a.b",
    );
    let trust = &role["AssumeRolePolicyDocument"]["Statement"][0];
    assert_eq!(trust["Action"], "sts:AssumeRole");
    assert_eq!(
        trust["Principal"]["AWS"],
        "arn:${AWS::Partition}:iam::${ServiceAwsAccountId}:root"
    );
    assert_eq!(
        trust["Condition"]["StringEquals"]["sts:ExternalId"],
        "ExternalId"
    );
}

#[test]
fn the_terraform_role_allows_exactly_what_the_code_calls_on_its_log_groups() {
    let policy = terraform(
        "policy.json.tftpl",
        &[
            ("partition", "aws"),
            ("account_id", "210987654321"),
            ("log_group_prefix", "/hashicorp"),
        ],
    );
    assert_eq!(actions(&policy), logs_actions_the_code_calls());
    reaches_only_the_services_log_groups(
        &policy,
        "arn:aws:logs:*:210987654321:log-group:",
        "/hashicorp",
    );
    let trust = terraform(
        "trust-policy.json.tftpl",
        &[
            ("partition", "aws"),
            ("service_aws_account_id", "123456789012"),
            ("external_id", "ext"),
        ],
    );
    let statement = &trust["Statement"][0];
    assert_eq!(
        statement["Principal"]["AWS"],
        "arn:aws:iam::123456789012:root"
    );
    assert_eq!(
        statement["Condition"]["StringEquals"]["sts:ExternalId"],
        "ext"
    );
    let main =
        std::fs::read_to_string(repo_root().join("infra/terraform/customer-role/main.tf")).unwrap();
    assert!(main.contains("policy.json.tftpl") && main.contains("trust-policy.json.tftpl"));
}

/// The service's own roles: nothing on every resource, and only stream and api may assume
/// (customers') roles.
#[test]
fn the_service_roles_are_scoped_to_their_resources() {
    let roles: Vec<(&str, &Yaml)> = template()["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::IAM::Role"))
        .map(|(k, r)| (k.as_str().unwrap(), r))
        .collect();
    assert_eq!(roles.len(), 3);
    for (name, role) in roles {
        let policy = yaml_to_json(&role["Properties"]["Policies"][0]["PolicyDocument"]);
        for (actions, resources) in statements(&policy) {
            for r in &resources {
                assert_ne!(r, "*", "{name} grants {actions:?} on every resource");
            }
            if actions.iter().any(|a| a == "sts:AssumeRole") {
                assert!(
                    ["StreamFunctionRole", "ApiFunctionRole"].contains(&name),
                    "{name} may not assume roles"
                );
            }
        }
    }
    assert!(resource("CaptureFunction")["Role"].is_tagged());
}

/// The functions that keep lanes write the configuration table in batches: the stream function
/// owes, settles and lists events, the api forgets a deleted destination's owed events. The
/// emulator checks no permission, so the template is read for it.
#[test]
fn the_functions_that_keep_lanes_may_write_the_configuration_table_in_batches() {
    for name in ["StreamFunctionRole", "ApiFunctionRole"] {
        assert!(
            may_on_config_table(name, "dynamodb:BatchWriteItem"),
            "{name} may not write the configuration table in batches"
        );
    }
}

/// The policy of the template's role `name`, as JSON.
fn role_policy(name: &str) -> Value {
    yaml_to_json(&template()["Resources"][name]["Properties"]["Policies"][0]["PolicyDocument"])
}

/// Whether the role `name` may take `action` on the configuration table.
fn may_on_config_table(name: &str, action: &str) -> bool {
    may_on_table(name, "ConfigTable", action)
}

/// Whether the role `name` may take `action` on the template's table `table`.
fn may_on_table(name: &str, table: &str, action: &str) -> bool {
    statements(&role_policy(name))
        .iter()
        .any(|(actions, resources)| {
            actions.iter().any(|a| a == action) && resources.iter().any(|r| r.starts_with(table))
        })
}

/// Capture writes events in batches; an event whose message only claims the id it is stored
/// under (redriven to the events queue) is put on condition and, when the condition fails,
/// read back to compare.
#[test]
fn capture_may_write_events_in_batches_and_claimed_ones_on_condition() {
    for action in [
        "dynamodb:BatchWriteItem",
        "dynamodb:PutItem",
        "dynamodb:GetItem",
    ] {
        assert!(
            may_on_table("CaptureFunctionRole", "EventsTable", action),
            "capture may not {action} on the events table"
        );
    }
}

/// The api stores the audit event of a configuration change the events queue refused as
/// capture stores a claimed one: one item put on condition (in its code: IAM cannot ask for
/// the condition), read back when the condition fails. It never writes events in batches,
/// updates or deletes them.
#[test]
fn the_api_may_put_and_read_single_events_only() {
    for action in ["dynamodb:PutItem", "dynamodb:GetItem"] {
        assert!(
            may_on_table("ApiFunctionRole", "EventsTable", action),
            "the api may not {action} on the events table"
        );
    }
    for action in [
        "dynamodb:BatchWriteItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    ] {
        assert!(
            !may_on_table("ApiFunctionRole", "EventsTable", action),
            "{action}"
        );
    }
}

/// A project's first save puts its configuration and checks the version its last deletion
/// left, and that no deletion is under way, in one transaction, which IAM grants item by item;
/// a `DELETE` marks that item, then clears it and removes it when it holds nothing more.
#[test]
fn the_api_may_check_a_deleted_version_in_its_first_saves_transaction() {
    for action in [
        "dynamodb:PutItem",
        "dynamodb:ConditionCheckItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    ] {
        assert!(
            may_on_config_table("ApiFunctionRole", action),
            "the api may not {action} on the configuration table"
        );
    }
}

/// The stream function reads projects' secrets (`<stack>/streaming/<org>/<project>`), never
/// the api's cursor-signing key (`<stack>/streaming/service-key`).
#[test]
fn the_stream_function_reads_projects_secrets_and_not_the_cursor_key() {
    let secrets: Vec<String> = statements(&role_policy("StreamFunctionRole"))
        .into_iter()
        .filter(|(actions, _)| actions.iter().any(|a| a.starts_with("secretsmanager:")))
        .flat_map(|(_, resources)| resources)
        .collect();
    assert!(!secrets.is_empty());
    for resource in secrets {
        assert!(resource.ends_with("/streaming/*/*"), "{resource}");
    }
}

/// The customer's role files take exactly the log group prefixes the stack takes: a prefix one
/// of them refused could not be the service's, and one they took in another form (a trailing
/// `/`) would grant nothing the service writes.
#[test]
fn the_role_files_take_the_prefixes_the_stack_takes() {
    let stack = template()["Parameters"]["LogGroupPrefix"]["AllowedPattern"]
        .as_str()
        .unwrap()
        .to_owned();
    let cloudformation = &customer_template()["Parameters"]["LogGroupPrefix"]["AllowedPattern"];
    assert_eq!(cloudformation.as_str(), Some(stack.as_str()));
    let variables =
        std::fs::read_to_string(repo_root().join("infra/terraform/customer-role/variables.tf"))
            .unwrap();
    assert!(
        variables.contains(&format!("regex(\"{stack}\", var.log_group_prefix)")),
        "{variables}"
    );
}

/// Every whole-number retention the template takes starts the functions, and nothing beyond it
/// does: a value past either end would deploy, then refuse every invocation. (A `Number`
/// parameter also takes a fraction, such as `400.5`, which the functions refuse: README says
/// the parameter is a whole number.)
#[test]
fn the_template_takes_exactly_the_retentions_the_functions_take() {
    use audit_log::settings::{MAX_RETENTION_DAYS, MIN_RETENTION_DAYS};
    let parameter = &template()["Parameters"]["RetentionDays"];
    let (least, default, most) = (
        parameter["MinValue"].as_u64().unwrap(),
        parameter["Default"].as_u64().unwrap(),
        parameter["MaxValue"]
            .as_u64()
            .expect("the retention has a largest value"),
    );
    assert_eq!(
        (least, most),
        (u64::from(MIN_RETENTION_DAYS), u64::from(MAX_RETENTION_DAYS))
    );
    for days in [least, default, most] {
        // CloudFormation's `Number` hands the value on as written, `400.0` as well.
        for written in [days.to_string(), format!("{days}.0")] {
            let retention = audit_log::Retention::parse(Some(&written)).unwrap();
            assert_eq!(u64::from(retention.as_days()), days);
        }
    }
    assert!(audit_log::Retention::parse(Some(&(most + 1).to_string())).is_err());
    assert!(audit_log::Retention::parse(Some(&(least - 1).to_string())).is_err());
}

/// Every retry window the template takes starts the functions with the least retention it
/// takes: a window past the retention would deploy, then refuse every invocation.
#[test]
fn every_retry_window_the_template_takes_fits_the_least_retention_it_takes() {
    use audit_log::lane::Policy;
    let parameters = &template()["Parameters"];
    let least_retention = parameters["RetentionDays"]["MinValue"].as_u64().unwrap();
    let retention = audit_log::Retention::days(u32::try_from(least_retention).unwrap()).unwrap();
    let window = &parameters["DeliveryRetryWindowHours"];
    let (least, most) = (
        window["MinValue"].as_u64().unwrap(),
        window["MaxValue"]
            .as_u64()
            .expect("the window has a largest value"),
    );
    let backoff = parameters["DeliveryRetryMaxBackoffSeconds"]["Default"]
        .as_u64()
        .unwrap();
    for hours in [least, most] {
        assert!(
            Policy::from_settings(retention, hours, backoff).is_ok(),
            "{hours}"
        );
    }
    assert!(Policy::from_settings(retention, most + 1, backoff).is_err());
}

trait Tagged {
    fn is_tagged(&self) -> bool;
}

impl Tagged for Yaml {
    fn is_tagged(&self) -> bool {
        matches!(self, Yaml::Tagged(_))
    }
}

/// Issue 13, point 1: IAM itself refuses the service's roles a role of the service's own
/// account (which might trust the account root without an External ID), whatever the code does:
/// a Deny names the account's roles, which needs no condition key in STS's request.
#[test]
fn the_service_roles_never_assume_a_role_of_the_service_account() {
    for name in ["StreamFunctionRole", "ApiFunctionRole"] {
        let policy = yaml_to_json(
            &template()["Resources"][name]["Properties"]["Policies"][0]["PolicyDocument"],
        );
        let assuming = |effect: &str| -> Vec<Vec<String>> {
            policy["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["Effect"] == effect)
                .filter(|s| strings(&s["Action"]).iter().any(|a| a.starts_with("sts:")))
                .map(|s| strings(&s["Resource"]))
                .collect()
        };
        assert_eq!(
            assuming("Allow"),
            [["arn:${AWS::Partition}:iam::*:role/*"]],
            "{name}"
        );
        assert_eq!(
            assuming("Deny"),
            [["arn:${AWS::Partition}:iam::${AWS::AccountId}:role/*"]],
            "{name}: a Deny of sts:AssumeRole on the service account's roles"
        );
    }
}

/// Issue 13, point 12: CloudWatch alarms can publish to the alarm topic, because its key is a
/// customer managed key whose policy lets the CloudWatch service principal use it (the AWS
/// managed `alias/aws/sns` key's policy cannot).
#[test]
fn the_alarm_topic_uses_a_key_that_cloudwatch_alarms_may_use() {
    let topic = resource("AlarmTopic");
    let key_id = &topic["KmsMasterKeyId"];
    assert!(
        is_ref(key_id, "AlarmTopicKey") || is_get_att(key_id, "AlarmTopicKey"),
        "the alarm topic is encrypted with the template's own key, found {key_id:?}"
    );
    assert_eq!(
        template()["Resources"]["AlarmTopicKey"]["Type"].as_str(),
        Some("AWS::KMS::Key")
    );
    let key = resource("AlarmTopicKey");
    assert_eq!(key["EnableKeyRotation"].as_bool(), Some(true));
    let policy = yaml_to_json(&key["KeyPolicy"]);
    let statements = policy["Statement"].as_array().unwrap();
    let cloudwatch: Vec<&Value> = statements
        .iter()
        .filter(|s| {
            strings(&s["Principal"]["Service"]).contains(&"cloudwatch.amazonaws.com".into())
        })
        .collect();
    assert_eq!(cloudwatch.len(), 1, "{policy}");
    let grant = cloudwatch[0];
    assert_eq!(grant["Effect"], "Allow");
    let actions = strings(&grant["Action"]);
    for needed in ["kms:Decrypt", "kms:GenerateDataKey*"] {
        assert!(
            actions.iter().any(|a| a == needed),
            "{needed} in {actions:?}"
        );
    }
    assert_eq!(
        actions.len(),
        2,
        "CloudWatch gets nothing else on the key: {actions:?}"
    );
    assert_eq!(
        grant["Condition"]["StringEquals"]["aws:SourceAccount"], "AWS::AccountId",
        "only on behalf of this account's alarms"
    );
    // The account stays able to administer its key.
    assert!(
        statements.iter().any(|s| s["Effect"] == "Allow"
            && s["Principal"]["AWS"] == "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"
            && strings(&s["Action"]).contains(&"kms:*".into())),
        "{policy}"
    );
}

/// Issue 13, point 13: replays never take the account's whole Lambda concurrency.
#[test]
fn replays_run_at_most_two_at_a_time() {
    let replays = stream_source_of("ReplayQueue.Arn");
    assert_eq!(replays["Type"].as_str(), Some("SQS"));
    assert_eq!(
        replays["Properties"]["ScalingConfig"]["MaximumConcurrency"].as_u64(),
        Some(2)
    );
}

/// A replay's part lives on the replay queue, then its dead-letter queue, within one retention
/// (SQS keeps a message's first enqueue time): a replay that has not saved for longer has
/// lost it, and its view says so.
#[test]
fn a_replays_part_is_kept_as_long_as_the_service_thinks() {
    for queue in ["ReplayQueue", "ReplayDeadLetterQueue"] {
        assert_eq!(
            resource(queue)["MessageRetentionPeriod"].as_i64(),
            Some(audit_log::streaming::REPLAY_PART_KEPT_SECONDS),
            "{queue}"
        );
    }
}

/// A stream batch whose retries ran out is read back and handed on alone, with the stream
/// function's whole timeout: ten sharing one invocation could fail for want of time only, each
/// spending one of its five receives. Two at once, as each reads its shard (5 reads a second,
/// shared with Lambda's own poller).
#[test]
fn exhausted_stream_batches_are_handed_on_one_per_invocation_two_at_once() {
    let exhausted = stream_source_of("StreamFailureQueue.Arn");
    assert_eq!(exhausted["Properties"]["BatchSize"].as_u64(), Some(1));
    assert_eq!(
        exhausted["Properties"]["ScalingConfig"]["MaximumConcurrency"].as_u64(),
        Some(2)
    );
    assert_eq!(
        exhausted["Properties"]["FunctionResponseTypes"][0].as_str(),
        Some("ReportBatchItemFailures")
    );
}

/// Events deferred by the service's own trouble wait on a queue of their own, ten handled at
/// once, so an organization's lasting trouble never takes the lane calls' slots; the ones that
/// could not be handed on are dead-lettered under an alarm that says how to hand them on.
#[test]
fn deferred_events_wait_on_a_queue_of_their_own_a_few_at_once() {
    let deferred = stream_source_of("DeferredQueue.Arn");
    assert_eq!(deferred["Properties"]["BatchSize"].as_u64(), Some(1));
    assert_eq!(
        deferred["Properties"]["ScalingConfig"]["MaximumConcurrency"].as_u64(),
        Some(10)
    );
    let calls = stream_source_of("LaneQueue.Arn");
    assert!(!is_get_att(&calls["Properties"]["Queue"], "DeferredQueue"));
    let variables = &resource("StreamFunction")["Environment"]["Variables"];
    assert!(is_ref(&variables["DEFERRED_QUEUE_URL"], "DeferredQueue"));
    let redrive = &resource("DeferredQueue")["RedrivePolicy"];
    assert!(is_get_att(
        &redrive["deadLetterTargetArn"],
        "DeferredDeadLetterQueue"
    ));
    assert_eq!(redrive["maxReceiveCount"].as_u64(), Some(10));
    let alarm = resource("StuckDeferredEventsAlarm");
    assert!(is_get_att(
        &alarm["Dimensions"][0]["Value"],
        "DeferredDeadLetterQueue"
    ));
    assert!(
        alarm["AlarmDescription"]
            .as_str()
            .is_some_and(|d| d.contains("redrive DeferredDeadLetterQueue"))
    );
    assert!(notifies(alarm));
}

/// Lanes' own calls (probes, catching up) run at most the operator's number at once, so a mass
/// outage of destinations never takes the concurrency capture, live delivery and the API need;
/// calls that wait for a slot raise an alarm.
#[test]
fn lane_calls_run_at_most_the_operators_number_at_once_and_waiting_raises_an_alarm() {
    let calls = stream_source_of("LaneQueue.Arn");
    assert_eq!(calls["Properties"]["BatchSize"].as_u64(), Some(1));
    assert!(is_ref(
        &calls["Properties"]["ScalingConfig"]["MaximumConcurrency"],
        "LaneCallConcurrency"
    ));
    let parameter = &template()["Parameters"]["LaneCallConcurrency"];
    let (least, default, most) = (
        parameter["MinValue"].as_u64().unwrap(),
        parameter["Default"].as_u64().unwrap(),
        parameter["MaxValue"].as_u64().unwrap(),
    );
    // Lambda's bounds for an SQS source's maximum concurrency; by default a tenth of an
    // account's usual 1,000.
    assert_eq!((least, most), (2, 1000));
    assert_eq!(default, 100);

    let alarm = resource("WaitingLaneCallsAlarm");
    assert_eq!(
        alarm["MetricName"].as_str(),
        Some("ApproximateNumberOfMessagesVisible")
    );
    assert!(is_get_att(&alarm["Dimensions"][0]["Value"], "LaneQueue"));
    // Calls are received as soon as they are due unless every slot is taken: the fewest
    // waiting stays above zero only then.
    assert_eq!(alarm["Statistic"].as_str(), Some("Minimum"));
    assert!(notifies(alarm));
}

/// Capture runs at most the operator's number of invocations at once, so one organization's
/// flood waits on the events queue rather than take delivery's and the API's concurrency; a
/// backlog raises an alarm.
#[test]
fn capture_runs_at_most_the_operators_number_at_once_and_a_backlog_raises_an_alarm() {
    let sources = resource("CaptureFunction")["Events"].as_mapping().unwrap();
    assert_eq!(sources.len(), 2, "the events queue and the retry queue");
    let events = &resource("CaptureFunction")["Events"]["AuditEvents"];
    assert!(is_get_att(
        &events["Properties"]["Queue"],
        "EventsQueue.Arn"
    ));
    assert!(is_ref(
        &events["Properties"]["ScalingConfig"]["MaximumConcurrency"],
        "CaptureConcurrency"
    ));
    let parameter = &template()["Parameters"]["CaptureConcurrency"];
    assert_eq!(parameter["MinValue"].as_u64(), Some(2));
    assert_eq!(parameter["MaxValue"].as_u64(), Some(1000));
    // With the lanes' calls, a fifth of an account's usual 1,000.
    assert_eq!(parameter["Default"].as_u64(), Some(100));

    let alarm = resource("CaptureBacklogAlarm");
    assert_eq!(
        alarm["MetricName"].as_str(),
        Some("ApproximateAgeOfOldestMessage")
    );
    assert!(is_get_att(&alarm["Dimensions"][0]["Value"], "EventsQueue"));
    assert_eq!(alarm["Threshold"].as_u64(), Some(300));
    assert!(notifies(alarm));
}

/// The events and lanes queues are fair queues (every message the service queues is in its
/// organization's group): one organization's backlog waits behind no one else's work, and an
/// alarm says when other organizations wait anyway.
#[test]
fn organizations_kept_waiting_by_others_raise_an_alarm() {
    let alarm = resource("QuietOrganizationsWaitingAlarm");
    let metrics = alarm["Metrics"].as_sequence().unwrap();
    let watched = |queue: &str| {
        metrics.iter().find_map(|m| {
            let metric = &m["MetricStat"]["Metric"];
            is_get_att(&metric["Dimensions"][0]["Value"], queue).then(|| {
                (
                    m["Id"].as_str().unwrap().to_owned(),
                    metric["MetricName"].as_str().unwrap().to_owned(),
                    m["MetricStat"]["Stat"].as_str().unwrap().to_owned(),
                )
            })
        })
    };
    let (events, metric, stat) = watched("EventsQueue").expect("the events queue watched");
    assert_eq!(
        (metric.as_str(), stat.as_str()),
        ("ApproximateAgeOfOldestMessageInQuietGroups", "Minimum")
    );
    let (calls, metric, stat) = watched("LaneQueue").expect("the lanes queue watched");
    assert_eq!(
        (metric.as_str(), stat.as_str()),
        ("ApproximateNumberOfMessagesVisibleInQuietGroups", "Minimum")
    );
    let returned: Vec<&str> = metrics
        .iter()
        .filter(|m| m["ReturnData"].as_bool() == Some(true))
        .map(|m| m["Expression"].as_str().unwrap())
        .collect();
    assert_eq!(
        returned,
        [format!("MAX([IF({events} > 300, 1, 0), IF({calls} > 0, 1, 0)])").as_str()]
    );
    assert_eq!(alarm["Threshold"].as_u64(), Some(1));
    assert_eq!(alarm["EvaluationPeriods"].as_u64(), Some(3));
    assert!(notifies(alarm));
}

/// A configuration change whose audit event neither the queue nor the table took is known only
/// from the api's log line: a metric filter counts that line, and an alarm tells the operator.
#[test]
fn an_audit_event_the_api_could_not_keep_sets_off_an_alarm() {
    let filter = resource("AuditEventsLostFilter");
    assert!(is_ref(&filter["LogGroupName"], "ApiLogGroup"));
    // The line as the api logs it (JSON, its message under `fields`: `tests/api/streaming.rs` checks).
    let message = audit_log_api::AUDIT_EVENT_LOST;
    assert_eq!(
        filter["FilterPattern"].as_str(),
        Some(format!(r#"{{ $.level = "ERROR" && $.fields.message = "{message}" }}"#).as_str())
    );
    let metric = &filter["MetricTransformations"][0];
    let alarm = resource("AuditEventsLostAlarm");
    assert_eq!(alarm["MetricName"], metric["MetricName"]);
    assert_eq!(alarm["Namespace"], metric["MetricNamespace"]);
    assert_eq!(metric["MetricValue"].as_str(), Some("1"));
    assert_eq!(alarm["Statistic"].as_str(), Some("Sum"));
    assert_eq!(alarm["Threshold"].as_u64(), Some(0));
    assert_eq!(
        alarm["ComparisonOperator"].as_str(),
        Some("GreaterThanThreshold")
    );
    assert!(notifies(alarm));
}

/// Whether `alarm` tells the alarm topic.
fn notifies(alarm: &Yaml) -> bool {
    alarm["AlarmActions"]
        .as_sequence()
        .is_some_and(|a| a.iter().any(|t| is_ref(t, "AlarmTopic")))
}

/// The stream function's SQS event source reading `queue` (`<Queue>.Arn`).
fn stream_source_of(queue: &str) -> &'static Yaml {
    resource("StreamFunction")["Events"]
        .as_mapping()
        .unwrap()
        .values()
        .find(|e| is_get_att(&e["Properties"]["Queue"], queue))
        .unwrap_or_else(|| panic!("the stream function reads {queue}"))
}

/// Issue 17, point 4: export files are private, encrypted, reached over TLS only and gone
/// after 7 days; their steps never take the API's concurrency.
#[test]
fn export_files_are_private_encrypted_and_kept_seven_days() {
    let bucket = &template()["Resources"]["ExportBucket"]["Properties"];
    let block = &bucket["PublicAccessBlockConfiguration"];
    for setting in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[setting].as_bool(), Some(true), "{setting}");
    }
    let encryption = &bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0];
    assert_eq!(
        encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"].as_str(),
        Some("AES256")
    );
    let rules = bucket["LifecycleConfiguration"]["Rules"]
        .as_sequence()
        .unwrap();
    let everything = rules
        .iter()
        .find(|r| r["Prefix"].is_null() && r["Filter"].is_null())
        .expect("a rule for every object");
    assert_eq!(everything["ExpirationInDays"].as_u64(), Some(7));
    assert_eq!(
        everything["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"].as_u64(),
        Some(7)
    );
    let policy = yaml_to_json(
        &template()["Resources"]["ExportBucketPolicy"]["Properties"]["PolicyDocument"],
    );
    assert!(
        policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["Effect"] == "Deny"
                && s["Condition"]["Bool"]["aws:SecureTransport"] == "false"),
        "{policy}"
    );
    let steps = &resource("ApiFunction")["Events"]["ExportSteps"];
    assert!(is_get_att(&steps["Properties"]["Queue"], "ExportQueue.Arn"));
    assert_eq!(steps["Properties"]["BatchSize"].as_u64(), Some(1));
    assert_eq!(
        steps["Properties"]["ScalingConfig"]["MaximumConcurrency"].as_u64(),
        Some(5)
    );
    // A step's lease outlasts the function: no second step writes while the first may.
    let timeout = resource("ApiFunction")["Timeout"].as_u64().unwrap();
    assert!(audit_log_api::export::STEP_LEASE.as_secs() > timeout);
}

/// A `DELETE`'s mark tells a deletion still running from one cut short by its age: no api call
/// runs as long.
#[test]
fn a_deletions_mark_outlives_every_api_call() {
    let timeout = resource("ApiFunction")["Timeout"].as_u64().unwrap() as i64;
    assert!(audit_log::streaming::DELETION_CALL_LIMIT.whole_seconds() > timeout);
}

/// `!Ref <name>` in the template.
fn is_ref(v: &Yaml, name: &str) -> bool {
    matches!(v, Yaml::Tagged(t) if t.tag == "Ref" && t.value.as_str() == Some(name))
}

/// `!GetAtt <name>` in the template.
fn is_get_att(v: &Yaml, name: &str) -> bool {
    matches!(v, Yaml::Tagged(t) if t.tag == "GetAtt" && t.value.as_str().is_some_and(|a| a == name || a.starts_with(&format!("{name}."))))
}

/// Valid events the tables keep refusing go round through the retry queue before SQS would
/// dead-letter them: capture alone may send there, does so before the last receive, reads it
/// at the least concurrency, and events sent there raise an alarm.
#[test]
fn capture_sends_unstored_events_to_a_retry_queue_only_it_may_send_to() {
    use audit_log_capture::requeue::FROM_RECEIVE;
    for queue in ["EventsQueue", "EventsRetryQueue"] {
        let redrive = &resource(queue)["RedrivePolicy"];
        let dead_letter_after = redrive["maxReceiveCount"].as_u64().unwrap();
        assert!(u64::from(FROM_RECEIVE) < dead_letter_after, "{queue}");
        assert!(is_get_att(
            &redrive["deadLetterTargetArn"],
            "EventsDeadLetterQueue.Arn"
        ));
    }
    let capture = resource("CaptureFunction");
    assert!(is_ref(
        &capture["Environment"]["Variables"]["EVENTS_RETRY_QUEUE_URL"],
        "EventsRetryQueue"
    ));
    let retried = &capture["Events"]["RetriedEvents"]["Properties"];
    assert!(is_get_att(&retried["Queue"], "EventsRetryQueue.Arn"));
    assert_eq!(
        retried["FunctionResponseTypes"][0].as_str(),
        Some("ReportBatchItemFailures")
    );
    assert_eq!(
        retried["ScalingConfig"]["MaximumConcurrency"].as_u64(),
        Some(2)
    );

    // Capture may send to the retry queue and to no other.
    let role = resource("CaptureFunctionRole");
    let sends: Vec<&Yaml> = role["Policies"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|p| p["PolicyDocument"]["Statement"].as_sequence().unwrap())
        .filter(|s| s["Action"].as_str() == Some("sqs:SendMessage"))
        .map(|s| &s["Resource"])
        .collect();
    assert_eq!(sends.len(), 1);
    assert!(is_get_att(sends[0], "EventsRetryQueue.Arn"));
    // No one else may: the messages there name the key their event is stored under.
    let policy = resource("EventsRetryQueuePolicy");
    assert!(is_ref(&policy["Queues"][0], "EventsRetryQueue"));
    let deny = &policy["PolicyDocument"]["Statement"][0];
    assert_eq!(deny["Effect"].as_str(), Some("Deny"));
    assert_eq!(deny["Principal"].as_str(), Some("*"));
    assert_eq!(deny["Action"].as_str(), Some("sqs:SendMessage"));
    assert!(is_get_att(
        &deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"],
        "CaptureFunctionRole.Arn"
    ));

    let alarm = resource("EventsWaitingOnStorageAlarm");
    assert_eq!(alarm["MetricName"].as_str(), Some("NumberOfMessagesSent"));
    assert_eq!(alarm["Statistic"].as_str(), Some("Sum"));
    assert_eq!(alarm["Threshold"].as_u64(), Some(0));
    assert!(is_get_att(
        &alarm["Dimensions"][0]["Value"],
        "EventsRetryQueue"
    ));
    assert!(notifies(alarm));
}

/// The api answers its own failures (a table or Secrets Manager down) as 5xx responses, not
/// as failed invocations: its alarm counts what callers got from API Gateway, not Lambda's
/// `Errors`, which would never see them.
#[test]
fn the_api_alarm_counts_the_5xx_answers_callers_get() {
    let alarm = resource("ApiErrorsAlarm");
    assert_eq!(alarm["Namespace"].as_str(), Some("AWS/ApiGateway"));
    assert_eq!(alarm["MetricName"].as_str(), Some("5xx"));
    let dimensions = alarm["Dimensions"].as_sequence().expect("dimensions");
    let named = |name: &str| {
        dimensions
            .iter()
            .find(|d| d["Name"].as_str() == Some(name))
            .map(|d| d["Value"].clone())
            .unwrap_or_else(|| panic!("no {name} dimension"))
    };
    assert!(is_ref(&named("ApiId"), "HttpApi"));
    // The API's only stage: SAM's `$default`, as no `StageName` is set.
    assert_eq!(named("Stage").as_str(), Some("$default"));
    assert!(resource("HttpApi").get("StageName").is_none());
    assert_eq!(alarm["Threshold"].as_u64(), Some(0));
    assert!(notifies(alarm));
}

#[test]
fn what_holds_events_outlives_the_stack() {
    // The tables (audit history) and the queues of events not stored yet, or never (the dead
    // letters): a `sam delete` or a replacement leaves them to be removed on purpose.
    let resources = template()["Resources"].as_mapping().unwrap();
    let mut kept = BTreeSet::new();
    for (id, resource) in resources {
        let id = id.as_str().unwrap();
        if resource["DeletionPolicy"].as_str() == Some("Retain") {
            assert_eq!(
                resource["UpdateReplacePolicy"].as_str(),
                Some("Retain"),
                "{id}"
            );
            kept.insert(id);
        }
    }
    for id in [
        "EventsTable",
        "ConfigTable",
        "EventsQueue",
        "EventsRetryQueue",
        "EventsDeadLetterQueue",
    ] {
        assert!(kept.contains(id), "{id} is kept: {kept:?}");
    }
    // Whatever feeds the events queue's dead letters is kept with them.
    for (id, resource) in resources {
        let redrive = &resource["Properties"]["RedrivePolicy"]["deadLetterTargetArn"];
        if format!("{redrive:?}").contains("EventsDeadLetterQueue") {
            assert!(kept.contains(id.as_str().unwrap()), "{id:?}");
        }
    }
}
