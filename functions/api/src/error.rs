//! Errors as the contract shapes them: `{"error": {"code": "<snake_case>", "message": "..."}}`.
//! Messages say what to fix and never repeat a value from the request.

use aws_lambda_events::event::apigw::ApiGatewayV2httpResponse;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Seconds to wait, for a 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            401,
            "unauthenticated",
            "the request carries no verified identity; sign in and send the token",
        )
    }

    pub fn forbidden() -> Self {
        Self::new(
            403,
            "forbidden",
            "the caller does not belong to this organization",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    pub fn version_mismatch(current: u64) -> Self {
        Self::new(
            412,
            "version_mismatch",
            format!(
                "the configuration is at version {current}; read it again and retry with If-Match: {current}"
            ),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "payload_too_large",
            format!("the body is over {limit} bytes"),
        )
    }

    pub fn rate_limited(retry_after: u64, limit: audit_log::streaming::RateLimit) -> Self {
        let window = match limit.window_seconds {
            60 => "minute".to_owned(),
            3600 => "hour".to_owned(),
            s => format!("{s} seconds"),
        };
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                429,
                "rate_limited",
                format!(
                    "at most {} {} per organization per {window}; retry in {retry_after} s",
                    limit.per_window, limit.noun
                ),
            )
        }
    }

    /// 429 for what the organization already has under way.
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(429, code, message)
        }
    }

    /// A request this service could not answer in time: the message says what to ask
    /// instead.
    pub fn too_slow(message: impl Into<String>) -> Self {
        Self::new(500, "too_slow", message)
    }

    /// The details go to the log; the caller learns only that it was on our side.
    pub fn internal() -> Self {
        Self::new(500, "internal", "the service failed; retry later")
    }

    pub fn into_response(self) -> ApiGatewayV2httpResponse {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = crate::json_response(self.status, &body);
        if let Some(seconds) = self.retry_after {
            response
                .headers
                .insert("retry-after", http::HeaderValue::from(seconds));
        }
        response
    }
}
