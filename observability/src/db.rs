//! Every Postgres statement, seen through the event sqlx emits when one finishes: its latency
//! goes into `mesh_db_query_duration_seconds{service,operation}`, and inside a sampled trace it
//! becomes a CLIENT span (`db.system.name`, `db.operation.name`, `db.query.summary`,
//! `db.query.text`). sqlx reports the statement text with its placeholders, never the values.
//!
//! The service is the `mesh.service` field of the nearest enclosing span that has one (the
//! RPC, consumer or relay span), else the process's default.

use std::fmt;
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::metrics::DB_QUERY_DURATION;
use crate::spans::SERVICE_FIELD;

/// The target of sqlx's per-statement event.
pub(crate) const SQLX_TARGET: &str = "sqlx::query";
/// The longest statement text put on a span.
const MAX_STATEMENT: usize = 2048;

/// The tracing layer turning sqlx's statement events into metrics and spans.
pub(crate) struct DbQueries {
    default_service: String,
}

impl DbQueries {
    pub(crate) fn new(default_service: &str) -> Self {
        Self {
            default_service: default_service.to_owned(),
        }
    }
}

/// The service a span (and what runs below it) works for.
struct ServiceTag(String);

#[derive(Default)]
struct ServiceField(Option<String>);

impl Visit for ServiceField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == SERVICE_FIELD {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == SERVICE_FIELD {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

/// What sqlx tells about a finished statement.
#[derive(Default)]
struct Statement {
    summary: String,
    text: String,
    elapsed_secs: Option<f64>,
    rows_affected: u64,
    rows_returned: u64,
}

impl Visit for Statement {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = Some(value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "rows_affected" => self.rows_affected = value,
            "rows_returned" => self.rows_returned = value,
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.trim_end_matches(" …").to_owned(),
            "db.statement" => self.text = value.trim().to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn fmt::Debug) {}
}

/// The statement's verb as a bounded label: `SELECT`, `INSERT`, ... or `OTHER`.
fn operation(summary: &str) -> &'static str {
    let verb = summary.split_whitespace().next().unwrap_or_default();
    const KNOWN: &[&str] = &[
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "WITH",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "LOCK",
        "NOTIFY",
        "LISTEN",
        "SAVEPOINT",
        "RELEASE",
        "CREATE",
        "ALTER",
        "DROP",
    ];
    KNOWN
        .iter()
        .find(|known| known.eq_ignore_ascii_case(verb))
        .copied()
        .unwrap_or("OTHER")
}

fn capped(text: &str) -> String {
    text.chars().take(MAX_STATEMENT).collect()
}

impl<S> Layer<S> for DbQueries
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut field = ServiceField::default();
        attrs.record(&mut field);
        if let (Some(service), Some(span)) = (field.0, ctx.span(id)) {
            span.extensions_mut().insert(ServiceTag(service));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != SQLX_TARGET {
            return;
        }
        let mut statement = Statement::default();
        event.record(&mut statement);
        let Some(elapsed_secs) = statement.elapsed_secs else {
            return;
        };
        let service = ctx
            .event_scope(event)
            .and_then(|mut scope| {
                scope.find_map(|span| span.extensions().get::<ServiceTag>().map(|t| t.0.clone()))
            })
            .unwrap_or_else(|| self.default_service.clone());
        let operation = operation(&statement.summary);
        DB_QUERY_DURATION
            .with_label_values(&[service.as_str(), operation])
            .observe(elapsed_secs);
        export_span(&statement, &service, operation, elapsed_secs);
    }
}

/// Records the finished statement as a CLIENT span under the current span, when that span is
/// part of a sampled trace (background polling outside any operation stays a metric only).
fn export_span(statement: &Statement, service: &str, operation: &'static str, elapsed: f64) {
    let parent = tracing::Span::current().context();
    if !parent.span().span_context().is_sampled() {
        return;
    }
    let end = SystemTime::now();
    let start = end
        .checked_sub(Duration::from_secs_f64(elapsed.max(0.0)))
        .unwrap_or(end);
    let text = if statement.text.is_empty() {
        statement.summary.clone()
    } else {
        capped(&statement.text)
    };
    let name = if statement.summary.is_empty() {
        operation.to_owned()
    } else {
        statement.summary.clone()
    };
    let tracer = opentelemetry::global::tracer("nats-mesh");
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_start_time(start)
        .with_attributes([
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.operation.name", operation),
            KeyValue::new("db.query.summary", statement.summary.clone()),
            KeyValue::new("db.query.text", text),
            KeyValue::new(SERVICE_FIELD, service.to_owned()),
            KeyValue::new(
                "db.response.returned_rows",
                i64::try_from(statement.rows_returned).unwrap_or(i64::MAX),
            ),
            KeyValue::new(
                "db.response.affected_rows",
                i64::try_from(statement.rows_affected).unwrap_or(i64::MAX),
            ),
        ])
        .start_with_context(&tracer, &parent);
    span.end_with_timestamp(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_a_bounded_set() {
        assert_eq!(operation("select id from users"), "SELECT");
        assert_eq!(operation("INSERT INTO chat.messages (id, …"), "INSERT");
        assert_eq!(operation("COMMIT"), "COMMIT");
        assert_eq!(operation("VACUUM users"), "OTHER");
        assert_eq!(operation(""), "OTHER");
    }
}
