//! A hash whose intermediate state can be persisted between requests, so that the next chunk of
//! an upload (or its final PUT) can be hashed by a different process.

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256, Sha512};

use crate::Digest;
use crate::digest::Algorithm;

/// An in-progress hash over an upload's bytes, with the algorithm the session was opened for.
#[derive(Clone)]
pub enum ResumableHash {
    /// SHA-256.
    Sha256(Sha256),
    /// SHA-512.
    Sha512(Sha512),
}

/// The persisted state could not be decoded (wrong length or corrupted).
#[derive(Debug, thiserror::Error)]
#[error("corrupt upload hash state")]
pub struct CorruptHashState;

impl ResumableHash {
    /// A hasher over no bytes yet.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Self::Sha256(Sha256::new()),
            Algorithm::Sha512 => Self::Sha512(Sha512::new()),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Sha256(_) => Algorithm::Sha256,
            Self::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    /// The opaque state to persist. The two algorithms' states differ in length, which is how
    /// [`ResumableHash::from_state`] tells them apart (and how states written before sha512 was
    /// supported, all sha256, still decode).
    pub fn to_state(&self) -> Vec<u8> {
        match self {
            Self::Sha256(h) => h.serialize().to_vec(),
            Self::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// Restores a hasher from [`ResumableHash::to_state`] output.
    pub fn from_state(state: &[u8]) -> Result<Self, CorruptHashState> {
        if let Ok(state) = SerializedState::<Sha256>::try_from(state) {
            return Sha256::deserialize(&state).map(Self::Sha256).map_err(|_| CorruptHashState);
        }
        let state = SerializedState::<Sha512>::try_from(state).map_err(|_| CorruptHashState)?;
        Sha512::deserialize(&state).map(Self::Sha512).map_err(|_| CorruptHashState)
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        match self {
            Self::Sha256(h) => Digest::from_raw(Algorithm::Sha256, &h.finalize()),
            Self::Sha512(h) => Digest::from_raw(Algorithm::Sha512, &h.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_mid_block() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            for split in [0, 1, 63, 64, 65, 127, 128, 129, 4097, 9999, 10_000] {
                let mut first = ResumableHash::new(algorithm);
                first.update(&data[..split]);
                let mut resumed = ResumableHash::from_state(&first.to_state()).expect("state decodes");
                assert_eq!(resumed.algorithm(), algorithm);
                resumed.update(&data[split..]);
                assert_eq!(resumed.finish(), algorithm.digest(&data), "{algorithm} split at {split}");
            }
        }
    }

    #[test]
    fn the_two_states_are_told_apart_by_length() {
        let a = ResumableHash::new(Algorithm::Sha256).to_state().len();
        let b = ResumableHash::new(Algorithm::Sha512).to_state().len();
        assert_ne!(a, b);
    }

    #[test]
    fn corrupt_state_is_an_error() {
        assert!(ResumableHash::from_state(b"nope").is_err());
    }
}
