//! Datadog's sites: the only hosts the service ever sends a customer's logs or key to.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The Datadog sites the service delivers to; nothing else is ever called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DatadogSite {
    #[serde(rename = "datadoghq.com")]
    Us1,
    #[serde(rename = "us3.datadoghq.com")]
    Us3,
    #[serde(rename = "us5.datadoghq.com")]
    Us5,
    #[serde(rename = "datadoghq.eu")]
    Eu1,
    #[serde(rename = "ap1.datadoghq.com")]
    Ap1,
    #[serde(rename = "ap2.datadoghq.com")]
    Ap2,
    #[serde(rename = "ddog-gov.com")]
    Us1Fed,
}

impl DatadogSite {
    pub const ALL: [DatadogSite; 7] = [
        DatadogSite::Us1,
        DatadogSite::Us3,
        DatadogSite::Us5,
        DatadogSite::Eu1,
        DatadogSite::Ap1,
        DatadogSite::Ap2,
        DatadogSite::Us1Fed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DatadogSite::Us1 => "datadoghq.com",
            DatadogSite::Us3 => "us3.datadoghq.com",
            DatadogSite::Us5 => "us5.datadoghq.com",
            DatadogSite::Eu1 => "datadoghq.eu",
            DatadogSite::Ap1 => "ap1.datadoghq.com",
            DatadogSite::Ap2 => "ap2.datadoghq.com",
            DatadogSite::Us1Fed => "ddog-gov.com",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|site| site.as_str() == s)
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

impl fmt::Display for DatadogSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
        }
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
