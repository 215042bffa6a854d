//! The id of one Studio session, as users type it after the `@` of their SSH
//! login: exactly 8 lowercase hex characters, such as `01ac8894`.
//!
//! The id arrives from untrusted input (the SSH user name), so parsing is
//! strict and each error names what is wrong in words a user can act on:
//! the wrong length, an uppercase letter (the id is case-sensitive on the
//! Studio side, so we do not silently lowercase it), or a character that is
//! not hex at all.
//!
//! Eight hex characters are exactly 32 bits, so the id is stored as a `u32`.
//! Every `u32` is a valid id and the type has no invalid states; ordering the
//! numbers orders the zero-padded hex strings the same way.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The number of hex characters in a session id.
const LEN: usize = 8;

/// A Studio session id: 8 lowercase hex characters such as `01ac8894`.
///
/// Parse it with [`str::parse`]; [`Display`](fmt::Display) gives back the
/// same 8 characters. Serialized as that string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u32);

/// Why a string is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionIdError {
    /// The input does not have exactly 8 characters.
    #[error("a session id is exactly 8 hex characters (like 01ac8894), but this one has {len}")]
    WrongLength {
        /// The number of characters (not bytes) in the input.
        len: usize,
    },
    /// A hex digit was written in uppercase.
    #[error(
        "session ids are lowercase: found uppercase {character:?} at position {index}; \
         use lowercase hex"
    )]
    Uppercase {
        /// The offending character, `A` to `F`.
        character: char,
        /// Its position in characters, counting from 0.
        index: usize,
    },
    /// A character is not a hex digit at all.
    #[error(
        "a session id is 8 hex characters (0-9, a-f), but {character:?} at position {index} \
         is not hex"
    )]
    NotHex {
        /// The offending character, shown escaped in the message.
        character: char,
        /// Its position in characters, counting from 0.
        index: usize,
    },
}

impl SessionId {
    /// The id whose 8 hex characters spell `value`, zero-padded.
    ///
    /// This is how a new id is made from 32 random bits.
    pub const fn from_u32(value: u32) -> SessionId {
        SessionId(value)
    }

    /// The 32 bits this id spells.
    pub const fn to_u32(self) -> u32 {
        self.0
    }
}

impl FromStr for SessionId {
    type Err = SessionIdError;

    /// Parses exactly 8 lowercase hex characters. No trimming, no `0x`.
    fn from_str(s: &str) -> Result<SessionId, SessionIdError> {
        let len = s.chars().count();
        if len != LEN {
            return Err(SessionIdError::WrongLength { len });
        }
        let mut value = 0u32;
        for (index, character) in s.chars().enumerate() {
            let digit = match character {
                '0'..='9' => u32::from(character) - u32::from('0'),
                'a'..='f' => u32::from(character) - u32::from('a') + 10,
                'A'..='F' => return Err(SessionIdError::Uppercase { character, index }),
                _ => return Err(SessionIdError::NotHex { character, index }),
            };
            // Cannot overflow: exactly 8 digits of 4 bits each.
            value = (value << 4) | digit;
        }
        Ok(SessionId(value))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// Shows the id as users write it, not as a number.
impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SessionId, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<SessionId, SessionIdError> {
        s.parse()
    }

    #[test]
    fn parses_lowercase_hex() {
        let id = parse("01ac8894").unwrap();
        assert_eq!(id.to_u32(), 0x01ac_8894);
        assert_eq!(id.to_string(), "01ac8894");
        assert_eq!(format!("{id:?}"), "SessionId(01ac8894)");
    }

    #[test]
    fn keeps_leading_zeros() {
        assert_eq!(SessionId::from_u32(0).to_string(), "00000000");
        assert_eq!(SessionId::from_u32(0xab).to_string(), "000000ab");
        assert_eq!(parse("000000ab").unwrap(), SessionId::from_u32(0xab));
    }

    #[test]
    fn rejects_wrong_lengths_and_says_the_length() {
        for (input, len) in [("", 0), ("01ac889", 7), ("01ac88945", 9), ("01ac8894\n", 9)] {
            let err = parse(input).unwrap_err();
            assert_eq!(err, SessionIdError::WrongLength { len }, "{input:?}");
            assert!(err.to_string().contains(&format!("has {len}")), "{err}");
        }
    }

    #[test]
    fn counts_characters_not_bytes() {
        // 8 characters, 9 bytes: the complaint is the non-hex character.
        let err = parse("01ac889é").unwrap_err();
        assert_eq!(
            err,
            SessionIdError::NotHex {
                character: 'é',
                index: 7
            }
        );
    }

    #[test]
    fn rejects_uppercase_and_says_to_use_lowercase() {
        let err = parse("01AC8894").unwrap_err();
        assert_eq!(
            err,
            SessionIdError::Uppercase {
                character: 'A',
                index: 2
            }
        );
        assert!(err.to_string().contains("use lowercase"), "{err}");
    }

    #[test]
    fn rejects_non_hex_and_names_the_character() {
        let err = parse("01ag8894").unwrap_err();
        assert_eq!(
            err,
            SessionIdError::NotHex {
                character: 'g',
                index: 3
            }
        );
        assert!(err.to_string().contains("'g'"), "{err}");
        // Control characters are shown escaped, so the message is safe to log.
        let err = parse("01ac889\u{1b}").unwrap_err();
        assert!(err.to_string().contains(r"'\u{1b}'"), "{err}");
    }

    #[test]
    fn rejects_prefixes_and_signs() {
        assert!(parse("0x01ac88").is_err());
        assert!(parse("+1ac8894").is_err());
        assert!(parse(" 1ac8894").is_err());
    }

    #[test]
    fn orders_like_the_strings() {
        let a = parse("0000000f").unwrap();
        let b = parse("000000f0").unwrap();
        assert!(a < b);
        assert!("0000000f" < "000000f0");
    }

    #[test]
    fn serde_uses_the_string_form_and_validates() {
        let id = parse("01ac8894").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""01ac8894""#);
        assert_eq!(
            serde_json::from_str::<SessionId>(r#""01ac8894""#).unwrap(),
            id
        );
        assert!(serde_json::from_str::<SessionId>(r#""01AC8894""#).is_err());
        assert!(serde_json::from_str::<SessionId>("28084372").is_err());
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(value in any::<u32>()) {
            let id = SessionId::from_u32(value);
            prop_assert_eq!(parse(&id.to_string()), Ok(id));
        }

        #[test]
        fn parse_then_display_round_trips(s in "[0-9a-f]{8}") {
            prop_assert_eq!(parse(&s).unwrap().to_string(), s);
        }

        #[test]
        fn order_matches_string_order(a in "[0-9a-f]{8}", b in "[0-9a-f]{8}") {
            prop_assert_eq!(parse(&a).unwrap().cmp(&parse(&b).unwrap()), a.cmp(&b));
        }

        #[test]
        fn accepts_only_what_it_displays(
            s in prop_oneof![".{0,12}", "[0-9a-fA-Fg]{7,9}"],
        ) {
            if let Ok(id) = parse(&s) {
                prop_assert_eq!(id.to_string(), s);
            }
        }
    }
}
