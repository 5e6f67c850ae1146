use audit_log::Retention;
use audit_log::settings::env;
use audit_log::settings::required_env;
use audit_log::store::EventTable;
use audit_log::streaming::ConfigTable;
use audit_log_capture::{Capture, RetryQueue};
use lambda_runtime::{Error, service_fn};

// At 512 MB a function has about a third of a vCPU: worker threads would only add wake-ups.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    audit_log::logging::init();
    // Settings are checked before the first poll: a bad deployment fails at init, loudly.
    let settings = (
        Retention::from_env(),
        required_env(env::EVENTS_TABLE),
        required_env(env::CONFIG_TABLE),
        required_env(env::EVENTS_RETRY_QUEUE),
    );
    let (retention, table_name, config_table, queue_url) = match settings {
        (Ok(retention), Ok(table), Ok(config), Ok(queue)) => (retention, table, config, queue),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
            tracing::error!(error = %e, "capture refuses to start");
            return Err(e.to_string().into());
        }
    };
    let config = audit_log::sdk::load_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let table = EventTable::new(dynamodb.clone(), table_name);
    let retry_queue = RetryQueue::new(aws_sdk_sqs::Client::new(&config), queue_url);
    let capture = Capture::new(table, ConfigTable::new(dynamodb, config_table), retention)
        .with_requeue(retry_queue);
    lambda_runtime::run(service_fn(|event| capture.handle(event))).await
}
