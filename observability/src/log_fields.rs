//! How the JSON logs keep a span's fields: as the text of a JSON object, without the
//! OpenTelemetry-only `otel.*` fields, extended in place when a field is recorded later.
//!
//! tracing-subscriber's own `JsonFields` parses the whole object and writes it out again for
//! every `Span::record`, and keeps `otel.name` and `otel.kind` that no log reader needs; on a
//! cached read those two costs were a tenth of the edge's CPU. The JSON event formatter reads
//! the text back as an object, so a field recorded twice appears twice in the text and the
//! later value wins when a line is written.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::Writer;

/// The span-field format of the JSON logs (see the module documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanFields;

/// Fields only the OpenTelemetry layer reads (span name, kind, status).
fn is_logged(field: &Field) -> bool {
    !field.name().starts_with("otel.")
}

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        writer.write_char('{')?;
        let mut members = Members::new(&mut writer);
        fields.record(&mut members);
        members.result?;
        writer.write_char('}')
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut members = Members::new(String::new());
        fields.record(&mut members);
        members.result?;
        append_members(&mut current.fields, &members.out);
        Ok(())
    }
}

/// Adds `members` (`"a":1,"b":2`) to the object text `object` (`{...}`, or empty for none).
fn append_members(object: &mut String, members: &str) {
    if members.is_empty() {
        return;
    }
    match object.strip_suffix('}') {
        Some("{") => {
            object.pop();
        }
        Some(_) => {
            object.pop();
            object.push(',');
        }
        None => {
            object.clear();
            object.push('{');
        }
    }
    object.push_str(members);
    object.push('}');
}

/// Writes each logged field as a JSON object member, separated by commas.
struct Members<W: Write> {
    out: W,
    first: bool,
    result: fmt::Result,
}

impl<W: Write> Members<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            first: true,
            result: Ok(()),
        }
    }

    /// Writes `"name":` and then the value `write_value` writes.
    fn member(&mut self, field: &Field, write_value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() || !is_logged(field) {
            return;
        }
        let separator = if self.first { "" } else { "," };
        self.first = false;
        self.result = (|| {
            self.out.write_str(separator)?;
            write_string(&mut self.out, format_args!("{}", field.name()))?;
            self.out.write_char(':')?;
            write_value(&mut self.out)
        })();
    }
}

impl<W: Write> Visit for Members<W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| write_string(out, format_args!("{value}")));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those are written as strings.
        if value.is_finite() {
            self.member(field, |out| write!(out, "{value}"));
        } else {
            self.member(field, |out| write_string(out, format_args!("{value}")));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| write_string(out, format_args!("{value:?}")));
    }
}

/// Writes `text` as a JSON string: quoted, with quotes, backslashes and control characters
/// escaped.
fn write_string(out: &mut impl Write, text: fmt::Arguments<'_>) -> fmt::Result {
    out.write_char('"')?;
    Escaped(&mut *out).write_fmt(text)?;
    out.write_char('"')
}

/// Escapes what passes through it for the inside of a JSON string.
struct Escaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (at, c) in text.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if c < ' ' => "",
                _ => continue,
            };
            self.0.write_str(&text[plain..at])?;
            if escape.is_empty() {
                write!(self.0, "\\u{:04x}", u32::from(c))?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = at + c.len_utf8();
        }
        self.0.write_str(&text[plain..])
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// The lines a subscriber wrote.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` under a JSON log subscriber with `SpanFields`, and returns the lines written.
    fn logged(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let lines = Lines::default();
        let sink = lines.clone();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .fmt_fields(SpanFields)
            .with_writer(move || sink.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[test]
    fn span_fields_reach_the_line_without_the_otel_ones() {
        let lines = logged(|| {
            let span = tracing::info_span!(
                "rpc.server",
                otel.name = "social/get_group",
                otel.kind = "server",
                request_id = "r-1",
                attempt = 3u64,
                offset = -2i64,
                ok = true,
                share = 0.5f64,
                odd = f64::NAN,
                trace_id = tracing::field::Empty,
            );
            span.record("trace_id", "abc");
            span.record("attempt", 4u64);
            let _entered = span.enter();
            tracing::info!("inside");
        });
        assert_eq!(lines.len(), 1);
        let span = &lines[0]["span"];
        assert_eq!(span["name"], "rpc.server");
        assert_eq!(span["request_id"], "r-1");
        assert_eq!(span["trace_id"], "abc", "recorded after creation");
        assert_eq!(span["attempt"], 4, "the later value wins");
        assert_eq!(span["offset"], -2);
        assert_eq!(span["ok"], true);
        assert_eq!(span["share"], 0.5);
        assert_eq!(span["odd"], "NaN");
        assert!(span.get("otel.name").is_none() && span.get("otel.kind").is_none());
        assert_eq!(lines[0]["spans"][0]["request_id"], "r-1");
    }

    #[test]
    fn a_span_whose_fields_come_later_still_logs_an_object() {
        let lines = logged(|| {
            let span = tracing::info_span!(
                "http.request",
                otel.name = "GET",
                route = tracing::field::Empty,
            );
            span.record("otel.name", "GET /x");
            span.record("route", "/x");
            let _entered = span.enter();
            tracing::info!("inside");
        });
        assert_eq!(lines[0]["span"]["route"], "/x");
        assert!(lines[0]["span"].get("otel.name").is_none());
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        write_string(&mut out, format_args!("a\"b\\c\nd\te\u{1}f é")).unwrap();
        assert_eq!(out, r#""a\"b\\c\nd\te\u0001f é""#);
        let parsed: String = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\te\u{1}f é");
    }

    #[test]
    fn members_are_appended_to_any_object() {
        let mut object = String::new();
        append_members(&mut object, r#""a":1"#);
        assert_eq!(object, r#"{"a":1}"#);
        append_members(&mut object, r#""b":2"#);
        assert_eq!(object, r#"{"a":1,"b":2}"#);
        append_members(&mut object, "");
        assert_eq!(object, r#"{"a":1,"b":2}"#);
        let mut empty = String::from("{}");
        append_members(&mut empty, r#""c":3"#);
        assert_eq!(empty, r#"{"c":3}"#);
    }
}
