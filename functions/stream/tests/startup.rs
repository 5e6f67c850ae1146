//! The stream binary refuses to start on a log group prefix CloudWatch would refuse, rather than
//! fail every customer's CloudWatch delivery as if the trouble were the customer's.

use std::process::Command;

#[test]
fn a_log_group_prefix_cloudwatch_refuses_stops_the_function_at_start_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_audit-log-stream"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CONFIG_TABLE_NAME", "configs")
        .env("EVENTS_TABLE_NAME", "events")
        .env("SECRET_NAME_PREFIX", "audit-log/")
        .env("LOG_GROUP_PREFIX", "/acme audit")
        .output()
        .expect("run the stream binary");
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("ERROR stream refuses to start"), "{text}");
    assert!(
        text.contains(r#"LOG_GROUP_PREFIX is "/acme audit": CloudWatch takes only"#),
        "{text}"
    );
    assert!(
        !text.contains('\x1b'),
        "no colour codes in what Lambda keeps: {text:?}"
    );
}
