//! The capture binary refuses to start on settings that would break the retention promise.

use std::process::Command;

fn start(retention_days: Option<&str>, table: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_audit-log-capture"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    if let Some(days) = retention_days {
        cmd.env("RETENTION_DAYS", days);
    }
    if let Some(table) = table {
        cmd.env("EVENTS_TABLE_NAME", table);
    }
    let out = cmd.output().expect("run the capture binary");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn a_retention_under_366_days_stops_the_function_at_start_up() {
    let (ok, output) = start(Some("365"), Some("events"));
    assert!(!ok);
    assert!(
        output.contains("RETENTION_DAYS is 365, under the 366 days"),
        "{output}"
    );
}

#[test]
fn a_missing_table_name_stops_the_function_at_start_up() {
    let (ok, output) = start(None, None);
    assert!(!ok);
    assert!(output.contains("EVENTS_TABLE_NAME is not set"), "{output}");
}

#[test]
fn noting_projects_without_its_settings_says_which_is_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_audit-log-note-projects"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("EVENTS_TABLE_NAME", "events")
        .output()
        .expect("run the binary");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("CONFIG_TABLE_NAME is not set"), "{text}");
}
