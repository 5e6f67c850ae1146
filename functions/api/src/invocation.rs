//! What Lambda hands the api function: a request from API Gateway, or messages of the export
//! queue (`{"Records": [...]}`, which no request has).

use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
        let mut payload = Value::deserialize(deserializer)?;
        if payload.get("Records").is_some() {
            let messages = Messages::deserialize(payload).map_err(serde::de::Error::custom)?;
            let mut event = SqsEvent::default();
            event.records = messages.records;
            return Ok(Invocation::Exports(event));
        }
        claims_as_text(&mut payload);
        ApiGatewayV2httpRequest::deserialize(payload)
            .map(|r| Invocation::Request(Box::new(r)))
            .map_err(serde::de::Error::custom)
    }
}

/// API Gateway hands every JWT claim over as text (a number's digits, a list as `[a b]`); an
/// event made by hand may carry a token's claims as they were (`"exp": 1700000000`), which
/// would otherwise fail the whole invocation rather than be read as API Gateway would.
fn claims_as_text(payload: &mut Value) {
    let Some(claims) = payload
        .pointer_mut("/requestContext/authorizer/jwt/claims")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    // A claim without a value is no claim.
    claims.retain(|_, claim| !claim.is_null());
    for claim in claims.values_mut() {
        let text = match &*claim {
            Value::String(_) => continue,
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(claim_text).collect();
                format!("[{}]", items.join(" "))
            }
            other => claim_text(other),
        };
        *claim = Value::String(text);
    }
}

fn claim_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
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
    fn claims_that_are_not_text_are_read_as_api_gateway_writes_them() {
        let mut event: Value =
            serde_json::from_str(&fixture("apigw-http-api-request.json")).unwrap();
        event["requestContext"]["authorizer"]["jwt"]["claims"] = serde_json::json!({
            "organization_id": "o",
            "exp": 1700000000,
            "email_verified": true,
            "groups": ["admin", "ops"],
            "address": {"country": "NZ"},
            "nickname": null,
        });
        let Invocation::Request(request) = serde_json::from_value(event).unwrap() else {
            panic!("not a request")
        };
        let claims = &request
            .request_context
            .authorizer
            .unwrap()
            .jwt
            .unwrap()
            .claims;
        let claim = |name: &str| claims.get(name).map(String::as_str);
        assert_eq!(claim("organization_id"), Some("o"));
        assert_eq!(claim("exp"), Some("1700000000"));
        assert_eq!(claim("email_verified"), Some("true"));
        assert_eq!(claim("groups"), Some("[admin ops]"));
        assert_eq!(claim("address"), Some(r#"{"country":"NZ"}"#));
        assert_eq!(claim("nickname"), None);
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
