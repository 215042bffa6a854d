//! The log format every connect program writes: one JSON object per line.
//!
//! Operators grep and ship these lines, and the platform documents some of
//! them verbatim, e.g. the Studio's key decision:
//!
//! ```text
//! {"time":"…","level":"info","msg":"SSH fingerprint auth result","authorized":false,"expected":"SHA256:…","incoming":"SHA256:…"}
//! ```
//!
//! `tracing-subscriber`'s own JSON formatter nests fields and calls the
//! message `message`; the documented lines use a flat object with `msg`, so
//! the formatter here writes that shape itself. Keys come in a fixed order:
//! `time`, `level`, `msg`, the event's fields in the order they were
//! written, the fields of the enclosing spans (innermost last), `target`.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How much to log, from a `*_LOG_LEVEL` variable.
///
/// Only the level names are accepted: a filter directive such as `verbose`
/// would silently mean "the target named verbose", which is the kind of
/// silent misconfiguration this project refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown log level {0:?}: expected one of off, error, warn, info, debug, trace")]
pub struct LogLevelError(String);

impl FromStr for LogLevel {
    type Err = LogLevelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(Self::Off),
            "error" => Ok(Self::Error),
            "warn" | "warning" => Ok(Self::Warn),
            "info" => Ok(Self::Info),
            "debug" => Ok(Self::Debug),
            "trace" => Ok(Self::Trace),
            _ => Err(LogLevelError(s.to_owned())),
        }
    }
}

impl LogLevel {
    fn filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            Self::Off => LevelFilter::OFF,
            Self::Error => LevelFilter::ERROR,
            Self::Warn => LevelFilter::WARN,
            Self::Info => LevelFilter::INFO,
            Self::Debug => LevelFilter::DEBUG,
            Self::Trace => LevelFilter::TRACE,
        }
    }
}

/// Install the process-wide subscriber writing [`JsonLines`] to stderr.
///
/// Calling it twice is harmless (the second call is ignored), which keeps
/// tests that start several components in one process simple.
pub fn init(level: LogLevel) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(level.filter())
        .with_writer(std::io::stderr)
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .event_format(JsonLines)
        .try_init();
}

/// A flat JSON object per event; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;

        let mut line = String::with_capacity(256);
        line.push_str("{\"time\":");
        push_json_str(&mut line, &time);
        line.push_str(",\"level\":");
        push_json_str(
            &mut line,
            &event.metadata().level().as_str().to_ascii_lowercase(),
        );

        let mut fields = FieldWriter {
            out: String::new(),
            message: None,
        };
        event.record(&mut fields);
        line.push_str(",\"msg\":");
        push_json_str(&mut line, fields.message.as_deref().unwrap_or(""));
        line.push_str(&fields.out);

        // Span fields were stored as a JSON object by `JsonFields`; splice
        // their members in rather than nesting them.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(stored) = ext.get::<FormattedFields<N>>() {
                    let inner = stored.fields.trim();
                    if let Some(members) = inner
                        .strip_prefix('{')
                        .and_then(|s| s.strip_suffix('}'))
                        .filter(|s| !s.is_empty())
                    {
                        line.push(',');
                        line.push_str(members);
                    }
                }
            }
        }

        line.push_str(",\"target\":");
        push_json_str(&mut line, event.metadata().target());
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// Appends `,"name":value` for every field except `message`, which it keeps.
struct FieldWriter {
    out: String,
    message: Option<String>,
}

impl FieldWriter {
    fn key(&mut self, field: &Field) {
        self.out.push(',');
        push_json_str(&mut self.out, field.name());
        self.out.push(':');
    }
}

impl Visit for FieldWriter {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.key(field);
            push_json_str(&mut self.out, &text);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.key(field);
            push_json_str(&mut self.out, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            push_json_str(&mut self.out, &value.to_string());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        push_json_str(&mut self.out, &value.to_string());
    }
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json's string escaping is exact JSON; writing into a String
    // cannot fail.
    if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn event_becomes_one_flat_json_line_with_msg() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("conn", peer = "127.0.0.1:5");
            let _g = span.enter();
            tracing::info!(
                authorized = false,
                expected = "SHA256:a",
                incoming = "SHA256:\"b\"",
                "SSH fingerprint auth result"
            );
        });
        let bytes = capture.0.lock().map(|b| b.clone()).unwrap_or_default();
        let text = String::from_utf8(bytes).expect("utf8");
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect("valid JSON");
        assert_eq!(v["msg"], "SSH fingerprint auth result");
        assert_eq!(v["authorized"], false);
        assert_eq!(v["expected"], "SHA256:a");
        assert_eq!(v["incoming"], "SHA256:\"b\"");
        assert_eq!(v["peer"], "127.0.0.1:5");
        assert_eq!(v["level"], "info");
        assert!(text.starts_with("{\"time\":"), "{text}");
    }

    #[test]
    fn log_levels_parse_strictly() {
        assert_eq!("INFO".parse::<LogLevel>(), Ok(LogLevel::Info));
        assert_eq!(" debug ".parse::<LogLevel>(), Ok(LogLevel::Debug));
        assert!("verbose".parse::<LogLevel>().is_err());
        assert!("".parse::<LogLevel>().is_err());
    }
}
