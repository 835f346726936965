//! Content digests (`algorithm:encoded`). Only sha256 is accepted for content the registry
//! computes; the grammar check follows the OCI image spec.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::ParseError;

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Self::from_sha256_bytes(&Sha256::digest(bytes))
    }

    /// Builds a digest from a raw 32-byte SHA-256 output.
    pub fn from_sha256_bytes(raw: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex::encode(raw)))
    }

    /// The full `sha256:…` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The algorithm part (`sha256`).
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The hex part after the colon.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl FromStr for Digest {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((algorithm, encoded)) = s.split_once(':') else {
            return Err(ParseError::Digest(s.to_owned(), "expected algorithm:encoded"));
        };
        let algorithm_ok = !algorithm.is_empty()
            && algorithm.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        if !algorithm_ok {
            return Err(ParseError::Digest(s.to_owned(), "malformed algorithm"));
        }
        if algorithm != "sha256" {
            return Err(ParseError::Digest(s.to_owned(), "unsupported algorithm (sha256 only)"));
        }
        if encoded.len() != 64 || !encoded.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ParseError::Digest(s.to_owned(), "sha256 needs 64 lowercase hex digits"));
        }
        Ok(Digest(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_sha256() {
        let d: Digest =
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().expect("valid");
        assert_eq!(d, Digest::sha256_of(b""));
        assert_eq!(d.hex().len(), 64);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:../../../../etc/passwd0000000000000000000000000000000000000000000",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} accepted");
        }
    }
}
