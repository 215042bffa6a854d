//! SSH's binary encoding (RFC 4251 §5): a reader over untrusted bytes that
//! never panics, and appenders for building payloads.

/// A value was cut short or malformed; the name says which field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed {0}")]
pub struct Malformed(pub &'static str);

/// Reads SSH types from a byte slice, front to back.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// What has not been read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        if self.rest.len() < n {
            return Err(Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, Malformed> {
        Ok(self.u8(what)? != 0)
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, Malformed> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `string`: u32 length, then that many bytes.
    pub fn string(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    /// A `string` that must be UTF-8 (names, user names).
    pub fn utf8(&mut self, what: &'static str) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.string(what)?).map_err(|_| Malformed(what))
    }

    /// A `name-list`: comma-separated ASCII names.
    pub fn name_list(&mut self, what: &'static str) -> Result<Vec<&'a str>, Malformed> {
        let s = self.utf8(what)?;
        if s.is_empty() {
            return Ok(Vec::new());
        }
        Ok(s.split(',').collect())
    }

    /// An `mpint` as its magnitude bytes, leading zeros removed (positive
    /// values only; a negative one is malformed).
    pub fn mpint_positive(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let b = self.string(what)?;
        if b.first().is_some_and(|x| x & 0x80 != 0) {
            return Err(Malformed(what));
        }
        let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
        Ok(&b[start..])
    }

    /// Fails unless everything has been read.
    pub fn end(&self, what: &'static str) -> Result<(), Malformed> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Malformed(what))
        }
    }
}

/// Appends SSH types to a buffer.
pub trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_bool(&mut self, v: bool) {
        self.put_u8(u8::from(v));
    }
    fn put_u32(&mut self, v: u32);
    fn put_raw(&mut self, v: &[u8]);
    fn put_string(&mut self, v: &[u8]) {
        self.put_u32(v.len() as u32);
        self.put_raw(v);
    }
    fn put_str(&mut self, v: &str) {
        self.put_string(v.as_bytes());
    }
    /// An `mpint` from unsigned big-endian magnitude bytes.
    fn put_mpint(&mut self, magnitude: &[u8]) {
        let start = magnitude
            .iter()
            .position(|x| *x != 0)
            .unwrap_or(magnitude.len());
        let m = &magnitude[start..];
        let pad = m.first().is_some_and(|x| x & 0x80 != 0);
        self.put_u32((m.len() + usize::from(pad)) as u32);
        if pad {
            self.put_u8(0);
        }
        self.put_raw(m);
    }
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_raw(&mut self, v: &[u8]) {
        self.extend_from_slice(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_short_input() {
        let mut b = Vec::new();
        b.put_u8(7);
        b.put_u32(0xdead_beef);
        b.put_str("ssh-ed25519");
        b.put_mpint(&[0, 0, 0x80, 1]);
        b.put_mpint(&[0, 0]);
        b.put_str("a,b");
        let mut r = Reader::new(&b);
        assert_eq!(r.u8("x"), Ok(7));
        assert_eq!(r.u32("x"), Ok(0xdead_beef));
        assert_eq!(r.utf8("x"), Ok("ssh-ed25519"));
        assert_eq!(r.mpint_positive("x"), Ok(&[0x80, 1][..]));
        assert_eq!(r.mpint_positive("x"), Ok(&[][..]));
        assert_eq!(r.name_list("x"), Ok(vec!["a", "b"]));
        assert!(r.end("x").is_ok());
        assert_eq!(r.u32("len"), Err(Malformed("len")));
        assert_eq!(
            Reader::new(&[0, 0, 0, 9, 1]).string("s"),
            Err(Malformed("s"))
        );
        // mpint encoding: 0x80 needs a leading zero byte.
        let mut m = Vec::new();
        m.put_mpint(&[0x80]);
        assert_eq!(m, [0, 0, 0, 2, 0, 0x80]);
    }
}
