//! The SSH login a user types, `ssh alice@01ac8894@gateway`: which platform
//! user wants which Studio session.
//!
//! OpenSSH sends everything before the host's `@` as the SSH user name, so
//! the gateway receives `alice@01ac8894` and must split it into a
//! [`UserName`] and a [`SessionId`]. User names may themselves contain `@`
//! (`alice@example.com`), session ids never do, so the split is at the
//! *last* `@`.
//!
//! This is the first untrusted text the gateway parses, before any
//! authentication, so the checks run cheapest and most general first and
//! each failure is a distinct [`LoginError`] that tells the user how to fix
//! the command line:
//!
//! 1. at most 256 bytes ([`LoginError::TooLong`]);
//! 2. no control characters anywhere ([`LoginError::ControlCharacter`]);
//! 3. an `@` somewhere ([`LoginError::MissingSessionSeparator`]);
//! 4. something before it ([`LoginError::EmptyUser`]);
//! 5. a valid session id after it ([`LoginError::BadSessionId`]);
//! 6. a valid user name before it ([`LoginError::BadUser`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::session_id::{SessionId, SessionIdError};
use crate::user::{UserName, UserNameError};

/// The longest login we look at, in bytes. Longer than any valid login
/// (128-byte user, `@`, 8-character id) with room to spare, so the limit
/// only stops abuse and never a real user.
pub const MAX_LEN: usize = 256;

/// A parsed SSH login: `user@session`.
///
/// Every pair of a valid user name and a valid session id is a valid login,
/// so the fields are public.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Login {
    /// Who is logging in: everything before the last `@`.
    pub user: UserName,
    /// Which Studio session they want: everything after the last `@`.
    pub session: SessionId,
}

/// Why an SSH login is malformed, in the order the checks run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The login is longer than [`MAX_LEN`] bytes.
    #[error("the login is {len} bytes long; the limit is {MAX_LEN}")]
    TooLong {
        /// The length in bytes.
        len: usize,
    },
    /// The login contains a control character such as a newline or escape.
    #[error("the login contains a control character")]
    ControlCharacter,
    /// There is no `@`, so no session id.
    #[error("the login has no session id; log in as user@sessionid, for example alice@01ac8894")]
    MissingSessionSeparator,
    /// Nothing comes before the last `@`.
    #[error("the login has no user name before the '@'; log in as user@sessionid")]
    EmptyUser,
    /// What follows the last `@` is not a session id.
    #[error("the session id after the last '@' is invalid: {0}")]
    BadSessionId(SessionIdError),
    /// What precedes the last `@` is not a user name.
    #[error("the user name before the last '@' is invalid: {0}")]
    BadUser(UserNameError),
}

impl Login {
    /// The login of `user` for `session`.
    pub fn new(user: UserName, session: SessionId) -> Login {
        Login { user, session }
    }
}

impl FromStr for Login {
    type Err = LoginError;

    /// Splits `user@session` at the last `@` and checks both halves.
    fn from_str(s: &str) -> Result<Login, LoginError> {
        if s.len() > MAX_LEN {
            return Err(LoginError::TooLong { len: s.len() });
        }
        if s.chars().any(char::is_control) {
            return Err(LoginError::ControlCharacter);
        }
        let (user, session) = s
            .rsplit_once('@')
            .ok_or(LoginError::MissingSessionSeparator)?;
        if user.is_empty() {
            return Err(LoginError::EmptyUser);
        }
        let session = session.parse().map_err(LoginError::BadSessionId)?;
        let user = user.parse().map_err(LoginError::BadUser)?;
        Ok(Login { user, session })
    }
}

impl fmt::Display for Login {
    /// `user@session`, the form [`FromStr`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.session)
    }
}

impl Serialize for Login {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Login {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Login, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<Login, LoginError> {
        s.parse()
    }

    #[test]
    fn splits_user_and_session() {
        let login = parse("alice@01ac8894").unwrap();
        assert_eq!(login.user.as_str(), "alice");
        assert_eq!(login.session.to_string(), "01ac8894");
        assert_eq!(login.to_string(), "alice@01ac8894");
    }

    #[test]
    fn splits_at_the_last_at_sign() {
        let login = parse("alice@example.com@01ac8894").unwrap();
        assert_eq!(login.user.as_str(), "alice@example.com");
        assert_eq!(login.session.to_string(), "01ac8894");
        assert_eq!(login.to_string(), "alice@example.com@01ac8894");
    }

    #[test]
    fn too_long_is_checked_first() {
        let long = format!("{}@01ac8894\n", "a".repeat(MAX_LEN));
        assert_eq!(parse(&long), Err(LoginError::TooLong { len: long.len() }));
        // Exactly at the limit is not "too long"; it fails later instead.
        let at_limit = format!("{}@01ac8894", "a".repeat(MAX_LEN - 9));
        assert_eq!(at_limit.len(), MAX_LEN);
        assert!(matches!(parse(&at_limit), Err(LoginError::BadUser(_))));
    }

    #[test]
    fn control_characters_anywhere_are_checked_before_the_split() {
        for input in [
            "alice\n",
            "\u{1b}[2J",
            "alice@01ac889\r",
            "al\u{0}ice@01ac8894",
        ] {
            assert_eq!(parse(input), Err(LoginError::ControlCharacter), "{input:?}");
        }
    }

    #[test]
    fn missing_at_sign_hints_the_expected_form() {
        let err = parse("alice").unwrap_err();
        assert_eq!(err, LoginError::MissingSessionSeparator);
        assert!(err.to_string().contains("user@sessionid"), "{err}");
        assert_eq!(parse(""), Err(LoginError::MissingSessionSeparator));
    }

    #[test]
    fn empty_user() {
        assert_eq!(parse("@01ac8894"), Err(LoginError::EmptyUser));
        // The session id is not even looked at.
        assert_eq!(parse("@nonsense"), Err(LoginError::EmptyUser));
    }

    #[test]
    fn bad_session_id_carries_the_reason() {
        assert_eq!(
            parse("alice@"),
            Err(LoginError::BadSessionId(SessionIdError::WrongLength {
                len: 0
            }))
        );
        let err = parse("alice@01AC8894").unwrap_err();
        assert!(matches!(
            err,
            LoginError::BadSessionId(SessionIdError::Uppercase { .. })
        ));
        assert!(err.to_string().contains("use lowercase"), "{err}");
        // A user who forgot the session and typed an e-mail address.
        assert!(matches!(
            parse("alice@example.com"),
            Err(LoginError::BadSessionId(SessionIdError::WrongLength {
                len: 11
            }))
        ));
    }

    #[test]
    fn session_id_is_checked_before_the_user() {
        assert!(matches!(
            parse("al ice@xyz"),
            Err(LoginError::BadSessionId(_))
        ));
    }

    #[test]
    fn bad_user_carries_the_reason() {
        assert_eq!(
            parse("al ice@01ac8894"),
            Err(LoginError::BadUser(UserNameError::Whitespace { index: 2 }))
        );
        let long_user = format!("{}@01ac8894", "a".repeat(200));
        assert_eq!(
            parse(&long_user),
            Err(LoginError::BadUser(UserNameError::TooLong { len: 200 }))
        );
    }

    #[test]
    fn serde_uses_the_string_form_and_validates() {
        let login = parse("alice@example.com@01ac8894").unwrap();
        let json = serde_json::to_string(&login).unwrap();
        assert_eq!(json, r#""alice@example.com@01ac8894""#);
        assert_eq!(serde_json::from_str::<Login>(&json).unwrap(), login);
        assert!(serde_json::from_str::<Login>(r#""alice""#).is_err());
    }

    fn valid_user() -> impl Strategy<Value = String> {
        "[^\\s\\p{Cc}]{1,32}"
    }

    fn valid_session() -> impl Strategy<Value = String> {
        "[0-9a-f]{8}"
    }

    /// Strings near the valid form, to reach the deeper checks often.
    fn almost_logins() -> impl Strategy<Value = String> {
        "[a-zA-Z@. \t\n\u{1b}é]{0,12}@[0-9a-fA-FgG@ ]{6,10}"
    }

    proptest! {
        #[test]
        fn never_panics_on_strings(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_lossy_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn valid_parts_round_trip(user in valid_user(), session in valid_session()) {
            let login = parse(&format!("{user}@{session}")).unwrap();
            prop_assert_eq!(login.user.as_str(), user.as_str());
            prop_assert_eq!(login.session.to_string(), session);
        }

        #[test]
        fn display_of_parse_is_the_input(user in valid_user(), session in valid_session()) {
            let input = format!("{user}@{session}");
            prop_assert_eq!(parse(&input).unwrap().to_string(), input);
        }

        #[test]
        fn whatever_parses_displays_as_the_input(s in almost_logins()) {
            if let Ok(login) = parse(&s) {
                prop_assert_eq!(login.to_string(), s);
            }
        }
    }
}
