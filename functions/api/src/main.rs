use audit_log_api::{Api, Settings};
use lambda_runtime::{Error, service_fn};

// At 512 MB a function has about a third of a vCPU: worker threads would only add wake-ups.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    audit_log::logging::init();
    let settings = Settings::from_env()
        .inspect_err(|e| tracing::error!(error = %e, "api refuses to start"))?;
    let aws = audit_log::sdk::load_config().await;
    let api = Api::new(settings, &aws);
    lambda_runtime::run(service_fn(|event| api.handle(event))).await
}
