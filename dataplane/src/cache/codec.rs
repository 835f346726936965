//! The byte form of cached values: length-prefixed fields, read back without copying the
//! large ones (a manifest body is a slice of the cached buffer).

use bytes::{BufMut, Bytes, BytesMut};

/// Builds an encoded value.
#[derive(Default)]
pub struct Encoder {
    buf: BytesMut,
}

impl Encoder {
    /// An empty value with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Encoder {
        Encoder { buf: BytesMut::with_capacity(capacity) }
    }

    /// Appends a byte field.
    pub fn bytes(mut self, field: &[u8]) -> Self {
        self.buf.put_u32(u32::try_from(field.len()).unwrap_or(u32::MAX));
        self.buf.put_slice(field);
        self
    }

    /// Appends a text field.
    pub fn str(self, field: &str) -> Self {
        self.bytes(field.as_bytes())
    }

    /// Appends an optional text field.
    pub fn opt_str(mut self, field: Option<&str>) -> Self {
        match field {
            Some(s) => {
                self.buf.put_u8(1);
                self.str(s)
            }
            None => {
                self.buf.put_u8(0);
                self
            }
        }
    }

    /// Appends a number.
    pub fn i64(mut self, n: i64) -> Self {
        self.buf.put_i64(n);
        self
    }

    /// The encoded value.
    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

/// Reads an encoded value field by field; every read is `None` on malformed input.
pub struct Decoder {
    buf: Bytes,
    at: usize,
}

impl Decoder {
    /// Reads `buf`.
    pub fn new(buf: Bytes) -> Decoder {
        Decoder { buf, at: 0 }
    }

    fn take(&mut self, n: usize) -> Option<Bytes> {
        let end = self.at.checked_add(n)?;
        if end > self.buf.len() {
            return None;
        }
        let out = self.buf.slice(self.at..end);
        self.at = end;
        Some(out)
    }

    /// The next byte field, sharing the buffer.
    pub fn bytes(&mut self) -> Option<Bytes> {
        let len = self.take(4)?;
        let len = u32::from_be_bytes(len[..].try_into().ok()?) as usize;
        self.take(len)
    }

    /// The next text field.
    pub fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    /// The next optional text field.
    pub fn opt_string(&mut self) -> Option<Option<String>> {
        match self.take(1)?[0] {
            0 => Some(None),
            _ => self.string().map(Some),
        }
    }

    /// The next number.
    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?[..].try_into().ok()?))
    }

    /// Whether every byte was read (a value of the expected shape).
    pub fn done(&self) -> bool {
        self.at == self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let value =
            Encoder::default().str("sha256:abc").opt_str(None).opt_str(Some("x")).i64(-5).bytes(b"\x00\x01").finish();
        let mut d = Decoder::new(value);
        assert_eq!(d.string().as_deref(), Some("sha256:abc"));
        assert_eq!(d.opt_string(), Some(None));
        assert_eq!(d.opt_string(), Some(Some("x".into())));
        assert_eq!(d.i64(), Some(-5));
        assert_eq!(d.bytes().as_deref(), Some(&b"\x00\x01"[..]));
        assert!(d.done());
    }

    #[test]
    fn truncated_input_reads_as_none() {
        let value = Encoder::default().str("sha256:abc").finish();
        let mut d = Decoder::new(value.slice(..value.len() - 1));
        assert_eq!(d.string(), None);
        let mut d = Decoder::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]));
        assert_eq!(d.bytes(), None);
    }
}
