//! What a run measured.
//!
//! Every task of a run records into one [`Recorder`] (cheap to clone,
//! thread-safe); the progress line reads [`Recorder::progress`]; at the
//! end [`Recorder::finish`] produces the [`Report`]: a table for the
//! terminal, JSON for machines, a timeline for [`crate::plot`].
//!
//! Latencies are kept in microsecond HDR histograms (3 significant
//! figures, 1 µs .. 1 h; longer values are clamped to one hour). The
//! timeline has one [`Tick`] per second of the run: only the second being
//! recorded keeps histograms, earlier seconds are sealed into their
//! percentiles, so memory does not grow with the length of the run beyond
//! one small `Tick` per second.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufWriter, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency tracked, in microseconds (one hour). Longer operations
/// are recorded as one hour rather than dropped.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// An empty latency histogram: microseconds, 3 significant figures.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

/// Records `latency` into `histogram`, clamped to [`MAX_LATENCY_US`].
pub fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(us);
}

/// Milliseconds summary of a microsecond histogram; all zeros when empty.
pub fn summarize(histogram: &Histogram<u64>) -> Latency {
    if histogram.is_empty() {
        return Latency::default();
    }
    let at = |q: f64| us_to_ms(histogram.value_at_quantile(q));
    Latency {
        min: us_to_ms(histogram.min()),
        mean: histogram.mean() / 1000.0,
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        p999: at(0.999),
        max: us_to_ms(histogram.max()),
    }
}

/// `count` spread over `elapsed_s` seconds; 0 for a run of no length.
pub fn per_second(count: u64, elapsed_s: f64) -> f64 {
    if elapsed_s > 0.0 {
        count as f64 / elapsed_s
    } else {
        0.0
    }
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// One thing a task records; [`Recorder::record_at`] takes it with an
/// explicit time, the named methods ([`Recorder::ok`], ...) with now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event<'a> {
    Ok { op: &'static str, latency: Duration },
    Error { op: &'static str, kind: &'a str },
    Bytes(u64),
    Opened,
    Closed,
    Sample { name: &'static str, value: f64 },
}

/// Shared by every task of a run.
#[derive(Clone, Debug)]
pub struct Recorder {
    started: Instant,
    state: Arc<Mutex<State>>,
}

/// What the live progress line shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    pub elapsed: Duration,
    /// Operations completed (all kinds).
    pub ok: u64,
    pub errors: u64,
    /// Sessions open now.
    pub open: i64,
    pub bytes: u64,
    /// Completed operations per second over the last full second.
    pub ops_per_s: f64,
    /// p99 latency of the last full second, all kinds, if any.
    pub recent_p99: Option<Duration>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::with_start(Instant::now())
    }
    /// A recorder whose time zero is `started` (tests pass a synthetic
    /// clock through this and the `*_at` methods).
    pub fn with_start(started: Instant) -> Self {
        Self {
            started,
            state: Arc::new(Mutex::new(State::new())),
        }
    }
    /// When the run started (time zero of the timeline).
    pub fn started(&self) -> Instant {
        self.started
    }
    /// One operation of kind `op` ("connect", "exec", "keystroke", ...)
    /// succeeded and took `latency`.
    pub fn ok(&self, op: &'static str, latency: Duration) {
        self.record(Event::Ok { op, latency });
    }
    /// One operation of kind `op` failed; `kind` names why ("connection
    /// refused", "authentication refused", "timeout", "checksum mismatch").
    pub fn error(&self, op: &'static str, kind: &str) {
        self.record(Event::Error { op, kind });
    }
    /// Payload bytes moved and verified.
    pub fn bytes(&self, n: u64) {
        self.record(Event::Bytes(n));
    }
    pub fn opened(&self) {
        self.record(Event::Opened);
    }
    pub fn closed(&self) {
        self.record(Event::Closed);
    }
    /// A sampled value over time (e.g. "rss_kib", "fds" of a process).
    /// Non-finite values are ignored: JSON cannot carry them.
    pub fn sample(&self, name: &'static str, value: f64) {
        self.record(Event::Sample { name, value });
    }
    /// Records `event` as having happened at `at`. An event older than the
    /// second being recorded counts in that second: sealed seconds are final.
    pub fn record_at(&self, at: Instant, event: Event<'_>) {
        let second = self.second_of(at);
        self.state().apply(second, event);
    }
    pub fn progress(&self) -> Progress {
        self.progress_at(Instant::now())
    }
    /// Progress as seen at `now`.
    pub fn progress_at(&self, now: Instant) -> Progress {
        let state = self.state();
        let last_full = self.second_of(now).checked_sub(1);
        let rate = match last_full {
            Some(second) if state.live.index == second => Some(state.live.rate()),
            Some(second) => state.last_sealed.filter(|r| r.index == second),
            None => None,
        };
        Progress {
            elapsed: now.saturating_duration_since(self.started),
            ok: state.ok,
            errors: state.errors_total,
            open: state.open,
            bytes: state.bytes,
            ops_per_s: rate.map_or(0.0, |r| r.ok as f64),
            recent_p99: rate.and_then(|r| r.p99),
        }
    }
    /// The report; `meta` describes the run (scenario, target, knobs).
    /// Tasks may keep recording: the report is a consistent copy.
    pub fn finish(&self, meta: serde_json::Value) -> Report {
        self.finish_at(Instant::now(), meta)
    }
    /// The report of a run that ended at `now`.
    pub fn finish_at(&self, now: Instant, meta: serde_json::Value) -> Report {
        let elapsed_s = now.saturating_duration_since(self.started).as_secs_f64();
        let state = self.state();
        let ops = state
            .totals
            .iter()
            .map(|(op, totals)| {
                let ok = totals.latency.len();
                let summary = OpSummary {
                    ok,
                    errors: totals.errors,
                    per_s: per_second(ok, elapsed_s),
                    latency_ms: summarize(&totals.latency),
                };
                (op.to_string(), summary)
            })
            .collect();
        Report {
            meta,
            elapsed_s,
            ops,
            errors: state.errors.clone(),
            bytes: state.bytes,
            bytes_per_s: per_second(state.bytes, elapsed_s),
            peak_open: state.peak_open,
            timeline: state.timeline(elapsed_s),
        }
    }

    fn record(&self, event: Event<'_>) {
        let mut state = self.state();
        // Read the clock under the lock so seconds arrive in order.
        let second = self.second_of(Instant::now());
        state.apply(second, event);
    }
    fn second_of(&self, at: Instant) -> usize {
        let secs = at.saturating_duration_since(self.started).as_secs();
        usize::try_from(secs).unwrap_or(usize::MAX)
    }
    fn state(&self) -> MutexGuard<'_, State> {
        // Counters stay meaningful after a panicking recorder: keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct State {
    totals: BTreeMap<&'static str, OpTotals>,
    /// "op: kind" → count.
    errors: BTreeMap<String, u64>,
    ok: u64,
    errors_total: u64,
    bytes: u64,
    open: i64,
    peak_open: i64,
    /// Invariant: `sealed.len() == live.index`; `sealed[i]` is second `i`.
    sealed: Vec<Tick>,
    live: Second,
    /// Rate of the newest sealed second, for the progress line.
    last_sealed: Option<Rate>,
}

#[derive(Debug)]
struct OpTotals {
    latency: Histogram<u64>,
    errors: u64,
}

/// The second being recorded. Its histograms are reset, not freed, when it
/// is sealed, so a long run allocates them once per op kind.
#[derive(Debug)]
struct Second {
    index: usize,
    errors: u64,
    bytes: u64,
    ops: BTreeMap<&'static str, Histogram<u64>>,
    /// All kinds together, for the progress line's p99.
    all: Histogram<u64>,
    samples: BTreeMap<&'static str, f64>,
}

#[derive(Clone, Copy, Debug)]
struct Rate {
    index: usize,
    ok: u64,
    p99: Option<Duration>,
}

impl State {
    fn new() -> Self {
        Self {
            totals: BTreeMap::new(),
            errors: BTreeMap::new(),
            ok: 0,
            errors_total: 0,
            bytes: 0,
            open: 0,
            peak_open: 0,
            sealed: Vec::new(),
            live: Second::new(),
            last_sealed: None,
        }
    }

    fn apply(&mut self, second: usize, event: Event<'_>) {
        self.advance_to(second);
        let live = &mut self.live;
        match event {
            Event::Ok { op, latency } => {
                self.ok += 1;
                record_latency(
                    &mut self.totals.entry(op).or_insert_with(OpTotals::new).latency,
                    latency,
                );
                record_latency(
                    live.ops.entry(op).or_insert_with(latency_histogram),
                    latency,
                );
                record_latency(&mut live.all, latency);
            }
            Event::Error { op, kind } => {
                self.errors_total += 1;
                self.totals.entry(op).or_insert_with(OpTotals::new).errors += 1;
                *self.errors.entry(format!("{op}: {kind}")).or_default() += 1;
                live.errors += 1;
            }
            Event::Bytes(n) => {
                self.bytes = self.bytes.saturating_add(n);
                live.bytes = live.bytes.saturating_add(n);
            }
            Event::Opened => {
                self.open += 1;
                self.peak_open = self.peak_open.max(self.open);
            }
            Event::Closed => self.open -= 1,
            Event::Sample { name, value } => {
                if value.is_finite() {
                    live.samples.insert(name, value);
                }
            }
        }
    }

    /// Seals every second before `second`. Nothing has happened since the
    /// live second's last event, so `open` is its value at the end of each.
    fn advance_to(&mut self, second: usize) {
        while self.live.index < second {
            let tick = self.live.tick(self.open, (self.live.index + 1) as f64);
            self.last_sealed = Some(self.live.rate());
            self.sealed.push(tick);
            self.live.clear();
            self.live.index += 1;
        }
    }

    /// Gap-free seconds from 0 to the end of a run of `elapsed_s`; the last
    /// tick ends at `elapsed_s` when the run ended inside it.
    fn timeline(&self, elapsed_s: f64) -> Vec<Tick> {
        let end = (elapsed_s.ceil() as usize).max(self.live.index + 1);
        let mut ticks = Vec::with_capacity(end);
        ticks.extend_from_slice(&self.sealed);
        ticks.push(self.live.tick(self.open, (self.live.index + 1) as f64));
        ticks.extend((self.live.index + 1..end).map(|i| Tick {
            t: (i + 1) as f64,
            open: self.open,
            ..Tick::default()
        }));
        if let Some(last) = ticks.last_mut()
            && last.t - 1.0 < elapsed_s
            && elapsed_s < last.t
        {
            last.t = elapsed_s;
        }
        ticks
    }
}

impl OpTotals {
    fn new() -> Self {
        Self {
            latency: latency_histogram(),
            errors: 0,
        }
    }
}

impl Second {
    fn new() -> Self {
        Self {
            index: 0,
            errors: 0,
            bytes: 0,
            ops: BTreeMap::new(),
            all: latency_histogram(),
            samples: BTreeMap::new(),
        }
    }

    fn tick(&self, open: i64, t: f64) -> Tick {
        let ops = self
            .ops
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(op, h)| {
                let tick_op = TickOp {
                    count: h.len(),
                    p50: us_to_ms(h.value_at_quantile(0.5)),
                    p99: us_to_ms(h.value_at_quantile(0.99)),
                };
                (op.to_string(), tick_op)
            })
            .collect();
        let samples = self
            .samples
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        Tick {
            t,
            open,
            errors: self.errors,
            bytes: self.bytes,
            ops,
            samples,
        }
    }

    fn rate(&self) -> Rate {
        let p99 =
            (!self.all.is_empty()).then(|| Duration::from_micros(self.all.value_at_quantile(0.99)));
        Rate {
            index: self.index,
            ok: self.all.len(),
            p99,
        }
    }

    fn clear(&mut self) {
        self.errors = 0;
        self.bytes = 0;
        for h in self.ops.values_mut().chain([&mut self.all]) {
            if !h.is_empty() {
                h.reset();
            }
        }
        self.samples.clear();
    }
}

/// Latency summary, milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpSummary {
    pub ok: u64,
    pub errors: u64,
    /// Successful operations per second of the run.
    pub per_s: f64,
    pub latency_ms: Latency,
}

/// One second of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// Seconds since the start (end of this bucket).
    pub t: f64,
    /// Sessions open at the end of the second.
    pub open: i64,
    pub errors: u64,
    pub bytes: u64,
    /// Per operation kind: completions and p50/p99 (ms) in this second.
    pub ops: BTreeMap<String, TickOp>,
    /// Last value of each sample in this second.
    pub samples: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TickOp {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub meta: serde_json::Value,
    pub elapsed_s: f64,
    pub ops: BTreeMap<String, OpSummary>,
    /// "op: kind" → count.
    pub errors: BTreeMap<String, u64>,
    pub bytes: u64,
    pub bytes_per_s: f64,
    pub peak_open: i64,
    pub timeline: Vec<Tick>,
}

const MIB: f64 = 1024.0 * 1024.0;

impl Report {
    /// The final table for a terminal.
    pub fn table(&self) -> String {
        let header = [
            "op", "ok", "errors", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
        ];
        let rows: Vec<[String; 9]> = self
            .ops
            .iter()
            .map(|(op, s)| {
                let l = &s.latency_ms;
                // No success, no latency: a dash, not a misleading zero.
                let ms = |v: f64| {
                    if s.ok == 0 {
                        "-".to_owned()
                    } else {
                        format_ms(v)
                    }
                };
                [
                    op.clone(),
                    s.ok.to_string(),
                    s.errors.to_string(),
                    format!("{:.1}", s.per_s),
                    ms(l.p50),
                    ms(l.p90),
                    ms(l.p99),
                    ms(l.p999),
                    ms(l.max),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[&str]| {
            let mut text = format!("{:<w$}", cells[0], w = widths[0]);
            for (cell, w) in cells.iter().zip(widths).skip(1) {
                let _ = write!(text, "  {cell:>w$}");
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&header);
        for row in &rows {
            line(&row.each_ref().map(String::as_str));
        }
        if rows.is_empty() {
            out.push_str("(no operations)\n");
        }
        out.push('\n');
        let _ = writeln!(out, "elapsed: {:.1} s", self.elapsed_s);
        if self.bytes > 0 {
            let _ = writeln!(
                out,
                "throughput: {:.2} MiB, {:.2} MiB/s",
                self.bytes as f64 / MIB,
                self.bytes_per_s / MIB
            );
        }
        let _ = writeln!(out, "peak open sessions: {}", self.peak_open);
        let mut errors: Vec<(&String, &u64)> = self.errors.iter().collect();
        if errors.is_empty() {
            out.push_str("errors: none\n");
        } else {
            // Most frequent first; the map's key order breaks ties.
            errors.sort_by(|a, b| b.1.cmp(a.1));
            let w = errors[0].1.to_string().len();
            let _ = writeln!(out, "errors by kind ({} total):", self.total_errors());
            for (kind, count) in errors {
                let _ = writeln!(out, "  {count:>w$}  {kind}");
            }
        }
        out
    }
    /// Pretty JSON of the whole report; creates parent directories.
    pub fn write_json(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let mut out = BufWriter::new(fs::File::create(path)?);
        serde_json::to_writer_pretty(&mut out, self)?;
        out.write_all(b"\n")?;
        out.flush()
    }
    /// Reads a report written by [`Report::write_json`].
    pub fn read_json(path: &Path) -> io::Result<Report> {
        let text = fs::read(path)?;
        Ok(serde_json::from_slice(&text)?)
    }
    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// About four significant figures: what a 3-figure histogram can back.
fn format_ms(ms: f64) -> String {
    match ms {
        m if m < 10.0 => format!("{m:.3}"),
        m if m < 100.0 => format!("{m:.2}"),
        m if m < 1000.0 => format!("{m:.1}"),
        m => format!("{m:.0}"),
    }
}

#[cfg(test)]
mod tests;
