//! What CloudWatch Logs' answers mean: retry later, refused, or some events rejected inside a
//! success. The SDK retries nothing itself (see `service`), so every code it would have retried
//! is named here.

use super::request::Batch;
use super::role::RoleRefused;
use crate::destination::{DeliveryError, Failures};
use crate::sdk::BUSY;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};

pub(super) enum Problem {
    /// The log group or stream does not exist yet.
    Missing,
    Transient(String),
    Refused(DeliveryError),
    /// The request's parameters, and so its events: CloudWatch names none of them.
    Invalid(String),
}

pub(super) fn classify<E>(
    err: &SdkError<E, aws_sdk_cloudwatchlogs::config::http::HttpResponse>,
) -> Problem
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    // A refused AssumeRole surfaces from inside the SDK's credentials resolution.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<RoleRefused>() {
            return if refused.retryable {
                Problem::Transient(refused.message.clone())
            } else {
                Problem::Refused(DeliveryError::Refused(refused.message.clone()))
            };
        }
        source = e.source();
    }
    match err {
        SdkError::ServiceError(service) => match service.err().code() {
            Some("ResourceNotFoundException") => Problem::Missing,
            // CloudWatch Logs' own meaning of the code: a quota of the customer's account
            // (its log groups), not a rate; waiting does not lift it, the customer does.
            Some(code @ "LimitExceededException") => {
                Problem::Refused(DeliveryError::Refused(format!(
                    "CloudWatch Logs refused to create the log group ({code}): the customer's \
                     account has reached its quota of log groups in this region; delete unused \
                     ones or ask AWS for a higher quota"
                )))
            }
            // OperationAborted: another writer is creating the same group or stream right now
            // (two batches of a new customer at once); the next attempt finds it made.
            Some(code) if BUSY.contains(&code) || code == "OperationAbortedException" => {
                Problem::Transient(format!("CloudWatch Logs was busy ({code})"))
            }
            // Any answer of the 5xx family is CloudWatch's trouble, whatever it is called; so
            // are "too many requests" and "request timeout".
            code if crate::sdk::answered_in_trouble(service.raw().status().as_u16()) => {
                Problem::Transient(format!(
                    "CloudWatch Logs failed ({})",
                    code.unwrap_or("unknown error")
                ))
            }
            // CloudWatch checks names before events: a name it refuses is the configuration's
            // (the log group prefix), and every request would meet it.
            Some(code @ "InvalidParameterException")
                if service
                    .err()
                    .message()
                    .is_some_and(|m| m.contains("logGroupName") || m.contains("logStreamName")) =>
            {
                Problem::Refused(DeliveryError::Refused(format!(
                    "CloudWatch Logs refused the log group or stream name ({code}): the service's \
                     operator must check its LOG_GROUP_PREFIX"
                )))
            }
            Some(code @ "InvalidParameterException") => {
                Problem::Invalid(format!("CloudWatch Logs rejected the events ({code})"))
            }
            // The role's credentials are not known where they are used: the region is an opt-in
            // one the customer's account has not enabled (STS, in the service's region, gave
            // them all the same), or the role they belong to is gone. No policy fixes either.
            // (`InvalidClientTokenId` is STS's and IAM's word for the same.)
            Some(code @ ("UnrecognizedClientException" | "InvalidClientTokenId")) => {
                Problem::Refused(DeliveryError::Refused(format!(
                    "CloudWatch Logs did not accept the role's credentials in the chosen region \
                     ({code}): it may be an opt-in region the customer's AWS account has not \
                     enabled (enable it under the account's AWS Regions, or choose another \
                     region), or the role was deleted"
                )))
            }
            Some(code @ "AccessDeniedException") => {
                Problem::Refused(DeliveryError::Refused(format!(
                    "the customer's role may not write to CloudWatch Logs ({code}): attach to it \
                     the IAM policy of Edit streaming configuration (Create the IAM policy and \
                     role)"
                )))
            }
            code => Problem::Refused(DeliveryError::Refused(format!(
                "CloudWatch Logs refused the events ({})",
                code.unwrap_or("unknown error")
            ))),
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Problem::Transient("CloudWatch Logs did not answer".into())
        }
        _ => Problem::Refused(DeliveryError::Refused(
            "the request to CloudWatch Logs could not be built".into(),
        )),
    }
}

/// Positions CloudWatch rejected inside a successful answer: they are not delivered.
pub(super) fn rejected(
    batch: &Batch,
    info: Option<&aws_sdk_cloudwatchlogs::types::RejectedLogEventsInfo>,
) -> Failures {
    let Some(info) = info else {
        return Vec::new();
    };
    let n = batch.positions.len();
    let index = |i: i32| usize::try_from(i).unwrap_or(0);
    let mut failures = Vec::new();
    let mut mark = |range: std::ops::Range<usize>, why: &str| {
        for i in range {
            failures.push((
                batch.positions[i],
                DeliveryError::Rejected(format!("CloudWatch Logs rejected the event as {why}")),
            ));
        }
    };
    // AWS calls this "the index of the last log event that is too old" and "exclusive": read
    // as the last, an event written at worst is sent again dated at delivery (a duplicate),
    // where read the other way one refused would at worst count as delivered.
    if let Some(end) = info.too_old_log_event_end_index() {
        mark(0..(index(end) + 1).min(n), "too old");
    }
    if let Some(end) = info.expired_log_event_end_index() {
        mark(
            0..(index(end) + 1).min(n),
            "older than the log group's retention",
        );
    }
    if let Some(start) = info.too_new_log_event_start_index() {
        mark(index(start).min(n)..n, "too far in the future");
    }
    failures.sort_by_key(|f| f.0);
    failures.dedup_by_key(|f| f.0);
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    #[test]
    fn rejected_ranges_name_exactly_the_rejected_positions() {
        let batch = Batch {
            positions: vec![7, 3, 9, 1, 4],
            events: Vec::new(),
        };
        let info = aws_sdk_cloudwatchlogs::types::RejectedLogEventsInfo::builder()
            .too_old_log_event_end_index(1)
            .too_new_log_event_start_index(4)
            .build();
        let failed: Vec<usize> = rejected(&batch, Some(&info))
            .into_iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(failed, [3, 4, 7]);
        assert!(rejected(&batch, None).is_empty());
    }

    #[test]
    fn operation_aborted_and_any_5xx_are_transient_and_access_denied_is_not() {
        use aws_sdk_cloudwatchlogs::operation::put_log_events::PutLogEventsError;
        let error = |status: u16, code: &str| {
            let meta = aws_sdk_cloudwatchlogs::error::ErrorMetadata::builder()
                .code(code)
                .build();
            SdkError::service_error(
                PutLogEventsError::generic(meta),
                aws_smithy_runtime_api::http::Response::new(
                    StatusCode::try_from(status).unwrap(),
                    SdkBody::empty(),
                ),
            )
        };
        assert!(matches!(
            classify(&error(400, "OperationAbortedException")),
            Problem::Transient(_)
        ));
        assert!(matches!(
            classify(&error(503, "Whatever")),
            Problem::Transient(_)
        ));
        assert!(matches!(
            classify(&error(500, "InternalFailure")),
            Problem::Transient(_)
        ));
        let refused = |code| match classify(&error(400, code)) {
            Problem::Refused(DeliveryError::Refused(why)) => why,
            _ => panic!("{code} is not a refusal"),
        };
        assert!(refused("AccessDeniedException").contains("IAM policy"));
        // Credentials CloudWatch does not know where they are used: no policy to blame.
        for unknown in ["UnrecognizedClientException", "InvalidClientTokenId"] {
            let why = refused(unknown);
            assert!(
                why.contains("opt-in region") && !why.contains("policy"),
                "{why}"
            );
        }
        assert!(matches!(
            classify(&error(400, "InvalidParameterException")),
            Problem::Invalid(_)
        ));
        // What the SDK's own retry would have tried again, now that it tries nothing.
        for busy in [
            "TooManyRequestsException",
            "RequestTimeout",
            "PriorRequestNotComplete",
        ] {
            assert!(
                matches!(classify(&error(400, busy)), Problem::Transient(_)),
                "{busy}"
            );
        }
        assert!(matches!(
            classify(&error(429, "SomethingNew")),
            Problem::Transient(_)
        ));
    }

    #[test]
    fn the_account_out_of_log_groups_is_refused_for_the_customer_to_fix() {
        use aws_sdk_cloudwatchlogs::operation::create_log_group::CreateLogGroupError;
        let meta = aws_sdk_cloudwatchlogs::error::ErrorMetadata::builder()
            .code("LimitExceededException")
            .message("Resource limit exceeded.")
            .build();
        let error = SdkError::service_error(
            CreateLogGroupError::generic(meta),
            aws_smithy_runtime_api::http::Response::new(
                StatusCode::try_from(400).unwrap(),
                SdkBody::empty(),
            ),
        );
        match classify(&error) {
            Problem::Refused(DeliveryError::Refused(why)) => {
                assert!(why.contains("quota of log groups"), "{why}")
            }
            _ => panic!("a quota is no busy service"),
        }
    }
}
