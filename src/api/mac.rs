//! `MacAddr`: a 48-bit Ethernet address as pods, LSPs and annotations write it
//! (`0a:58:0a:64:00:05`). Parsing accepts `:` or `-` separators and any case, as
//! Go's `net.ParseMAC` does for 48-bit addresses; display is lower case with `:`.
//! The one MAC type of the crate: IPAM, the CNI protocol and the API all use it.

use std::fmt;
use std::str::FromStr;

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: want six hex octets separated by ':' or '-'")]
pub struct MacParseError(pub String);

impl MacAddr {
    /// The octets.
    pub fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Whether the group bit is set (such an address cannot be a port's MAC).
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// Whether the locally administered bit is set (generated MACs have it).
    pub fn is_locally_administered(self) -> bool {
        self.0[0] & 2 == 2
    }

    /// All zeros: not an interface address.
    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_owned());
        let sep = if s.contains(':') { ':' } else { '-' };
        let mut octets = [0u8; 6];
        let mut parts = s.split(sep);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_separators_and_prints_lower_colon_form() {
        let mac: MacAddr = "0A-58-0a-64-00-05".parse().unwrap();
        assert_eq!(mac.to_string(), "0a:58:0a:64:00:05");
        assert_eq!("0a:58:0a:64:00:05".parse::<MacAddr>().unwrap(), mac);
        assert!(!mac.is_multicast());
        assert!("01:00:5e:00:00:01"
            .parse::<MacAddr>()
            .unwrap()
            .is_multicast());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "0a:58:0a:64:00",
            "0a:58:0a:64:00:05:06",
            "0a:58:0a:64:00:zz",
            "0a5:8:0a:64:00:05",
            "0a:58-0a:64:00:05",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
