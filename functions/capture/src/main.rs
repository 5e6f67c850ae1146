use audit_log::Retention;
use audit_log::settings::required_env;
use audit_log::store::EventTable;
use audit_log_capture::{Capture, EVENTS_TABLE_ENV};
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // Settings are checked before the first poll: a bad deployment fails at init, loudly.
    let retention = Retention::from_env()?;
    let table_name = required_env(EVENTS_TABLE_ENV)?;
    let config = aws_config::load_from_env().await;
    let table = EventTable::new(aws_sdk_dynamodb::Client::new(&config), table_name);
    let capture = Capture::new(table, retention);
    lambda_runtime::run(service_fn(|event| capture.handle(event))).await
}
