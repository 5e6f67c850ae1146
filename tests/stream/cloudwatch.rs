//! Delivery to the customer's CloudWatch Logs, through the role the service assumes.

use super::*;

#[tokio::test]
async fn events_reach_the_customers_cloudwatch_logs_in_the_assumed_account() {
    let w = World::new().await;
    let (org, project) = (unique("org"), unique("project"));
    w.configure_cloudwatch(&org, &project).await;
    let other_org = unique("org-without-destination");
    let sent: Vec<Value> = (0..5)
        .map(|i| recent(&org, &project, 300 - i * 10, "OK"))
        .collect();
    let mut all = sent.clone();
    all.push(recent(&other_org, &project, 30, "OK"));
    let records = w.capture(&all).await;
    assert_eq!(records.len(), 6);

    let response = w.stream().deliver(&records, soon()).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");

    let logs = w.customer_logs().await;
    let got = logs
        .get_log_events()
        .log_group_name(format!("{}/packer/audit-logs", w.prefix))
        .log_stream_name(&project)
        .start_from_head(true)
        .send()
        .await
        .expect("the log group and stream exist in the customer's account");
    let delivered = got.events.unwrap_or_default();
    assert_eq!(delivered.len(), 5);
    for (log, original) in delivered.iter().zip(&sent) {
        let message = log.message.as_deref().unwrap();
        assert_eq!(
            message,
            AuditEvent::from_value(original.clone()).unwrap().json()
        );
        let t = OffsetDateTime::parse(original["timestamp"].as_str().unwrap(), &Rfc3339).unwrap();
        assert_eq!(
            log.timestamp,
            Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
        );
    }

    // Nothing landed in the service's own account.
    let own = aws_sdk_cloudwatchlogs::Client::from_conf(
        aws_sdk_cloudwatchlogs::config::Builder::from(&w.aws)
            .region(aws_sdk_cloudwatchlogs::config::Region::new(CUSTOMER_REGION))
            .build(),
    );
    let own_groups = own
        .describe_log_groups()
        .log_group_name_prefix(&w.prefix)
        .send()
        .await
        .unwrap()
        .log_groups
        .unwrap_or_default();
    assert!(own_groups.is_empty(), "{own_groups:?}");

    let health = w.configs.get(&org, &project).await.unwrap().unwrap().health;
    assert!(health.last_success_at.is_some());
    assert_eq!(health.status_at(time::OffsetDateTime::now_utc()), "healthy");
}

#[tokio::test]
async fn the_customers_role_is_assumed_once_and_its_credentials_reused() {
    let w = World::new().await;
    let (org, project) = (unique("org"), unique("project"));
    w.configure_cloudwatch(&org, &project).await;
    let sts_requests = audit_log_tests::RequestCounter::default();
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(&w.aws)
            .interceptor(sts_requests.clone())
            .build(),
    );
    let stream = Stream::from_settings(&w.settings(), &w.aws).with_cloudwatch(
        audit_log::destination::cloudwatch::CloudWatch::new(&w.aws, &w.prefix).with_sts(sts),
    );
    let first = w.capture(&[recent(&org, &project, 90, "OK")]).await;
    assert!(handed_on(&stream, &first).await);
    let second = w
        .capture_more(&[recent(&org, &project, 80, "FAILED")], &first)
        .await;
    assert_eq!(second.len(), 1);
    assert!(handed_on(&stream, &second).await);
    assert_eq!(sts_requests.count("AssumeRole"), 1);
}

#[tokio::test]
async fn modify_and_remove_records_are_never_delivered() {
    let w = World::new().await;
    let (org, project) = (unique("org"), unique("project"));
    w.configure_cloudwatch(&org, &project).await;
    let inserted = w
        .capture(&[
            recent(&org, &project, 60, "OK"),
            recent(&org, &project, 50, "OK"),
        ])
        .await;
    let full = stream_records(&w.aws, &w.dynamodb, &w.events_table).await;
    let first = full.iter().find(|r| r.event_id == inserted[0].event_id);
    let key = first.expect("the record as sent").change.keys.clone();
    let key: HashMap<String, AttributeValue> = key.into();
    w.dynamodb
        .update_item()
        .table_name(&w.events_table)
        .set_key(Some(key.clone()))
        .update_expression("SET touched = :t")
        .expression_attribute_values(":t", AttributeValue::Bool(true))
        .send()
        .await
        .unwrap();
    w.dynamodb
        .delete_item()
        .table_name(&w.events_table)
        .set_key(Some(key))
        .send()
        .await
        .unwrap();
    let records = as_sent(&stream_records(&w.aws, &w.dynamodb, &w.events_table).await);
    let later: Vec<StreamRecord> = records
        .into_iter()
        .filter(|r| r.event_name != "INSERT")
        .collect();
    assert_eq!(
        later
            .iter()
            .map(|r| r.event_name.as_str())
            .collect::<Vec<_>>(),
        ["MODIFY", "REMOVE"]
    );
    let response = w.stream().deliver(&later, soon()).await;
    assert!(response.batch_item_failures.is_empty());
    let groups = w
        .customer_logs()
        .await
        .describe_log_groups()
        .log_group_name_prefix(&w.prefix)
        .send()
        .await
        .unwrap()
        .log_groups
        .unwrap_or_default();
    assert!(
        groups.is_empty(),
        "nothing was written for MODIFY or REMOVE"
    );
    assert_eq!(
        w.configs
            .get(&org, &project)
            .await
            .unwrap()
            .unwrap()
            .health
            .status_at(time::OffsetDateTime::now_utc()),
        "unknown"
    );
}

#[tokio::test]
async fn a_project_without_a_destination_is_skipped_and_not_a_failure() {
    let w = World::new().await;
    let (org, project) = (unique("org"), unique("project"));
    let records = w.capture(&[recent(&org, &project, 10, "OK")]).await;
    let response = w.stream().deliver(&records, soon()).await;
    assert!(response.batch_item_failures.is_empty());
    // Skipped: nothing is written of a destination it does not have, and nothing is owed.
    let item = w
        .dynamodb
        .get_item()
        .table_name(&w.config_table)
        .set_key(Some(World::project_key(&org, &project)))
        .send()
        .await
        .unwrap();
    assert_eq!(item.item, None, "no lane, health or configuration written");
    let (listed, _) = w.configs.failures(&org, &project, None, 10).await.unwrap();
    assert!(listed.is_empty());
}
