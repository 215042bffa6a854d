//! Which `env` requests a session may apply, as sshd's `AcceptEnv`: a list
//! of names, each either exact (`TERM`) or a prefix ending in `*`
//! (`LC_*`). Everything else is refused with a failure reply, so the
//! client can tell (`ssh -v` prints it) and a process never starts with a
//! client-chosen `LD_PRELOAD`, `PATH` or `SSH_AUTH_SOCK`.

use std::fmt;
use std::str::FromStr;

/// The default list: the locale and the terminal, which is what OpenSSH's
/// `SendEnv` sends in Debian's and Fedora's default `ssh_config`.
pub const DEFAULT: &str = "LANG,LC_*,TERM,COLORTERM";

/// One accepted name or prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

/// The accepted names. Invariant: no pattern is empty, and only a trailing
/// `*` is special.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptEnv(Vec<Pattern>);

impl AcceptEnv {
    /// Whether a variable called `name` may be set by the client.
    pub fn allows(&self, name: &str) -> bool {
        self.0.iter().any(|p| match p {
            Pattern::Exact(n) => n == name,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        })
    }
}

impl Default for AcceptEnv {
    fn default() -> Self {
        DEFAULT.parse().unwrap_or(Self(Vec::new()))
    }
}

/// Why a list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a variable name or a NAME_* prefix (letters, digits and _, optionally ending in *)"
)]
pub struct BadPattern(String);

impl FromStr for AcceptEnv {
    type Err = BadPattern;

    /// Comma- or space-separated; an empty list accepts nothing.
    fn from_str(list: &str) -> Result<Self, BadPattern> {
        let mut patterns = Vec::new();
        for item in list
            .split([',', ' '])
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            let (name, prefix) = match item.strip_suffix('*') {
                Some(p) => (p, true),
                None => (item, false),
            };
            let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid || (name.is_empty() && !prefix) {
                return Err(BadPattern(item.to_owned()));
            }
            patterns.push(if prefix {
                Pattern::Prefix(name.to_owned())
            } else {
                Pattern::Exact(name.to_owned())
            });
        }
        Ok(Self(patterns))
    }
}

impl fmt::Display for AcceptEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|p| match p {
                Pattern::Exact(n) => n.clone(),
                Pattern::Prefix(p) => format!("{p}*"),
            })
            .collect();
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_locale_and_terminal() {
        let a = AcceptEnv::default();
        for ok in ["LANG", "LC_ALL", "LC_CTYPE", "TERM", "COLORTERM"] {
            assert!(a.allows(ok), "{ok}");
        }
        for no in [
            "LD_PRELOAD",
            "PATH",
            "SSH_AUTH_SOCK",
            "LANGUAGE",
            "TERMINFO",
            "lang",
        ] {
            assert!(!a.allows(no), "{no}");
        }
        assert_eq!(a.to_string(), DEFAULT);
    }

    #[test]
    fn parses_lists_and_refuses_odd_patterns() {
        let a: AcceptEnv = "GIT_*, EDITOR".parse().expect("valid");
        assert!(a.allows("GIT_AUTHOR_NAME") && a.allows("EDITOR") && !a.allows("LANG"));
        let none: AcceptEnv = "".parse().expect("valid");
        assert!(!none.allows("LANG"));
        let all: AcceptEnv = "*".parse().expect("valid");
        assert!(all.allows("LD_PRELOAD"));
        for bad in ["LC_*X", "A=B", "*_X", "$HOME"] {
            assert!(bad.parse::<AcceptEnv>().is_err(), "{bad}");
        }
    }
}
