//! The report maths: percentiles, rates, per-second buckets, the table.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn close(actual: f64, expected: f64, rel: f64) -> bool {
    (actual - expected).abs() <= expected.abs() * rel
}

#[test]
fn recorder_is_shareable_across_tasks() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Recorder>();
}

#[test]
fn percentiles_of_a_known_distribution() {
    let mut h = latency_histogram();
    for n in 1..=1000 {
        record_latency(&mut h, ms(n));
    }
    let l = summarize(&h);
    // 3 significant figures: within 0.1 % (one bucket) of the truth.
    for (name, actual, expected) in [
        ("p50", l.p50, 500.0),
        ("p90", l.p90, 900.0),
        ("p99", l.p99, 990.0),
        ("p99.9", l.p999, 999.0),
        ("min", l.min, 1.0),
        ("max", l.max, 1000.0),
        ("mean", l.mean, 500.5),
    ] {
        assert!(
            close(actual, expected, 0.001),
            "{name}: {actual} vs {expected}"
        );
    }
    assert_eq!(summarize(&latency_histogram()), Latency::default());
}

#[test]
fn out_of_range_latency_is_clamped() {
    let start = Instant::now();
    let rec = Recorder::with_start(start);
    rec.record_at(
        start,
        Event::Ok {
            op: "exec",
            latency: Duration::from_secs(10 * 3600),
        },
    );
    rec.record_at(
        start,
        Event::Ok {
            op: "exec",
            latency: Duration::MAX,
        },
    );
    rec.record_at(
        start,
        Event::Ok {
            op: "exec",
            latency: Duration::ZERO,
        },
    );
    let r = rec.finish_at(start + Duration::from_secs(1), serde_json::Value::Null);
    let exec = &r.ops["exec"];
    assert_eq!(exec.ok, 3);
    assert!(
        close(exec.latency_ms.max, 3_600_000.0, 0.001),
        "{}",
        exec.latency_ms.max
    );
    assert_eq!(exec.latency_ms.min, 0.0);
}

#[test]
fn rates_are_per_second_of_the_run() {
    let start = Instant::now();
    let rec = Recorder::with_start(start);
    for i in 0..50 {
        let at = start + Duration::from_millis(i * 200);
        rec.record_at(
            at,
            Event::Ok {
                op: "connect",
                latency: ms(5),
            },
        );
        rec.record_at(at, Event::Bytes(20));
    }
    rec.record_at(
        start,
        Event::Error {
            op: "connect",
            kind: "timeout",
        },
    );
    let r = rec.finish_at(
        start + Duration::from_secs(10),
        serde_json::json!({"scenario": "connect"}),
    );
    assert_eq!(r.elapsed_s, 10.0);
    let connect = &r.ops["connect"];
    assert_eq!((connect.ok, connect.errors), (50, 1));
    assert_eq!(connect.per_s, 5.0);
    assert_eq!(r.bytes, 1000);
    assert_eq!(r.bytes_per_s, 100.0);
    assert_eq!(per_second(7, 0.0), 0.0);
}

#[test]
fn events_fall_into_the_second_they_happen_in() {
    let start = Instant::now();
    let rec = Recorder::with_start(start);
    let at = |ms: u64| start + Duration::from_millis(ms);
    rec.record_at(
        at(200),
        Event::Ok {
            op: "exec",
            latency: ms(10),
        },
    );
    rec.record_at(
        at(900),
        Event::Ok {
            op: "exec",
            latency: ms(20),
        },
    );
    rec.record_at(at(950), Event::Bytes(7));
    rec.record_at(
        at(999),
        Event::Sample {
            name: "fds",
            value: 10.0,
        },
    );
    rec.record_at(
        at(999),
        Event::Sample {
            name: "fds",
            value: 12.0,
        },
    );
    rec.record_at(
        at(2500),
        Event::Ok {
            op: "connect",
            latency: ms(30),
        },
    );
    rec.record_at(
        at(2600),
        Event::Error {
            op: "exec",
            kind: "timeout",
        },
    );
    let r = rec.finish_at(at(3000), serde_json::Value::Null);

    let t: Vec<f64> = r.timeline.iter().map(|tick| tick.t).collect();
    assert_eq!(t, [1.0, 2.0, 3.0]);
    let [s0, s1, s2] = &r.timeline[..] else {
        unreachable!()
    };
    let exec = &s0.ops["exec"];
    assert_eq!(exec.count, 2);
    assert!(
        close(exec.p50, 10.0, 0.001) && close(exec.p99, 20.0, 0.001),
        "{exec:?}"
    );
    assert_eq!((s0.bytes, s0.errors), (7, 0));
    assert_eq!(s0.samples["fds"], 12.0);
    assert!(s1.ops.is_empty() && s1.samples.is_empty() && s1.bytes == 0);
    assert_eq!(s2.ops.keys().collect::<Vec<_>>(), ["connect"]);
    assert_eq!(s2.errors, 1);
}

#[test]
fn open_sessions_carry_forward_through_quiet_seconds() {
    let start = Instant::now();
    let rec = Recorder::with_start(start);
    let at = |ms: u64| start + Duration::from_millis(ms);
    for _ in 0..3 {
        rec.record_at(at(100), Event::Opened);
    }
    rec.record_at(at(1500), Event::Closed);
    rec.record_at(at(4200), Event::Opened);
    let r = rec.finish_at(at(6500), serde_json::Value::Null);
    let open: Vec<i64> = r.timeline.iter().map(|tick| tick.open).collect();
    assert_eq!(open, [3, 2, 2, 2, 3, 3, 3]);
    // The run ended inside its last second.
    assert_eq!(r.timeline.last().map(|tick| tick.t), Some(6.5));
    assert_eq!(r.peak_open, 3);
}

#[test]
fn progress_reports_the_last_complete_second() {
    let start = Instant::now();
    let rec = Recorder::with_start(start);
    let at = |ms: u64| start + Duration::from_millis(ms);
    for _ in 0..4 {
        rec.record_at(
            at(1100),
            Event::Ok {
                op: "exec",
                latency: ms(40),
            },
        );
    }
    rec.record_at(at(1200), Event::Opened);
    rec.record_at(
        at(1300),
        Event::Error {
            op: "exec",
            kind: "timeout",
        },
    );

    // Second 1 is still live when read at 2.5 s.
    let p = rec.progress_at(at(2500));
    assert_eq!((p.ok, p.errors, p.open, p.ops_per_s), (4, 1, 1, 4.0));
    assert_eq!(p.elapsed, ms(2500));
    let p99 = p.recent_p99.expect("second 1 had completions");
    assert!(close(p99.as_secs_f64(), 0.040, 0.001), "{p99:?}");
    // Second 1 is incomplete at 1.5 s: second 0 had nothing.
    assert_eq!(rec.progress_at(at(1500)).ops_per_s, 0.0);

    // Second 1 sealed by an event in second 2.
    rec.record_at(
        at(2100),
        Event::Ok {
            op: "exec",
            latency: ms(1),
        },
    );
    let p = rec.progress_at(at(2900));
    assert_eq!((p.ops_per_s, p.recent_p99), (4.0, Some(p99)));
    let p = rec.progress_at(at(3100));
    assert_eq!(p.ops_per_s, 1.0);
    // Nothing in second 3.
    assert_eq!(rec.progress_at(at(4100)).recent_p99, None);
}

#[test]
fn finish_takes_a_consistent_copy_while_tasks_record() {
    let rec = Recorder::new();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let rec = rec.clone();
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    rec.ok("exec", ms(1));
                }
            })
        })
        .collect();
    for _ in 0..20 {
        let r = rec.finish(serde_json::Value::Null);
        let total = r.ops.get("exec").map_or(0, |s| s.ok);
        let in_timeline: u64 = r
            .timeline
            .iter()
            .filter_map(|t| t.ops.get("exec"))
            .map(|o| o.count)
            .sum();
        assert_eq!(total, in_timeline);
    }
    for task in tasks {
        task.join().expect("recording task");
    }
    assert_eq!(rec.finish(serde_json::Value::Null).ops["exec"].ok, 8000);
}

fn sample_report() -> Report {
    let latency = Latency {
        min: 0.5,
        mean: 3.2,
        p50: 2.5,
        p90: 7.25,
        p99: 12.3456,
        p999: 150.0,
        max: 1234.4,
    };
    let connect = OpSummary {
        ok: 1200,
        errors: 3,
        per_s: 120.0,
        latency_ms: latency.clone(),
    };
    let exec = OpSummary {
        ok: 7,
        errors: 1,
        per_s: 0.7,
        latency_ms: latency,
    };
    Report {
        meta: serde_json::json!({"scenario": "mixed", "sessions": 100}),
        elapsed_s: 10.0,
        ops: BTreeMap::from([("connect".into(), connect), ("exec".into(), exec)]),
        errors: BTreeMap::from([
            ("connect: authentication refused".into(), 1),
            ("connect: timeout".into(), 2),
            ("exec: checksum mismatch".into(), 1),
        ]),
        bytes: 10 * 1024 * 1024,
        bytes_per_s: 1024.0 * 1024.0,
        peak_open: 100,
        timeline: vec![Tick {
            t: 1.0,
            open: 100,
            errors: 4,
            bytes: 512,
            ops: BTreeMap::from([(
                "connect".into(),
                TickOp {
                    count: 1200,
                    p50: 2.5,
                    p99: 12.25,
                },
            )]),
            samples: BTreeMap::from([("rss_kib".into(), 20480.0)]),
        }],
    }
}

#[test]
fn table_lists_ops_throughput_and_errors_by_count() {
    let expected = "\
op         ok  errors  ops/s  p50 ms  p90 ms  p99 ms  p99.9 ms  max ms
connect  1200       3  120.0   2.500   7.250   12.35     150.0    1234
exec        7       1    0.7   2.500   7.250   12.35     150.0    1234

elapsed: 10.0 s
throughput: 10.00 MiB, 1.00 MiB/s
peak open sessions: 100
errors by kind (4 total):
  2  connect: timeout
  1  connect: authentication refused
  1  exec: checksum mismatch
";
    assert_eq!(sample_report().table(), expected);
}

#[test]
fn table_without_errors_or_bytes() {
    let report = Report {
        peak_open: 2,
        elapsed_s: 1.5,
        ..Report::default()
    };
    let expected = "\
op  ok  errors  ops/s  p50 ms  p90 ms  p99 ms  p99.9 ms  max ms
(no operations)

elapsed: 1.5 s
peak open sessions: 2
errors: none
";
    assert_eq!(report.table(), expected);
}

#[test]
fn json_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("runs/1/report.json");
    let report = sample_report();
    report.write_json(&path).expect("write");
    assert_eq!(Report::read_json(&path).expect("read"), report);
}

#[test]
fn an_operation_that_never_succeeded_shows_no_latency() {
    let rec = Recorder::new();
    rec.error("login", "authentication refused");
    let table = rec.finish(serde_json::Value::Null).table();
    let row = table.lines().nth(1).expect("a row");
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["login", "0", "1", "0.0", "-", "-", "-", "-", "-"],
        "{table}"
    );
}
