//! Content digests (`algorithm:encoded`): the OCI image spec's registered algorithms sha256
//! (canonical) and sha512. Other algorithms are refused; the grammar check follows the spec.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256, Sha512};

use crate::ParseError;

/// A digest algorithm the registry computes and verifies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// SHA-256, the canonical algorithm: what is computed when nothing else is asked for.
    #[default]
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The name in a digest string.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Hex digits of the encoded part.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// The digest of `bytes` with this algorithm.
    pub fn digest(self, bytes: &[u8]) -> Digest {
        match self {
            Algorithm::Sha256 => Digest::from_raw(self, &Sha256::digest(bytes)),
            Algorithm::Sha512 => Digest::from_raw(self, &Sha512::digest(bytes)),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            _ => Err(ParseError::Digest(s.to_owned(), "unsupported algorithm (sha256 and sha512 are)")),
        }
    }
}

/// A validated `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Algorithm::Sha256.digest(bytes)
    }

    /// Builds a digest from a raw hash output of `algorithm`.
    pub fn from_raw(algorithm: Algorithm, raw: &[u8]) -> Self {
        Digest(format!("{algorithm}:{}", hex::encode(raw)))
    }

    /// The full `algorithm:hex` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The algorithm part (`sha256`, `sha512`).
    pub fn algorithm(&self) -> &str {
        self.kind().as_str()
    }

    /// The algorithm.
    pub fn kind(&self) -> Algorithm {
        if self.0.starts_with("sha512:") { Algorithm::Sha512 } else { Algorithm::Sha256 }
    }

    /// The hex part after the colon.
    pub fn hex(&self) -> &str {
        &self.0[self.algorithm().len() + 1..]
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
        let algorithm: Algorithm = algorithm
            .parse()
            .map_err(|_| ParseError::Digest(s.to_owned(), "unsupported algorithm (sha256 and sha512 are supported)"))?;
        if encoded.len() != algorithm.hex_len() || !encoded.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            let message = match algorithm {
                Algorithm::Sha256 => "sha256 needs 64 lowercase hex digits",
                Algorithm::Sha512 => "sha512 needs 128 lowercase hex digits",
            };
            return Err(ParseError::Digest(s.to_owned(), message));
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
        assert_eq!(d.kind(), Algorithm::Sha256);
    }

    #[test]
    fn parses_valid_sha512() {
        let empty = "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";
        let d: Digest = empty.parse().expect("valid");
        assert_eq!(d, Algorithm::Sha512.digest(b""));
        assert_eq!((d.algorithm(), d.hex().len()), ("sha512", 128));
        assert_eq!(d.to_string(), empty);
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
            "sha384:38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b",
            // A sha256 length under sha512, and the reverse.
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
            "sha512:CF83E1357EEFB8BDF1542850D66D8007D620E4050B5715DC83F4A921D36CE9CE47D0D13C5D85F2B0FF8318D2877EEC2F63B931BD47417A81A538327AF927DA3E",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} accepted");
        }
    }
}
