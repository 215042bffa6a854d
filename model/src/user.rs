//! A platform user name: who is logging in, the part of the SSH login before
//! the last `@`.
//!
//! The rules are deliberately few, because the platform owns user names and
//! we must not refuse a name it accepts. We only refuse what would break the
//! gateway itself or its logs:
//!
//! - empty names, which would make `@01ac8894` look like a login;
//! - more than 128 bytes, to bound what an unauthenticated client can make
//!   us carry around, log and send to the control plane;
//! - control characters, which could forge log lines or terminal output;
//! - whitespace, which no platform name has and which hides in logs.
//!
//! A name may contain `@` (e-mail style names like `alice@example.com`):
//! logins are split at the *last* `@`, and a session id never contains one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest user name, in bytes of UTF-8.
pub const MAX_LEN: usize = 128;

/// A platform user name such as `alice` or `alice@example.com`.
///
/// Invariant: 1 to [`MAX_LEN`] bytes, with no control characters and no
/// whitespace (as [`char::is_control`] and [`char::is_whitespace`] say).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

/// Why a string is not a user name. Positions count characters from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserNameError {
    /// The name is empty.
    #[error("the user name is empty")]
    Empty,
    /// The name is longer than [`MAX_LEN`] bytes.
    #[error("the user name is {len} bytes long; the limit is {MAX_LEN}")]
    TooLong {
        /// The length in bytes.
        len: usize,
    },
    /// The name contains a control character such as a newline or escape.
    #[error("the user name contains a control character at position {index}")]
    ControlCharacter {
        /// The position of the first control character, in characters.
        index: usize,
    },
    /// The name contains a space, tab or other whitespace.
    #[error("the user name contains whitespace at position {index}")]
    Whitespace {
        /// The position of the first whitespace, in characters.
        index: usize,
    },
}

impl UserName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks `name` against the rules; shared by both ways of parsing.
    fn check(name: &str) -> Result<(), UserNameError> {
        if name.is_empty() {
            return Err(UserNameError::Empty);
        }
        if name.len() > MAX_LEN {
            return Err(UserNameError::TooLong { len: name.len() });
        }
        for (index, character) in name.chars().enumerate() {
            // Control before whitespace: a newline is both, and "control
            // character" is the more alarming and more accurate complaint.
            if character.is_control() {
                return Err(UserNameError::ControlCharacter { index });
            }
            if character.is_whitespace() {
                return Err(UserNameError::Whitespace { index });
            }
        }
        Ok(())
    }
}

impl FromStr for UserName {
    type Err = UserNameError;

    /// Checks the rules above. No trimming or case folding: the platform
    /// decides whether `Alice` and `alice` are the same person.
    fn from_str(s: &str) -> Result<UserName, UserNameError> {
        UserName::check(s)?;
        Ok(UserName(s.to_owned()))
    }
}

impl TryFrom<String> for UserName {
    type Error = UserNameError;

    /// Like [`FromStr`], but reuses the string's allocation.
    fn try_from(s: String) -> Result<UserName, UserNameError> {
        UserName::check(&s)?;
        Ok(UserName(s))
    }
}

impl AsRef<str> for UserName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for UserName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<UserName, D::Error> {
        let text = String::deserialize(deserializer)?;
        UserName::try_from(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<UserName, UserNameError> {
        s.parse()
    }

    #[test]
    fn accepts_plain_and_email_style_names() {
        for name in ["alice", "alice@example.com", "a", "Zoë", "o'brien", "x/y:z"] {
            assert_eq!(parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(parse(""), Err(UserNameError::Empty));
    }

    #[test]
    fn limits_bytes_not_characters() {
        assert!(parse(&"a".repeat(MAX_LEN)).is_ok());
        assert_eq!(
            parse(&"a".repeat(MAX_LEN + 1)),
            Err(UserNameError::TooLong { len: MAX_LEN + 1 })
        );
        // 64 two-byte characters fit; 65 do not.
        assert!(parse(&"é".repeat(64)).is_ok());
        assert_eq!(
            parse(&"é".repeat(65)),
            Err(UserNameError::TooLong { len: 130 })
        );
    }

    #[test]
    fn rejects_control_characters_with_their_position() {
        assert_eq!(
            parse("al\u{1b}[31mice"),
            Err(UserNameError::ControlCharacter { index: 2 })
        );
        assert_eq!(
            parse("é\0"),
            Err(UserNameError::ControlCharacter { index: 1 })
        );
        // A newline is both; it is reported as a control character.
        assert_eq!(
            parse("alice\n"),
            Err(UserNameError::ControlCharacter { index: 5 })
        );
    }

    #[test]
    fn rejects_whitespace_with_its_position() {
        assert_eq!(parse("al ice"), Err(UserNameError::Whitespace { index: 2 }));
        assert_eq!(
            parse("alice\u{a0}"),
            Err(UserNameError::Whitespace { index: 5 })
        );
        assert!(parse("a b").unwrap_err().to_string().contains("position 1"));
    }

    #[test]
    fn serde_uses_the_string_form_and_validates() {
        let name = parse("alice@example.com").unwrap();
        let json = serde_json::to_string(&name).unwrap();
        assert_eq!(json, r#""alice@example.com""#);
        assert_eq!(serde_json::from_str::<UserName>(&json).unwrap(), name);
        assert!(serde_json::from_str::<UserName>(r#""""#).is_err());
        assert!(serde_json::from_str::<UserName>(r#""a\nb""#).is_err());
    }

    /// Names that follow the rules, generated without using them.
    fn valid_name() -> impl Strategy<Value = String> {
        "[^\\s\\p{Cc}]{1,32}"
    }

    proptest! {
        #[test]
        fn accepts_every_valid_name(name in valid_name()) {
            let parsed = parse(&name).unwrap();
            prop_assert_eq!(parsed.as_str(), name.as_str());
            prop_assert_eq!(parsed.to_string(), name);
        }

        #[test]
        fn whatever_it_accepts_follows_the_rules(s in ".{0,40}") {
            if let Ok(name) = parse(&s) {
                prop_assert!(!s.is_empty() && s.len() <= MAX_LEN);
                prop_assert!(!s.chars().any(|c| c.is_control() || c.is_whitespace()));
                prop_assert_eq!(name.as_str(), s.as_str());
            }
        }
    }
}
