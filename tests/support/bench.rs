//! Measuring the functions' release binaries as Lambda runs them: a local Runtime API (init
//! time is process start to the first poll) and peak memory from the kernel. Calls per
//! operation are counted by [`crate::faults::AwsProxy`] in front of the AWS emulator.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

type Reply = oneshot::Sender<(Duration, String)>;

#[derive(Default)]
struct RuntimeState {
    first_poll: Option<Instant>,
    /// What an invocation may take (its deadline); 60 s unless set.
    timeout: Option<Duration>,
    pending: VecDeque<(String, Reply)>,
    in_flight: HashMap<String, (Instant, Reply)>,
}

/// The Lambda Runtime API, enough for lambda_runtime: `next`, `response`, `error`.
#[derive(Clone)]
pub struct RuntimeApi {
    pub address: std::net::SocketAddr,
    state: Arc<Mutex<RuntimeState>>,
    arrived: Arc<Notify>,
}

async fn body_text(request: Request<Incoming>) -> String {
    request
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default()
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let api = Self {
            address: listener.local_addr().expect("address"),
            state: Arc::default(),
            arrived: Arc::new(Notify::new()),
        };
        let server = api.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let server = server.clone();
                        async move { Ok::<_, std::convert::Infallible>(server.answer(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        api
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        if path.ends_with("/invocation/next") {
            {
                let mut state = self.state.lock().expect("state");
                state.first_poll.get_or_insert_with(Instant::now);
            }
            self.arrived.notify_waiters();
            loop {
                let notified = self.arrived.notified();
                let next = self.state.lock().expect("state").pending.pop_front();
                if let Some((event, reply)) = next {
                    let id = crate::unique("request");
                    self.state
                        .lock()
                        .expect("state")
                        .in_flight
                        .insert(id.clone(), (Instant::now(), reply));
                    let timeout = self.state.lock().expect("state").timeout;
                    let timeout = timeout.unwrap_or(Duration::from_secs(60));
                    let deadline = (std::time::SystemTime::now() + timeout)
                        .duration_since(std::time::UNIX_EPOCH)
                        .expect("after 1970")
                        .as_millis();
                    return Response::builder()
                        .header("lambda-runtime-aws-request-id", id)
                        .header("lambda-runtime-deadline-ms", deadline.to_string())
                        .header(
                            "lambda-runtime-invoked-function-arn",
                            "arn:aws:lambda:us-east-1:123456789012:function:bench",
                        )
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(event)))
                        .expect("response");
                }
                notified.await;
            }
        }
        // .../invocation/<id>/response or /error
        let id = path.split('/').rev().nth(1).unwrap_or_default().to_owned();
        let outcome = path.rsplit('/').next().unwrap_or_default().to_owned();
        let body = body_text(request).await;
        if let Some((started, reply)) = self.state.lock().expect("state").in_flight.remove(&id) {
            let _ = reply.send((started.elapsed(), format!("{outcome}: {body}")));
        }
        Response::builder()
            .status(202)
            .body(Full::new(Bytes::new()))
            .expect("response")
    }

    /// Gives the invocations from now on this long, as a function's timeout does.
    pub fn set_timeout(&self, timeout: Duration) {
        self.state.lock().expect("state").timeout = Some(timeout);
    }

    /// Hands an event to the function; resolves with how long it took and what it answered.
    pub async fn invoke(&self, event: String) -> (Duration, String) {
        let (reply, answered) = oneshot::channel();
        self.state
            .lock()
            .expect("state")
            .pending
            .push_back((event, reply));
        self.arrived.notify_waiters();
        answered.await.expect("the function answered")
    }

    /// When the function first asked for an event, once it has.
    pub async fn first_poll(&self) -> Instant {
        loop {
            let notified = self.arrived.notified();
            if let Some(at) = self.state.lock().expect("state").first_poll {
                return at;
            }
            notified.await;
        }
    }
}

/// A function's release binary, started under the local Runtime API.
pub struct Function {
    pub child: tokio::process::Child,
    pub runtime: RuntimeApi,
    pub init: Duration,
    /// CPU the process used during `init`: unlike the wall time, not stretched when this
    /// machine's cores are busy with the emulator or anything else.
    pub init_cpu: Duration,
}

impl Function {
    pub async fn start(binary: &std::path::Path, environment: &[(String, String)]) -> Self {
        let runtime = RuntimeApi::start().await;
        let mut command = tokio::process::Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", runtime.address.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_LAMBDA_LOG_LEVEL", "WARN")
            .envs(environment.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // Passed on so allocator settings can be tried on the functions as they are.
            .envs(std::env::vars().filter(|(k, _)| k == "GLIBC_TUNABLES" || k == "LD_PRELOAD"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        let started = Instant::now();
        let child = command.spawn().expect("start the function");
        let polled = tokio::time::timeout(Duration::from_secs(10), runtime.first_poll())
            .await
            .expect("the function polled for an event");
        // It waits for its first event now, using no CPU.
        let init_cpu = process_cpu(child.id().expect("the function is running"));
        Self {
            child,
            runtime,
            init: polled - started,
            init_cpu,
        }
    }

    /// Init as the summary prints it: the wall time, then the CPU of it.
    pub fn init_figure(&self) -> String {
        format!(
            "{:.1} ms ({:.1} ms CPU)",
            self.init.as_secs_f64() * 1e3,
            self.init_cpu.as_secs_f64() * 1e3
        )
    }

    /// Peak resident memory so far, in KiB (the kernel's high-water mark).
    pub fn peak_kib(&self) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    }

    /// CPU the process has used so far, user and system, all its threads (the scheduler's
    /// nanosecond counts of each thread; a thread that ended is not counted, and the functions'
    /// threads live as long as the process).
    pub fn cpu(&self) -> Duration {
        process_cpu(self.child.id().expect("the function is running"))
    }
}

/// CPU process `pid` has used so far: see [`Function::cpu`].
fn process_cpu(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the kernel's counts");
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum();
    Duration::from_nanos(nanos)
}
