//! Datadog's sites: the only hosts the service ever sends a customer's logs or key to.

use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr, VariantNames};

/// The Datadog sites the service delivers to; nothing else is ever called. Each site's name
/// is written once, here; parsing, printing and serde all use it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    EnumString,
    IntoStaticStr,
    Display,
    VariantNames,
)]
#[serde(into = "&'static str", try_from = "String")]
pub enum DatadogSite {
    #[strum(serialize = "datadoghq.com")]
    Us1,
    #[strum(serialize = "us3.datadoghq.com")]
    Us3,
    #[strum(serialize = "us5.datadoghq.com")]
    Us5,
    #[strum(serialize = "datadoghq.eu")]
    Eu1,
    #[strum(serialize = "ap1.datadoghq.com")]
    Ap1,
    #[strum(serialize = "ap2.datadoghq.com")]
    Ap2,
    #[strum(serialize = "ddog-gov.com")]
    Us1Fed,
}

impl TryFrom<String> for DatadogSite {
    type Error = strum::ParseError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl DatadogSite {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// Base URL of the logs intake (`POST /api/v2/logs`).
    pub fn intake_url(self) -> String {
        format!("https://http-intake.logs.{}", self.as_str())
    }

    /// Base URL of the API (`GET /api/v1/validate`).
    pub fn api_url(self) -> String {
        format!("https://api.{}", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_site_parses_and_nothing_else_does() {
        for name in [
            "datadoghq.com",
            "us3.datadoghq.com",
            "us5.datadoghq.com",
            "datadoghq.eu",
            "ap1.datadoghq.com",
            "ap2.datadoghq.com",
            "ddog-gov.com",
        ] {
            let site = DatadogSite::parse(name).unwrap();
            assert_eq!(site.as_str(), name);
            assert_eq!(serde_json::to_value(site).unwrap(), serde_json::json!(name));
            let back: DatadogSite = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(back, site);
        }
        let refused = serde_json::from_value::<DatadogSite>(serde_json::json!("evil.com"))
            .unwrap_err()
            .to_string();
        assert!(!refused.contains("evil"), "{refused}");
        for bad in [
            "evil.com",
            "datadoghq.com.evil.com",
            "DATADOGHQ.COM",
            "us2.datadoghq.com",
            "",
        ] {
            assert_eq!(DatadogSite::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn hosts_come_from_the_site() {
        assert_eq!(
            DatadogSite::Eu1.intake_url(),
            "https://http-intake.logs.datadoghq.eu"
        );
        assert_eq!(DatadogSite::Us3.api_url(), "https://api.us3.datadoghq.com");
        assert_eq!(
            DatadogSite::Us1Fed.intake_url(),
            "https://http-intake.logs.ddog-gov.com"
        );
    }
}
