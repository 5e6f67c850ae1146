//! What Lambda hands the api function: a request from API Gateway, or messages of the export
//! queue (`{"Records": [...]}`, which no request has).

use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use serde::{Deserialize, Serialize};

#[derive(Debug)]
pub enum Invocation {
    Request(Box<ApiGatewayV2httpRequest>),
    Exports(SqsEvent),
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Response(Box<ApiGatewayV2httpResponse>),
    Exports(SqsBatchResponse),
}

impl<'de> Deserialize<'de> for Invocation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Messages {
            #[serde(rename = "Records")]
            records: Vec<SqsMessage>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Payload {
            Messages(Messages),
            Request(Box<ApiGatewayV2httpRequest>),
        }
        Ok(match Payload::deserialize(deserializer)? {
            Payload::Messages(m) => {
                let mut event = SqsEvent::default();
                event.records = m.records;
                Invocation::Exports(event)
            }
            Payload::Request(r) => Invocation::Request(r),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use audit_log::fixtures::lambda_event as fixture;

    #[test]
    fn requests_and_export_steps_are_told_apart() {
        let queue: Invocation = serde_json::from_str(&fixture("sqs-receive-message.json")).unwrap();
        assert!(matches!(queue, Invocation::Exports(e) if e.records.len() == 1));
        let request: Invocation =
            serde_json::from_str(&fixture("apigw-http-api-request.json")).unwrap();
        assert!(matches!(request, Invocation::Request(r) if r.raw_path.is_some()));
    }

    #[test]
    fn answers_are_the_response_or_the_batch_item_failures() {
        let mut response = ApiGatewayV2httpResponse::default();
        response.status_code = 204;
        let json = serde_json::to_value(Answer::Response(Box::new(response))).unwrap();
        assert_eq!(json["statusCode"], 204);
        assert_eq!(
            serde_json::to_value(Answer::Exports(SqsBatchResponse::default())).unwrap(),
            serde_json::json!({"batchItemFailures": []})
        );
    }
}
