//! Log output on stderr, in one of three styles:
//! - a terminal or a plain file: human-readable lines with timestamps (colours on a terminal
//!   unless `NO_COLOR` is set);
//! - journald (stderr is the stream named by `$JOURNAL_STREAM`): no timestamps (the journal
//!   adds its own) and a syslog priority prefix on every line, `<3>` error, `<4>` warn,
//!   `<6>` info, `<7>` debug and trace, so `journalctl -p warning` works;
//! - `--log-format json`: one JSON object per line (`timestamp`, `level`, `message`, the
//!   event's fields at top level, `target`, and the current span), for log shippers.
//!
//! The level comes from `RUST_LOG` (default `info`); an invalid `RUST_LOG` is reported and
//! `info` used. Fields: lines about a lineage carry `lineage`, about a CDN domain `domain`.
//! Owns nothing else; writes no secrets (callers never pass any).
//!
//! Invariant: one event is one line. Whatever a message or field holds (a file name, a
//! certificate name, a server's text), a line break, ESC or other control character, or a
//! bidi override is written as an escape (`\n`, `\x1b`, `\u{202e}`; in JSON `\u202e`), so
//! no outside text can forge a log line or a journal entry, at any level.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use super::LogFormat;
use crate::untrusted;

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Style {
    /// Timestamps and levels; ANSI colours when `ansi`.
    Human { ansi: bool },
    /// Syslog priority prefixes, no timestamps.
    Journald,
    /// One JSON object per line.
    Json,
}

/// Picks the style for `format` from the environment and stderr.
pub(crate) fn style(format: LogFormat) -> Style {
    match format {
        LogFormat::Json => Style::Json,
        LogFormat::Human => {
            let stream = std::env::var("JOURNAL_STREAM").ok();
            if is_journal_stream(stream.as_deref(), stderr_identity()) {
                Style::Journald
            } else {
                let ansi =
                    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
                Style::Human { ansi }
            }
        }
    }
}

/// `$JOURNAL_STREAM` is "device:inode" of the stream systemd connected to the journal; it
/// applies only when stderr is still that stream (not redirected by a wrapper).
pub(crate) fn is_journal_stream(journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> bool {
    let (Some(value), Some(stderr)) = (journal_stream, stderr) else {
        return false;
    };
    let Some((dev, ino)) = value.trim().split_once(':') else {
        return false;
    };
    match (dev.parse::<u64>(), ino.parse::<u64>()) {
        (Ok(dev), Ok(ino)) => (dev, ino) == stderr,
        _ => false,
    }
}

fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// The filter from `RUST_LOG`'s value (default `info`), and a complaint when it is invalid.
pub(crate) fn filter(rust_log: Option<&str>) -> (EnvFilter, Option<String>) {
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => (EnvFilter::new("info"), None),
        Some(spec) => match EnvFilter::try_new(spec) {
            Ok(filter) => (filter, None),
            Err(err) => (
                EnvFilter::new("info"),
                Some(format!(
                    "RUST_LOG={spec:?} is not a valid log filter ({err}); logging at info. \
                     Use a level (error, warn, info, debug, trace) or e.g. \"info,certrotd=debug\""
                )),
            ),
        },
    }
}

/// The syslog priority journald reads from a line prefix.
pub(crate) fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Prefixes every line of the inner format's output with `<priority>`.
struct Journald<F> {
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let prio = priority(*event.metadata().level());
        // One entry per event: line breaks inside it are escaped (by the writer), never new
        // entries without a priority.
        writeln!(writer, "<{prio}>{}", line.trim_end_matches('\n'))
    }
}

/// The subscriber for `style`, writing to `writer`.
pub(crate) fn subscriber<W>(
    style: Style,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let escaping = match style {
        Style::Json => Escaping::Json,
        Style::Human { ansi: true } => Escaping::KeepEsc,
        Style::Human { ansi: false } | Style::Journald => Escaping::All,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(SafeMakeWriter {
            inner: writer,
            escaping,
        });
    match style {
        Style::Human { ansi: true } => Box::new(
            builder
                .with_ansi(true)
                .with_target(false)
                .fmt_fields(EscapedFields)
                .finish(),
        ),
        Style::Human { ansi: false } => {
            Box::new(builder.with_ansi(false).with_target(false).finish())
        }
        Style::Journald => {
            let inner = tracing_subscriber::fmt::format()
                .without_time()
                .with_level(false)
                .with_target(false)
                .with_ansi(false);
            Box::new(
                builder
                    .with_ansi(false)
                    .event_format(Journald { inner })
                    .finish(),
            )
        }
        Style::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
    }
}

/// What [`SafeWrite`] escapes in a formatted event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escaping {
    /// Every unsafe character but the line's final newline.
    All,
    /// The same but ESC, which starts the formatter's own colours (messages and fields are
    /// escaped whole by [`EscapedFields`] first).
    KeepEsc,
    /// JSON: the characters serde_json leaves raw (DEL, C1, bidi, line separators) as
    /// `\uXXXX`; they can only occur inside strings, so the line stays valid JSON.
    Json,
}

/// The default field format, then every unsafe character of it escaped (for colour output,
/// where the writer must leave the formatter's own ESC sequences alone).
struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut plain = String::new();
        tracing_subscriber::fmt::format::DefaultFields::new()
            .format_fields(Writer::new(&mut plain), fields)?;
        writer.write_str(&untrusted::escape(&plain))
    }
}

/// Hands out [`SafeWrite`]s around the inner writer.
struct SafeMakeWriter<M> {
    inner: M,
    escaping: Escaping,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for SafeMakeWriter<M> {
    type Writer = SafeWrite<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        SafeWrite {
            inner: self.inner.make_writer(),
            escaping: self.escaping,
        }
    }
}

/// A `\r`-rewritten progress line is on the terminal (set by `sync`'s progress line): the
/// next log line first clears it, so the two never share a line.
pub(crate) static PROGRESS_SHOWN: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Escapes each formatted event (the fmt layer writes one event per `write`) before it
/// reaches the inner writer.
struct SafeWrite<W> {
    inner: W,
    escaping: Escaping,
}

impl<W: std::io::Write> std::io::Write for SafeWrite<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let line = escape_event(&text, self.escaping);
        if PROGRESS_SHOWN.swap(false, std::sync::atomic::Ordering::AcqRel) {
            // Carriage return, then erase the line (the progress line is redrawn later).
            self.inner.write_all(b"\r\x1b[K")?;
        }
        self.inner.write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `event` with its unsafe characters escaped as `escaping` says; a final newline is kept.
fn escape_event(event: &str, escaping: Escaping) -> String {
    let (body, end) = match event.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (event, ""),
    };
    if !body.chars().any(untrusted::is_unsafe_char) {
        return event.to_string();
    }
    let mut out = String::with_capacity(event.len() + 16);
    for c in body.chars() {
        match escaping {
            Escaping::KeepEsc if c == '\x1b' => out.push(c),
            Escaping::Json if untrusted::is_unsafe_char(c) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            _ => untrusted::push_escaped(&mut out, c),
        }
    }
    out.push_str(end);
    out
}

/// Installs the process-wide subscriber on stderr (and forwards the `log` records of
/// dependencies). A second call does nothing.
pub(crate) fn init(format: LogFormat) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, complaint) = filter(rust_log.as_deref());
    let installed = subscriber(style(format), filter, std::io::stderr)
        .try_init()
        .is_ok();
    if let (true, Some(complaint)) = (installed, complaint) {
        tracing::warn!("{complaint}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `log` under `style` at `spec` and returns what was written.
    fn capture(style: Style, spec: &str, log: impl FnOnce()) -> String {
        let buf = Buf::default();
        let writer = buf.clone();
        let (filter, complaint) = filter(Some(spec));
        assert_eq!(complaint, None);
        tracing::subscriber::with_default(subscriber(style, filter, move || writer.clone()), log);
        let bytes = buf.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    fn all_levels() {
        tracing::error!(lineage = "/etc/letsencrypt/live/a", "push failed");
        tracing::warn!(domain = "www.example.com", "torn for 10 quiet periods");
        tracing::info!(lineage = "/etc/letsencrypt/live/a", "renewed");
        tracing::debug!("debug detail");
        tracing::trace!("trace detail");
    }

    #[test]
    fn journald_lines_carry_priority_prefixes_and_no_timestamps() {
        let out = capture(Style::Journald, "trace", all_levels);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        let prefixes: Vec<&str> = lines.iter().map(|l| &l[..3]).collect();
        assert_eq!(prefixes, ["<3>", "<4>", "<6>", "<7>", "<7>"]);
        // The message right after the prefix: no timestamp, no level word, no colour.
        assert_eq!(
            lines[0],
            "<3>push failed lineage=\"/etc/letsencrypt/live/a\""
        );
        assert_eq!(
            lines[1],
            "<4>torn for 10 quiet periods domain=\"www.example.com\""
        );
        assert_eq!(lines[2], "<6>renewed lineage=\"/etc/letsencrypt/live/a\"");
        assert!(!out.contains('\x1b'), "{out}");
    }

    #[test]
    fn journald_keeps_a_multi_line_message_in_one_prefixed_entry() {
        let out = capture(Style::Journald, "info", || {
            tracing::warn!("first line\nsecond line");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, ["<4>first line\\nsecond line"], "{out}");
    }

    /// What a hostile file name, certificate name or server text may hold.
    const HOSTILE: &str =
        "x\n2026-12-01T00:00:00Z ERROR forged\r\u{1b}[2K\u{7}\u{85}\u{202e}gpj.pem";

    fn hostile_event() {
        tracing::warn!(lineage = HOSTILE, name = %HOSTILE, "renewed {HOSTILE}");
    }

    #[test]
    fn control_characters_from_outside_never_break_or_colour_a_line() {
        for style in [
            Style::Human { ansi: false },
            Style::Human { ansi: true },
            Style::Journald,
        ] {
            let out = capture(style, "info", hostile_event);
            assert_eq!(out.lines().count(), 1, "{style:?}: {out}");
            assert!(out.ends_with('\n'), "{style:?}: {out}");
            for bad in ['\r', '\u{7}', '\u{85}', '\u{202e}'] {
                assert!(!out.contains(bad), "{style:?}: {bad:?} in {out:?}");
            }
            assert!(!out.contains("\u{1b}[2K"), "{style:?}: {out:?}");
            assert!(out.contains("\\u{202e}gpj.pem"), "{style:?}: {out}");
        }
    }

    #[test]
    fn json_lines_escape_what_serde_json_leaves_raw() {
        let out = capture(Style::Json, "info", hostile_event);
        assert_eq!(out.lines().count(), 1, "{out}");
        for bad in ['\r', '\u{7}', '\u{85}', '\u{202e}', '\u{1b}'] {
            assert!(!out.contains(bad), "{bad:?} in {out:?}");
        }
        let line: serde_json::Value = serde_json::from_str(out.trim_end()).expect("JSON");
        assert_eq!(line["lineage"], HOSTILE);
    }

    #[test]
    fn human_lines_have_level_and_fields_but_no_prefix() {
        let out = capture(Style::Human { ansi: false }, "info", all_levels);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "debug and trace are off at info: {out}");
        assert!(
            lines[0].contains("ERROR") && lines[0].contains("lineage=\"/etc/letsencrypt/live/a\""),
            "{out}"
        );
        assert!(
            lines[2].contains("INFO") && lines[2].contains("renewed"),
            "{out}"
        );
        assert!(!out.contains("<6>") && !out.contains('\x1b'), "{out}");
    }

    #[test]
    fn json_lines_are_objects_with_fields_at_top_level() {
        let out = capture(Style::Json, "info", || {
            let span = tracing::info_span!("pass", reason = "file change");
            let _enter = span.enter();
            tracing::info!(lineage = "/etc/letsencrypt/live/a", "renewed");
            tracing::warn!(domain = "www.example.com", "pending");
        });
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["message"], "renewed");
        assert_eq!(lines[0]["lineage"], "/etc/letsencrypt/live/a");
        assert_eq!(lines[0]["span"]["reason"], "file change");
        assert!(lines[0]["timestamp"].is_string());
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["domain"], "www.example.com");
    }

    #[test]
    fn journal_stream_must_match_stderr() {
        assert!(is_journal_stream(Some("8:12345"), Some((8, 12345))));
        assert!(!is_journal_stream(Some("8:12345"), Some((8, 999))));
        assert!(!is_journal_stream(Some("8:12345"), None));
        assert!(!is_journal_stream(None, Some((8, 12345))));
        for garbage in ["", "8", "8:", ":1", "a:b", "8:12345:1"] {
            assert!(
                !is_journal_stream(Some(garbage), Some((8, 12345))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn json_flag_wins_over_the_journal() {
        assert_eq!(style(LogFormat::Json), Style::Json);
    }

    #[test]
    fn rust_log_sets_the_level_and_a_bad_one_is_reported() {
        let out = capture(Style::Human { ansi: false }, "debug", all_levels);
        assert_eq!(out.lines().count(), 4, "{out}");
        let out = capture(Style::Human { ansi: false }, "warn", all_levels);
        assert_eq!(out.lines().count(), 2, "{out}");
        let (_, complaint) = filter(None);
        assert_eq!(complaint, None);
        let (_, complaint) = filter(Some("certrotd=loud"));
        let complaint = complaint.expect("invalid filter reported");
        assert!(
            complaint.contains("RUST_LOG") && complaint.contains("certrotd=loud"),
            "{complaint}"
        );
        assert!(complaint.contains("logging at info"), "{complaint}");
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
        assert_eq!(priority(Level::TRACE), 7);
    }
}
