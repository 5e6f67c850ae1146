//! `audit-log-note-projects`: notes every project with events in the events table, for a
//! stack updated from a version whose capture did not note them (README, "Deploy"). Reads the
//! same settings as the capture function; safe to run more than once.

use audit_log::settings::{env, required_env};
use audit_log::store::EventTable;
use audit_log::streaming::{ConfigTable, note_stored_projects};
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let tables = (
        required_env(env::EVENTS_TABLE),
        required_env(env::CONFIG_TABLE),
    );
    let (events, config) = match tables {
        (Ok(events), Ok(config)) => (events, config),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let aws = audit_log::sdk::load_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let noted = note_stored_projects(
        &EventTable::new(dynamodb.clone(), &events),
        &ConfigTable::new(dynamodb, &config),
    )
    .await;
    match noted {
        Ok(n) => {
            println!("noted {n} projects with stored events");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("projects not noted: {e}");
            ExitCode::FAILURE
        }
    }
}
