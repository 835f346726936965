//! A SHA-256 whose intermediate state can be persisted between requests, so that the next
//! chunk of an upload (or its final PUT) can be hashed by a different process.

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256};

use crate::Digest;

/// An in-progress SHA-256 over an upload's bytes.
#[derive(Clone, Default)]
pub struct ResumableSha256(Sha256);

/// The persisted state could not be decoded (wrong length or corrupted).
#[derive(Debug, thiserror::Error)]
#[error("corrupt upload hash state")]
pub struct CorruptHashState;

impl ResumableSha256 {
    /// A hasher over no bytes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The opaque state to persist.
    pub fn to_state(&self) -> Vec<u8> {
        self.0.serialize().to_vec()
    }

    /// Restores a hasher from [`ResumableSha256::to_state`] output.
    pub fn from_state(state: &[u8]) -> Result<Self, CorruptHashState> {
        let state = SerializedState::<Sha256>::try_from(state).map_err(|_| CorruptHashState)?;
        Sha256::deserialize(&state).map(Self).map_err(|_| CorruptHashState)
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        Digest::from_sha256_bytes(&self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_mid_block() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for split in [0, 1, 63, 64, 65, 4097, 9999, 10_000] {
            let mut first = ResumableSha256::new();
            first.update(&data[..split]);
            let mut resumed = ResumableSha256::from_state(&first.to_state()).expect("state decodes");
            resumed.update(&data[split..]);
            assert_eq!(resumed.finish(), Digest::sha256_of(&data), "split at {split}");
        }
    }

    #[test]
    fn corrupt_state_is_an_error() {
        assert!(ResumableSha256::from_state(b"nope").is_err());
    }
}
