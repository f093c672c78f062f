//! The CNI specification versions the plugins speak, and the VERSION reply.

use std::fmt;

/// A CNI specification version these plugins accept in a network configuration.
///
/// Ordered, so "this verb needs 0.4.0 or later" is a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    /// Every supported version, oldest first, as VERSION reports them.
    pub const ALL: [CniVersion; 5] =
        [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0, CniVersion::V1_0_0, CniVersion::V1_1_0];

    /// The newest version: what VERSION reports as its own, and what errors carry when the
    /// configuration's version is unknown.
    pub const CURRENT: CniVersion = CniVersion::V1_1_0;

    pub fn parse(s: &str) -> Option<CniVersion> {
        CniVersion::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK arrived in 0.4.0.
    pub fn has_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// GC and STATUS arrived in 1.1.0.
    pub fn has_gc_and_status(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// Results before 1.0.0 carry `ips[].version` ("4" or "6").
    pub fn has_ip_version_field(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// 1.1.0 added `interfaces[].mtu/socketPath/pciID` and `routes[].mtu/advmss/priority/table/scope`.
    pub fn has_extended_fields(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The VERSION reply: our own version and every version we accept. It does not depend on stdin.
pub fn version_info() -> String {
    let supported: Vec<&str> = CniVersion::ALL.iter().map(|v| v.as_str()).collect();
    serde_json::json!({ "cniVersion": CniVersion::CURRENT.as_str(), "supportedVersions": supported }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_info_lists_every_supported_version() {
        assert_eq!(
            version_info(),
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
    }

    #[test]
    fn parses_only_supported_versions() {
        for v in CniVersion::ALL {
            assert_eq!(CniVersion::parse(v.as_str()), Some(v));
        }
        for bad in ["0.1.0", "0.2.0", "1.2.0", "1.0", "", " 1.0.0"] {
            assert_eq!(CniVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn verb_availability_follows_the_spec() {
        assert!(!CniVersion::V0_3_1.has_check());
        assert!(CniVersion::V0_4_0.has_check());
        assert!(!CniVersion::V1_0_0.has_gc_and_status());
        assert!(CniVersion::V1_1_0.has_gc_and_status());
        assert!(CniVersion::V0_4_0.has_ip_version_field());
        assert!(!CniVersion::V1_0_0.has_ip_version_field());
    }
}
