use audit_log::Retention;
use audit_log::settings::env;
use audit_log::settings::required_env;
use audit_log::store::EventTable;
use audit_log_capture::Capture;
use lambda_runtime::{Error, service_fn};

// At 512 MB a function has about a third of a vCPU: worker threads would only add wake-ups.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    audit_log::logging::init();
    // Settings are checked before the first poll: a bad deployment fails at init, loudly.
    let (retention, table_name) = match (Retention::from_env(), required_env(env::EVENTS_TABLE)) {
        (Ok(retention), Ok(table)) => (retention, table),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "capture refuses to start");
            return Err(e.to_string().into());
        }
    };
    let config = audit_log::sdk::load_config().await;
    let table = EventTable::new(aws_sdk_dynamodb::Client::new(&config), table_name);
    let capture = Capture::new(table, retention);
    lambda_runtime::run(service_fn(|event| capture.handle(event))).await
}
