//! Operator settings read from the environment at start-up (see CONTRACT.md).

use std::time::Duration;

pub const DEFAULT_RETENTION_DAYS: u32 = 400;
/// The product promises at least a year of history.
pub const MIN_RETENTION_DAYS: u32 = 366;
/// A century: the template's `MaxValue`, far inside what the events' times can be moved by.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{name} is not set; the template passes it to the function")]
    Missing { name: &'static str },
    #[error(
        "RETENTION_DAYS must be a whole number of days, from {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS}"
    )]
    RetentionNotANumber,
    #[error(
        "RETENTION_DAYS is {0}, under the {MIN_RETENTION_DAYS} days audit events must be kept for"
    )]
    RetentionTooShort(u32),
    #[error("RETENTION_DAYS is {0}, over the {MAX_RETENTION_DAYS} days (a century) it may be")]
    RetentionTooLong(u64),
    #[error("{0} must be a whole number, at least 1")]
    NotAPositiveNumber(&'static str),
    #[error(
        "DELIVERY_RETRY_WINDOW_HOURS is {hours}, longer than the events are kept ({most} hours)"
    )]
    RetryWindowOutlastsRetention { hours: u64, most: u64 },
    #[error(
        "DELIVERY_RETRY_MAX_BACKOFF_SECONDS is {0}, over a day ({most} seconds): a failing \
         destination would wait longer than that between two probes",
        most = crate::lane::MOST_MAX_BACKOFF_SECONDS
    )]
    BackoffOverADay(u64),
    #[error(
        "LOG_GROUP_PREFIX is {0:?}: CloudWatch takes only letters, digits and _ - / . # in a log \
         group's name, up to {MAX_LOG_GROUP_NAME} characters with the service's own part, and \
         none that starts with aws/"
    )]
    LogGroupPrefix(String),
    #[error("SERVICE_AWS_ACCOUNT_ID is {0:?}: an AWS account id is 12 digits")]
    ServiceAccount(String),
    #[error(
        "DATADOG_ENDPOINT_OVERRIDE is {0:?}: it must be an http:// or https:// URL such as \
         http://127.0.0.1:8126"
    )]
    DatadogEndpointOverride(String),
}

/// How long an audit event is kept: the TTL is the event's timestamp plus this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    days: u32,
}

impl Retention {
    pub fn days(days: u32) -> Result<Self, SettingsError> {
        if days < MIN_RETENTION_DAYS {
            return Err(SettingsError::RetentionTooShort(days));
        }
        if days > MAX_RETENTION_DAYS {
            return Err(SettingsError::RetentionTooLong(days.into()));
        }
        Ok(Self { days })
    }

    /// Reads `RETENTION_DAYS`, defaulting to 400.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::parse(std::env::var(env::RETENTION_DAYS).ok().as_deref())
    }

    pub fn parse(value: Option<&str>) -> Result<Self, SettingsError> {
        match value.map(str::trim) {
            None | Some("") => Self::days(DEFAULT_RETENTION_DAYS),
            Some(s) => {
                let days = whole_number(s).ok_or(SettingsError::RetentionNotANumber)?;
                match u32::try_from(days) {
                    Ok(days) => Self::days(days),
                    Err(_) => Err(SettingsError::RetentionTooLong(days)),
                }
            }
        }
    }

    pub fn as_duration(self) -> Duration {
        Duration::from_secs(u64::from(self.days) * 86_400)
    }

    pub fn as_days(self) -> u32 {
        self.days
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            days: DEFAULT_RETENTION_DAYS,
        }
    }
}

/// The names of the environment variables the functions read, one list for all three
/// (each function's `ENVIRONMENT` says which of them `template.yaml` gives it).
pub mod env {
    pub const EVENTS_TABLE: &str = "EVENTS_TABLE_NAME";
    pub const CONFIG_TABLE: &str = "CONFIG_TABLE_NAME";
    /// The events table's stream, read back when a batch's retries ran out.
    pub const EVENTS_STREAM: &str = "EVENTS_STREAM_ARN";
    pub const EVENTS_QUEUE: &str = "EVENTS_QUEUE_URL";
    pub const EVENTS_RETRY_QUEUE: &str = "EVENTS_RETRY_QUEUE_URL";
    pub const REPLAY_QUEUE: &str = "REPLAY_QUEUE_URL";
    pub const LANE_QUEUE: &str = "LANE_QUEUE_URL";
    pub const DEFERRED_QUEUE: &str = "DEFERRED_QUEUE_URL";
    pub const EXPORT_QUEUE: &str = "EXPORT_QUEUE_URL";
    pub const EXPORT_BUCKET: &str = "EXPORT_BUCKET_NAME";
    pub const SECRET_PREFIX: &str = "SECRET_NAME_PREFIX";
    pub const LOG_GROUP_PREFIX: &str = "LOG_GROUP_PREFIX";
    pub const ORGANIZATION_CLAIM: &str = "ORGANIZATION_CLAIM";
    pub const SERVICE_ACCOUNT: &str = "SERVICE_AWS_ACCOUNT_ID";
    pub const RETENTION_DAYS: &str = "RETENTION_DAYS";
    /// The console's OpenID Connect client and the issuer it signs people in with.
    pub const CONSOLE_CLIENT_ID: &str = "CONSOLE_CLIENT_ID";
    pub const CONSOLE_ISSUER: &str = "CONSOLE_ISSUER";
    /// Local runs only: where Datadog's API is.
    pub const DATADOG_ENDPOINT_OVERRIDE: &str = "DATADOG_ENDPOINT_OVERRIDE";
    pub use crate::lane::{MAX_BACKOFF_ENV as MAX_BACKOFF, RETRY_WINDOW_ENV as RETRY_WINDOW};
}

/// Where customers' log groups go when `LOG_GROUP_PREFIX` is left out (the seed's example).
pub const DEFAULT_LOG_GROUP_PREFIX: &str = "/hashicorp";

/// CloudWatch's longest log group name.
const MAX_LOG_GROUP_NAME: usize = 512;

/// Reads `LOG_GROUP_PREFIX`, defaulting to `/hashicorp`.
pub fn log_group_prefix_from_env() -> Result<String, SettingsError> {
    log_group_prefix(optional_env(env::LOG_GROUP_PREFIX).as_deref())
}

/// The prefix, checked at start-up against what CloudWatch takes in a log group's name: one it
/// refuses would fail every customer's delivery, each as if the trouble were theirs. A trailing
/// `/` is dropped, as the groups' names drop it, so the policy the console shows customers
/// (`<prefix>/*`) covers the groups the service writes.
pub fn log_group_prefix(value: Option<&str>) -> Result<String, SettingsError> {
    let Some(prefix) = value else {
        return Ok(DEFAULT_LOG_GROUP_PREFIX.to_owned());
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-/.#".contains(c);
    // The longest group the service makes of it: "Test connection"'s.
    let longest = crate::destination::cloudwatch::test_log_group(prefix);
    if !prefix.chars().all(allowed)
        || longest.len() > MAX_LOG_GROUP_NAME
        || longest.starts_with("aws/")
    {
        return Err(SettingsError::LogGroupPrefix(prefix.to_owned()));
    }
    Ok(prefix.trim_end_matches('/').to_owned())
}

/// A whole number as an operator may give it. CloudFormation's `Number` parameters also take
/// `400.0`, which reaches the function as written: a value with nothing after its point is the
/// whole number, so such a deploy starts rather than failing every invocation.
pub fn whole_number(value: &str) -> Option<u64> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !fraction.bytes().all(|b| b == b'0') {
        return None;
    }
    whole.parse().ok()
}

/// Reads `SERVICE_AWS_ACCOUNT_ID`, the AWS ID customers put in their role's trust policy:
/// anything but an account id would have every customer trust no one who calls.
pub fn service_account_from_env() -> Result<Option<String>, SettingsError> {
    service_account(optional_env(env::SERVICE_ACCOUNT).as_deref())
}

pub fn service_account(value: Option<&str>) -> Result<Option<String>, SettingsError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(id) if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(id.to_owned()))
        }
        Some(other) => Err(SettingsError::ServiceAccount(other.to_owned())),
    }
}

/// Reads `DATADOG_ENDPOINT_OVERRIDE` (local runs): a value that is not a URL would fail every
/// Datadog delivery as if each customer's destination were at fault.
pub fn datadog_endpoint_override_from_env() -> Result<Option<String>, SettingsError> {
    datadog_endpoint_override(optional_env(env::DATADOG_ENDPOINT_OVERRIDE).as_deref())
}

pub fn datadog_endpoint_override(value: Option<&str>) -> Result<Option<String>, SettingsError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
            Ok(Some(value.to_owned()))
        }
        _ => Err(SettingsError::DatadogEndpointOverride(value.to_owned())),
    }
}

/// A variable that may be left out; blank counts as left out.
pub fn optional_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A required environment variable naming a resource (a table, a queue).
pub fn required_env(name: &'static str) -> Result<String, SettingsError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(SettingsError::Missing { name }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_group_prefix_cloudwatch_would_refuse_stops_the_function_at_start_up() {
        assert_eq!(log_group_prefix(None).unwrap(), "/hashicorp");
        for good in ["/hashicorp", "/acme/audit", "acme", "/aws/acme"] {
            assert_eq!(log_group_prefix(Some(good)).unwrap(), good);
        }
        // What the console puts before `/*` in the customer's policy must cover the groups.
        for (trailing, kept) in [
            ("/a.b_c-d#e/", "/a.b_c-d#e"),
            ("/acme//", "/acme"),
            ("/", ""),
        ] {
            let prefix = log_group_prefix(Some(trailing)).unwrap();
            assert_eq!(prefix, kept);
            let group = crate::destination::cloudwatch::events_log_group(trailing);
            assert!(group.starts_with(&format!("{prefix}/")), "{group}");
        }
        let longest_taken = format!("/{}", "a".repeat(512 - "/packer/audit-logs-test".len() - 1));
        assert!(log_group_prefix(Some(&longest_taken)).is_ok());
        for bad in [
            "/has space",
            "/colon:",
            "/star*",
            "/é",
            "aws/acme",
            &format!("{longest_taken}a"),
        ] {
            let err = log_group_prefix(Some(bad)).unwrap_err();
            assert_eq!(err, SettingsError::LogGroupPrefix(bad.to_owned()), "{bad}");
            assert!(err.to_string().contains("LOG_GROUP_PREFIX"), "{err}");
        }
    }

    #[test]
    fn whole_numbers_are_taken_as_cloudformation_may_write_them() {
        for (text, n) in [
            ("400", 400),
            ("400.0", 400),
            ("168.00", 168),
            ("0", 0),
            ("7.", 7),
        ] {
            assert_eq!(whole_number(text), Some(n), "{text}");
        }
        for bad in [
            "400.5",
            "-1",
            "4e2",
            "",
            ".0",
            "1,000",
            "x",
            " 4",
            "18446744073709551616",
        ] {
            assert_eq!(whole_number(bad), None, "{bad}");
        }
        assert_eq!(Retention::parse(Some("400.0")).unwrap().as_days(), 400);
        assert_eq!(
            Retention::parse(Some("400.5")),
            Err(SettingsError::RetentionNotANumber)
        );
    }

    #[test]
    fn retention_past_a_century_is_refused() {
        assert_eq!(Retention::parse(Some("36500")).unwrap().as_days(), 36_500);
        assert_eq!(
            Retention::parse(Some("36501")),
            Err(SettingsError::RetentionTooLong(36_501))
        );
        assert_eq!(
            Retention::parse(Some("4294967296")),
            Err(SettingsError::RetentionTooLong(4_294_967_296))
        );
    }

    #[test]
    fn the_service_account_is_twelve_digits_or_left_out() {
        assert_eq!(service_account(None), Ok(None));
        assert_eq!(service_account(Some(" ")), Ok(None));
        assert_eq!(
            service_account(Some("123456789012")),
            Ok(Some("123456789012".into()))
        );
        for bad in [
            "12345678901",
            "1234567890123",
            "12345678901a",
            "arn:aws:iam::123456789012:root",
        ] {
            let err = service_account(Some(bad)).unwrap_err();
            assert!(err.to_string().contains("SERVICE_AWS_ACCOUNT_ID"), "{err}");
        }
    }

    #[test]
    fn a_datadog_endpoint_override_is_an_http_url() {
        assert_eq!(datadog_endpoint_override(None), Ok(None));
        for good in [
            "http://127.0.0.1:8126",
            "https://intake.example/",
            "http://localhost",
        ] {
            assert_eq!(datadog_endpoint_override(Some(good)), Ok(Some(good.into())));
        }
        for bad in ["127.0.0.1:8126", "ftp://127.0.0.1", "http://", "intake"] {
            let err = datadog_endpoint_override(Some(bad)).unwrap_err();
            assert!(
                err.to_string().contains("DATADOG_ENDPOINT_OVERRIDE"),
                "{err}"
            );
        }
    }

    #[test]
    fn retention_defaults_to_400_days() {
        assert_eq!(Retention::parse(None).unwrap().as_days(), 400);
        assert_eq!(Retention::parse(Some("")).unwrap().as_days(), 400);
    }

    #[test]
    fn retention_under_a_year_and_a_day_is_refused() {
        assert_eq!(
            Retention::parse(Some("365")),
            Err(SettingsError::RetentionTooShort(365))
        );
        assert_eq!(
            Retention::parse(Some("0")),
            Err(SettingsError::RetentionTooShort(0))
        );
        assert_eq!(Retention::parse(Some("366")).unwrap().as_days(), 366);
        assert_eq!(
            Retention::parse(Some("3650")).unwrap().as_duration(),
            Duration::from_secs(3650 * 86_400)
        );
    }

    #[test]
    fn retention_that_is_not_a_number_is_refused_with_a_clear_message() {
        for bad in ["-1", "1y", "400.5", "four hundred"] {
            let err = Retention::parse(Some(bad)).unwrap_err();
            assert_eq!(err, SettingsError::RetentionNotANumber, "{bad}");
            assert!(err.to_string().contains("RETENTION_DAYS"));
        }
    }
}
