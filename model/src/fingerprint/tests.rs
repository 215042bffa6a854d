//! Fingerprint tests, including byte-identity with the real `ssh-keygen`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::*;

/// A key made once with `ssh-keygen -t ed25519 -C "test key"`, and the
/// fingerprint `ssh-keygen -lf` printed for it.
const ED25519_LINE: &str = "ssh-ed25519 \
    AAAAC3NzaC1lZDI1NTE5AAAAIEnsBq02rzUMndLCrnuER1F9ZuRMxWVFSvfDodxEsXwt test key\n";
const ED25519_FINGERPRINT: &str = "SHA256:Usp026a/6YXYwGertDiDHxv834Xqf2gb/MYFKk3d/G0";

fn parse(s: &str) -> Result<Fingerprint, FingerprintError> {
    s.parse()
}

#[test]
fn fingerprints_a_known_key_line() {
    let fp = Fingerprint::of_public_key_line(ED25519_LINE).unwrap();
    assert_eq!(fp.to_string(), ED25519_FINGERPRINT);
    assert_eq!(parse(ED25519_FINGERPRINT), Ok(fp));
    assert_eq!(
        format!("{fp:?}"),
        format!("Fingerprint({ED25519_FINGERPRINT})")
    );
}

#[test]
fn comment_and_surrounding_whitespace_do_not_matter() {
    let bare = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEnsBq02rzUMndLCrnuER1F9ZuRMxWVFSvfDodxEsXwt";
    let expected = parse(ED25519_FINGERPRINT).unwrap();
    for line in [
        bare.to_owned(),
        format!("  {bare}\t\r\n"),
        format!("{bare} someone@host with spaces"),
    ] {
        assert_eq!(
            Fingerprint::of_public_key_line(&line),
            Ok(expected),
            "{line:?}"
        );
    }
}

#[test]
fn of_key_blob_is_sha256_of_the_blob() {
    // SHA-256 of nothing, a well-known digest.
    assert_eq!(
        Fingerprint::of_key_blob(b"").to_string(),
        "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
    );
    assert_eq!(
        Fingerprint::of_key_blob(b"").as_bytes()[..4],
        [0xe3, 0xb0, 0xc4, 0x42]
    );
}

#[test]
fn parse_errors_name_the_problem() {
    assert_eq!(parse(""), Err(FingerprintError::MissingPrefix));
    assert_eq!(
        parse("Usp026a/6YXYwGertDiDHxv834Xqf2gb/MYFKk3d/G0"),
        Err(FingerprintError::MissingPrefix)
    );
    assert_eq!(
        parse("sha256:Usp026a/6YXYwGertDiDHxv834Xqf2gb/MYFKk3d/G0"),
        Err(FingerprintError::MissingPrefix)
    );
    let md5 = parse("MD5:32:a0:31:b8:96:9a:02:5b:d8:c6:de:45:28:5f:9d:87").unwrap_err();
    assert_eq!(md5, FingerprintError::Md5NotSupported);
    assert!(md5.to_string().contains("MD5"), "{md5}");
    assert!(matches!(
        parse("SHA256:Usp026a/6YXYwGertDiDHxv834Xqf2gb/MYFKk3d/G!"),
        Err(FingerprintError::BadBase64(_))
    ));
    assert!(matches!(
        parse("SHA256: Usp026a/6YXYwGertDiDHxv834Xqf2gb/MYFKk3d/G0"),
        Err(FingerprintError::BadBase64(_))
    ));
    // Non-canonical last character (trailing bits set) is refused, so each
    // fingerprint has exactly one unpadded spelling.
    assert!(matches!(
        parse("SHA256:Usp026a/6YXYwGertDiDHxv834Xqf2gb/MYFKk3d/G1"),
        Err(FingerprintError::BadBase64(_))
    ));
    assert_eq!(
        parse("SHA256:"),
        Err(FingerprintError::WrongLength { len: 0 })
    );
    assert_eq!(
        parse("SHA256:AAAA"),
        Err(FingerprintError::WrongLength { len: 3 })
    );
}

#[test]
fn padding_is_tolerated_and_dropped() {
    let padded = format!("{ED25519_FINGERPRINT}=");
    assert_eq!(parse(&padded), parse(ED25519_FINGERPRINT));
    assert_eq!(parse(&padded).unwrap().to_string(), ED25519_FINGERPRINT);
}

#[test]
fn key_line_errors_name_the_problem() {
    use FingerprintError::*;
    assert_eq!(Fingerprint::of_public_key_line(""), Err(EmptyKeyLine));
    assert_eq!(Fingerprint::of_public_key_line(" \n"), Err(EmptyKeyLine));
    assert_eq!(
        Fingerprint::of_public_key_line("ssh-ed25519"),
        Err(MissingKeyBlob)
    );
    assert!(matches!(
        Fingerprint::of_public_key_line("ssh-ed25519 not*base64"),
        Err(BadKeyBlobBase64(_))
    ));
    // authorized_keys options in front of the key type are not supported.
    assert!(matches!(
        Fingerprint::of_public_key_line(&format!("no-pty {ED25519_LINE}")),
        Err(BadKeyBlobBase64(_))
    ));
    // Four zero bytes: an empty key type, which is not "ssh-ed25519".
    assert_eq!(
        Fingerprint::of_public_key_line("ssh-ed25519 AAAAAA=="),
        Err(KeyTypeMismatch {
            line: "ssh-ed25519".to_owned(),
            blob: String::new(),
        })
    );
    assert_eq!(
        Fingerprint::of_public_key_line("ssh-ed25519 AAA="),
        Err(TruncatedKeyBlob)
    );
    // A length prefix promising more bytes than there are.
    assert_eq!(
        Fingerprint::of_public_key_line("ssh-ed25519 AAAAC3Nz"),
        Err(TruncatedKeyBlob)
    );
    let err =
        Fingerprint::of_public_key_line(&ED25519_LINE.replacen("ed25519", "rsa", 1)).unwrap_err();
    assert_eq!(
        err,
        KeyTypeMismatch {
            line: "ssh-rsa".to_owned(),
            blob: "ssh-ed25519".to_owned(),
        }
    );
    assert!(err.to_string().contains("\"ssh-ed25519\""), "{err}");
}

#[test]
fn serde_uses_the_string_form_and_validates() {
    let fp = parse(ED25519_FINGERPRINT).unwrap();
    let json = serde_json::to_string(&fp).unwrap();
    assert_eq!(json, format!("\"{ED25519_FINGERPRINT}\""));
    assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), fp);
    assert!(serde_json::from_str::<Fingerprint>(r#""MD5:32:a0""#).is_err());
}

/// A fresh directory under the system temp dir, removed when dropped (even
/// when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "connect-model-fingerprint-{}-{n}",
            std::process::id()
        ));
        // A leftover from an earlier process that had the same id.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `ssh-keygen` and returns its standard output, failing the test on
/// any error: a missing `ssh-keygen` must not make the test pass.
fn ssh_keygen(args: &[&str]) -> String {
    let output = Command::new("ssh-keygen")
        .args(args)
        .output()
        .expect("ssh-keygen must be installed to run this test");
    assert!(
        output.status.success(),
        "ssh-keygen {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn matches_ssh_keygen_byte_for_byte() {
    let dir = TempDir::new();
    let kinds: [&[&str]; 4] = [
        &["-t", "ed25519"],
        &["-t", "ecdsa"],
        &["-t", "rsa", "-b", "2048"],
        &["-t", "ed25519", "-C", "comment with spaces"],
    ];
    for (i, kind) in kinds.iter().enumerate() {
        let key = dir.path().join(format!("k{i}"));
        let key = key.to_str().unwrap();
        let mut args = kind.to_vec();
        args.extend(["-N", "", "-f", key, "-q"]);
        ssh_keygen(&args);

        // "256 SHA256:... comment (ED25519)": the second field.
        let pub_path = format!("{key}.pub");
        let listed = ssh_keygen(&["-lf", &pub_path]);
        let expected = listed.split_whitespace().nth(1).unwrap();

        let line = std::fs::read_to_string(&pub_path).unwrap();
        let fp = Fingerprint::of_public_key_line(&line).unwrap();
        assert_eq!(fp.to_string(), expected, "{kind:?}: {line}");
        assert_eq!(parse(expected), Ok(fp), "{kind:?}");
    }
}

proptest! {
    #[test]
    fn display_then_parse_round_trips(bytes in any::<[u8; 32]>()) {
        let fp = Fingerprint(bytes);
        let text = fp.to_string();
        prop_assert!(text.starts_with(PREFIX));
        prop_assert_eq!(text.len(), PREFIX.len() + 43);
        prop_assert_eq!(parse(&text), Ok(fp));
        prop_assert_eq!(fp.as_bytes(), &bytes);
    }

    #[test]
    fn parse_never_panics(s in any::<String>()) {
        let _ = parse(&s);
        let _ = parse(&format!("SHA256:{s}"));
    }

    #[test]
    fn key_line_never_panics(s in any::<String>(), blob in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Fingerprint::of_public_key_line(&s);
        let line = format!("ssh-ed25519 {}", STANDARD_NO_PAD.encode(&blob));
        let _ = Fingerprint::of_public_key_line(&line);
    }
}
