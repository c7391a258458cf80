//! CNI spec versions we speak, and the VERSION command's answer.

use serde::Serialize;

/// Every spec version the plugin accepts and renders results in.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest supported version; used when the caller names none.
pub const LATEST: &str = "1.1.0";

pub fn is_supported(version: &str) -> bool {
    SUPPORTED.contains(&version)
}

/// The answer to `CNI_COMMAND=VERSION`.
#[derive(Debug, Serialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<&'static str>,
}

/// Builds the VERSION answer for the version the runtime asked in (if any).
pub fn version_info(requested: Option<&str>) -> VersionInfo {
    let cni_version = requested.filter(|v| is_supported(v)).unwrap_or(LATEST);
    VersionInfo {
        cni_version: cni_version.to_string(),
        supported_versions: SUPPORTED.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_answer_echoes_a_supported_request_and_lists_all() {
        let v = version_info(Some("0.3.1"));
        assert_eq!(v.cni_version, "0.3.1");
        assert_eq!(v.supported_versions, SUPPORTED);
    }

    #[test]
    fn version_answer_falls_back_to_latest_for_unknown_request() {
        assert_eq!(version_info(Some("9.9.9")).cni_version, LATEST);
        assert_eq!(version_info(None).cni_version, LATEST);
    }
}
