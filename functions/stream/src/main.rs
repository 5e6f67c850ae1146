use audit_log_stream::{Settings, Stream};
use lambda_runtime::{Error, service_fn};

// At 512 MB a function has about a third of a vCPU: worker threads would only add wake-ups.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    audit_log::logging::init();
    let settings = Settings::from_env()
        .inspect_err(|e| tracing::error!(error = %e, "stream refuses to start"))?;
    let aws = audit_log::sdk::load_config().await;
    let stream = Stream::from_settings(&settings, &aws);
    lambda_runtime::run(service_fn(|event| stream.handle(event))).await
}
