//! Login parsing: the first untrusted text the gateway reads, before any
//! authentication, on every connection (`model::Login::from_str`).
//!
//! Inputs are typical logins, the longest valid one, inputs at and past the
//! 256-byte limit, and the malformed shapes users actually type. Each
//! malformed input stops at a different check, so their times show what
//! each check costs.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use model::Login;

/// `(name, input, whether it parses)`.
fn inputs() -> Vec<(&'static str, String, bool)> {
    // The longest valid user name is 128 bytes (`model::user::MAX_LEN`).
    let max_user = "a".repeat(model::user::MAX_LEN);
    vec![
        ("typical", "alice@01ac8894".to_owned(), true),
        (
            "email_user",
            "alice.smith@example.com@01ac8894".to_owned(),
            true,
        ),
        // 137 bytes: the longest login that can succeed.
        ("longest_valid", format!("{max_user}@01ac8894"), true),
        // Exactly 256 bytes: passes the length and control-character scans
        // over the whole input, then fails on the user name's length.
        (
            "at_limit_256",
            format!("{}@01ac8894", "a".repeat(model::login::MAX_LEN - 9)),
            false,
        ),
        // 257 bytes: refused by the first check, without reading the text.
        (
            "too_long_257",
            format!("{}@01ac8894", "a".repeat(model::login::MAX_LEN - 8)),
            false,
        ),
        ("no_separator", "alice".to_owned(), false),
        ("control_char", "alice@01ac8894\r".to_owned(), false),
        ("bad_session_id", "alice@01AC8894".to_owned(), false),
        ("email_no_session", "alice@example.com".to_owned(), false),
    ]
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("login_parse");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    for (name, input, valid) in inputs() {
        assert_eq!(input.parse::<Login>().is_ok(), valid, "{name}: {input:?}");
        group.bench_with_input(BenchmarkId::from_parameter(name), &input, |b, input| {
            b.iter(|| black_box(input.as_str()).parse::<Login>())
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
