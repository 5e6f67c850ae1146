//! `--serve`: the api function on http://127.0.0.1:PORT, as API Gateway would call it, while
//! the event source mappings keep moving events along and exports' steps running.
//!
//! There is no token to verify locally: the organization claim comes from the development
//! header `X-Organization-Id` (absent: no verified claims, so 401, as in production).

use crate::local::{
    Stack, StreamRun, drain_events_queue, drain_export_queue, drain_stream, drain_stream_queues,
};
use aws_lambda_events::encodings::Body;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub const ORGANIZATION_HEADER: &str = "x-organization-id";

/// Answers with the api, the header's organization given as the claim the api reads
/// (`claim`, the operator's `ORGANIZATION_CLAIM`).
async fn answer(
    api: &audit_log_api::Api,
    claim: &str,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(k, _)| k.as_str() != ORGANIZATION_HEADER)
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let organization = parts
        .headers
        .get(ORGANIZATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let claims = organization.as_deref().map(|o| {
        vec![
            (claim, o),
            ("sub", "local-developer"),
            ("email", "developer@localhost"),
        ]
    });
    let text = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
    let event = crate::api_request_with_query(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or_default(),
        &headers,
        text.as_deref(),
        claims.as_deref(),
    );
    let response = api.respond(&event).await;
    let mut out = Response::builder().status(response.status_code as u16);
    for (name, value) in &response.headers {
        out = out.header(name, value);
    }
    let body = match response.body {
        Some(Body::Text(t)) => Bytes::from(t),
        Some(Body::Binary(b)) => Bytes::from(b),
        _ => Bytes::new(),
    };
    out.body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Serves the API on `listener` until `shutdown` completes, and keeps delivering what arrives
/// on the events queue.
pub async fn serve(
    stack: &Stack,
    datadog: Option<String>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let api = Arc::new(stack.api(datadog.clone()));
    let claim: Arc<str> = api.organization_claim().into();
    let mover = {
        let stack = stack.clone();
        let api = api.clone();
        let (capture, stream) = (stack.capture(), stack.stream(datadog));
        tokio::spawn(async move {
            let mut after: HashMap<String, String> = HashMap::new();
            let mut run = StreamRun::default();
            loop {
                drain_events_queue(&stack, &capture, |_| {}).await;
                after = drain_stream(&stack, &stream, &after, &mut run, |_| {}).await;
                drain_stream_queues(&stack, &stream).await;
                drain_export_queue(&stack, &api).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, _) = accepted?;
                let api = api.clone();
                let claim = claim.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (api, claim) = (api.clone(), claim.clone());
                        async move { Ok::<_, std::convert::Infallible>(answer(&api, &claim, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                        .await;
                });
            }
            () = &mut shutdown => {
                mover.abort();
                return Ok(());
            }
        }
    }
}
