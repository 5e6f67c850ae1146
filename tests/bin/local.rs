//! `./scripts/local`: the whole service on this machine. See the README.

use audit_log_tests::faults::{DatadogIntake, REFUSED_DATADOG_KEY};
use audit_log_tests::local::{Operator, Options, run};
use clap::Parser;

/// Runs the audit-log service locally: the emulator's queues and tables from template.yaml, the
/// functions' own handlers, and Lambda's event source mappings between them.
#[derive(Parser, Debug)]
#[command(name = "audit-log-local")]
struct Args {
    /// Generated events to send on top of the seed's examples.
    #[arg(long, default_value_t = 100)]
    events: usize,
    /// Invalid messages to send among them (they must end in the dead-letter queue).
    #[arg(long, default_value_t = 5)]
    invalid: usize,
    /// Deliver to a local Datadog stand-in instead of the emulator's CloudWatch Logs.
    #[arg(long)]
    datadog: bool,
    /// Afterwards, keep the API served on http://127.0.0.1:PORT and keep delivering.
    #[arg(long)]
    serve: bool,
    /// Port of --serve (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Inject the reliability suite's faults on the way (see RELIABILITY.md): throttling,
    /// unprocessed writes, rejected and failing deliveries, a 10-minute outage (compressed),
    /// functions killed mid-batch.
    #[arg(long)]
    faults: bool,
    /// Seed of the generated events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // The operator's settings, read as the deployed functions read them, and refused as they
    // would refuse them: before anything starts.
    let operator = match Operator::from_env() {
        Ok(operator) => operator,
        Err(e) => {
            eprintln!("audit-log-local refuses to start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // The port taken before anything starts, so one already in use is said at once, not after
    // the run.
    let listener = if args.serve {
        match tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("cannot listen on 127.0.0.1:{}: {e}", args.port);
                return std::process::ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    // The functions' own log lines on stderr: errors only, unless RUST_LOG asks for more. The
    // one global subscriber is the log tap's (see `emulator()`), so every line is also read
    // for leaked secrets.
    audit_log_tests::install_log_tap_echoing(&std::env::var("RUST_LOG").unwrap_or_default());
    let aws = audit_log_tests::emulator().await;
    let options = Options {
        events: args.events,
        invalid: args.invalid,
        datadog: args.datadog,
        seed: args.seed,
        operator: operator.clone(),
        verbose: true,
        faults: args
            .faults
            .then(|| audit_log_tests::local::FaultPlan::standard(args.seed)),
    };
    let started = std::time::Instant::now();
    let (report, stack, datadog) = run(&aws, &options).await;
    println!("\n{report}");
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    if let Some(listener) = listener {
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        println!(
            "\nAPI served on http://{address}; the organization comes from the X-Organization-Id header. Ctrl-C stops."
        );
        println!("console:           http://{address}/console/");
        // The console can set up either provider: Datadog goes to DATADOG_ENDPOINT_OVERRIDE
        // when set, else to a stand-in, never to Datadog.
        let (datadog_url, _stand_in) = match operator.datadog_endpoint_override {
            Some(url) => {
                println!("Datadog:           {url} (DATADOG_ENDPOINT_OVERRIDE)");
                (url, datadog)
            }
            None => {
                let intake = match datadog {
                    Some(intake) => intake,
                    None => DatadogIntake::start(Default::default()).await,
                };
                println!(
                    "Datadog stand-in:  {} (it refuses the API key {REFUSED_DATADOG_KEY})",
                    intake.uri()
                );
                (intake.uri(), Some(intake))
            }
        };
        println!("events queue:      {}", stack.queue("EventsQueue"));
        println!(
            "dead-letter queue: {}",
            stack.queue("EventsDeadLetterQueue")
        );
        println!(
            "AWS endpoint:      {}",
            std::env::var("AWS_ENDPOINT_URL").unwrap_or_default()
        );
        let datadog_url = Some(datadog_url);
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        if let Err(e) = audit_log_tests::serve::serve(&stack, datadog_url, listener, stop).await {
            eprintln!("serving stopped: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    if report.ok() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
