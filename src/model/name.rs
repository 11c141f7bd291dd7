//! Machine names. A name is a directory under `machines/`, so it must be a
//! single, visible, portable path component; anything else is refused before
//! it can reach the store or a runtime.

use std::fmt;

use crate::error::{Error, Result};

pub const MAX_NAME_LEN: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MachineName(String);

impl MachineName {
    pub fn parse(raw: &[u8]) -> Result<Self> {
        let lossy = String::from_utf8_lossy(raw).into_owned();
        let invalid = |reason| Error::InvalidName {
            name: lossy.clone(),
            reason,
        };
        let s = std::str::from_utf8(raw).map_err(|_| invalid("not valid UTF-8"))?;
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(Error::NameTooLong { max: MAX_NAME_LEN });
        }
        // As Docker's: a name starting with '-' would read as an option to
        // every command line tool, one starting with '.' would hide.
        if !s.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(invalid("must start with a letter or digit"));
        }
        if s.contains('/') {
            return Err(invalid("must not contain '/'"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(invalid(
                "only letters, digits, '-', '_' and '.' are allowed",
            ));
        }
        Ok(MachineName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by name be searched with a plain `&str`.
impl std::borrow::Borrow<str> for MachineName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MachineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for MachineName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        MachineName::parse(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["web", "web-1", "a.b_c", "X9"] {
            assert_eq!(MachineName::parse(n.as_bytes()).unwrap().as_str(), n);
        }
    }

    #[test]
    fn rejects_hostile_names() {
        for n in [
            &b""[..],
            b".hidden",
            b"..",
            b"a/b",
            b"a b",
            b"\xff\xfe",
            b"a\nb",
            b"-rf",
            b"_x",
        ] {
            assert!(
                matches!(MachineName::parse(n), Err(Error::InvalidName { .. })),
                "{n:?}"
            );
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            MachineName::parse(long.as_bytes()),
            Err(Error::NameTooLong { .. })
        ));
    }
}
