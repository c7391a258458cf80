//! The CNI error object (`{cniVersion, code, msg, details}`) and the spec's codes.

use serde::{Deserialize, Serialize};

/// Error codes from the CNI specification (0–99 reserved; ≥100 plugin-specific).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidNetworkConfig = 7,
    TryAgainLater = 11,
    PluginNotAvailable = 50,
}

/// A CNI error as printed on stdout with a non-zero exit status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("CNI error {code}: {msg}")]
pub struct CniError {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            cni_version: super::version::LATEST.to_string(),
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Answers in the version the caller asked for, when it is one we speak.
    pub fn in_version(mut self, version: &str) -> Self {
        if super::version::is_supported(version) {
            self.cni_version = version.to_string();
        }
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("CniError always serializes")
    }
}
