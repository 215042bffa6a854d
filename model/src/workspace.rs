//! The id of a platform workspace, the unit that owns Studios and decides who
//! may reach them.
//!
//! The platform API sends it as a JSON number (`"workspaceId":12345`), so
//! serde reads and writes a number, never a string. People and programs also
//! pass it as text (command lines, environment variables, URLs); for those,
//! [`FromStr`] accepts plain decimal digits and nothing else. It is stricter
//! than [`u64::from_str`], which also takes a leading `+`: an id written with
//! a sign or spaces is more likely a mistake than an id. Leading zeros are
//! accepted (`007` is workspace 7), as a number parser would.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A platform workspace id, a plain `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkspaceId(u64);

/// Why a string is not a workspace id. Each variant that has input keeps it,
/// so the message names what was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceIdError {
    /// Nothing was given.
    #[error("a workspace id is a decimal number, but the input is empty")]
    Empty,
    /// Something other than the digits 0-9 was given.
    #[error("workspace id {input:?} is not a decimal number (only digits 0-9, no sign or spaces)")]
    NotDecimal {
        /// The input as given, shown escaped in the message.
        input: String,
    },
    /// The digits are fine but the number does not fit in 64 bits.
    #[error("workspace id {input:?} is too large (the largest is {})", u64::MAX)]
    Overflow {
        /// The input as given.
        input: String,
    },
}

impl WorkspaceId {
    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for WorkspaceId {
    /// Every `u64` is a workspace id; the platform decides which exist.
    fn from(value: u64) -> WorkspaceId {
        WorkspaceId(value)
    }
}

impl FromStr for WorkspaceId {
    type Err = WorkspaceIdError;

    /// Parses decimal digits only: no sign, no spaces, not empty.
    fn from_str(s: &str) -> Result<WorkspaceId, WorkspaceIdError> {
        if s.is_empty() {
            return Err(WorkspaceIdError::Empty);
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(WorkspaceIdError::NotDecimal {
                input: s.to_owned(),
            });
        }
        // Only digits are left, so the one way left to fail is overflow.
        s.parse::<u64>()
            .map(WorkspaceId)
            .map_err(|_| WorkspaceIdError::Overflow {
                input: s.to_owned(),
            })
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<WorkspaceId, WorkspaceIdError> {
        s.parse()
    }

    #[test]
    fn parses_decimal() {
        assert_eq!(parse("12345"), Ok(WorkspaceId::from(12345)));
        assert_eq!(parse("0").map(WorkspaceId::get), Ok(0));
        assert_eq!(parse("007").map(WorkspaceId::get), Ok(7));
        assert_eq!(
            parse("18446744073709551615").map(WorkspaceId::get),
            Ok(u64::MAX)
        );
        assert_eq!(WorkspaceId::from(12345).to_string(), "12345");
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(parse(""), Err(WorkspaceIdError::Empty));
    }

    #[test]
    fn rejects_signs_spaces_and_other_characters_naming_the_input() {
        for input in ["+1", "-1", " 1", "1 ", "1\n", "1_000", "0x10", "1.0", "١٢"] {
            let err = parse(input).unwrap_err();
            assert_eq!(
                err,
                WorkspaceIdError::NotDecimal {
                    input: input.to_owned()
                }
            );
            assert!(err.to_string().contains(&format!("{input:?}")), "{err}");
        }
    }

    #[test]
    fn rejects_overflow_naming_the_input() {
        let input = "18446744073709551616";
        let err = parse(input).unwrap_err();
        assert_eq!(
            err,
            WorkspaceIdError::Overflow {
                input: input.to_owned()
            }
        );
        assert!(err.to_string().contains(input), "{err}");
    }

    #[test]
    fn serde_uses_a_json_number() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            workspace_id: WorkspaceId,
        }
        let body = Body {
            workspace_id: WorkspaceId::from(12345),
        };
        let json = r#"{"workspaceId":12345}"#;
        assert_eq!(serde_json::to_string(&body).unwrap(), json);
        assert_eq!(serde_json::from_str::<Body>(json).unwrap(), body);
        assert!(serde_json::from_str::<Body>(r#"{"workspaceId":"12345"}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"workspaceId":-1}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"workspaceId":1.5}"#).is_err());
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(n in any::<u64>()) {
            let id = WorkspaceId::from(n);
            prop_assert_eq!(parse(&id.to_string()), Ok(id));
        }

        #[test]
        fn agrees_with_u64_on_digit_strings(s in "[0-9]{1,25}") {
            prop_assert_eq!(parse(&s).ok().map(WorkspaceId::get), s.parse::<u64>().ok());
        }

        #[test]
        fn accepts_only_digits(s in ".{0,24}") {
            if parse(&s).is_ok() {
                prop_assert!(!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }
}
