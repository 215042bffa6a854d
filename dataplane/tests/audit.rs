//! ssh-audit (https://github.com/jtesta/ssh-audit) against the real proxy:
//! what a security scanner says about the algorithms it offers, held to the
//! pass rule in `testkit::audit` (nothing "fail", the only "warn" the
//! post-quantum note on the classic curve25519 exchanges, kept for clients
//! older than OpenSSH 9.9; mlkem768x25519-sha256 is offered first).
//!
//! ssh-audit comes from the venv `.ci/run` makes. Its connection-rate
//! (DHEat) test is skipped: ssh-audit runs it only against finite-field
//! Diffie-Hellman, which the proxy does not offer, so it would pass without
//! measuring anything; `preauth.rs` checks the rate of key exchanges one
//! address can get (about one a second past the penalty threshold).

use testkit::{Platform, audit};

#[test]
fn ssh_audit_rates_nothing_fail_and_warns_only_about_classic_kex() {
    let p = Platform::start();
    let report = audit::ssh_audit(p.ssh_port());

    let problems = audit::problems(&report);
    // What it says about the MAC the proxy lists only so that paramiko
    // negotiates (every cipher offered is AEAD), and its notes: shown with
    // --nocapture.
    for entry in report["mac"].as_array().into_iter().flatten() {
        eprintln!(
            "ssh-audit on mac {}: {}",
            entry["algorithm"], entry["notes"]
        );
    }
    for note in report["additional_notes"].as_array().into_iter().flatten() {
        eprintln!("ssh-audit note: {note}");
    }
    assert!(
        problems.is_empty(),
        "ssh-audit found problems:\n  {}\nfull report:\n{}",
        problems.join("\n  "),
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
}
