//! The one error type of service handlers: a wire error, a database failure or an internal
//! failure, turned into the `ServiceError` the caller sees in one place, where each 5xx is
//! logged once with its cause (inside the request's span, so with its request id).

use mesh_contracts::{ErrorCode, ServiceError};

/// Why a handler (or anything it calls) failed. `?` converts database errors and
/// `ServiceError`s into it, and it converts back into a `ServiceError` (logging the cause of
/// a server-side failure) when the answer is written.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// A refusal or failure already expressed as a wire error (a domain rule, a callee's
    /// answer mapped by `RpcError::into_service_error`).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Anything else that should not have happened.
    #[error("internal: {0}")]
    Internal(String),
}

impl Fault {
    /// An internal failure with its cause (logged, never shown to the caller).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Fault::Internal(cause.to_string())
    }

    /// What each of several callers answers when one statement run for all of them failed
    /// (its cause is logged once, by whoever ran it): 503 when Postgres is unreachable or
    /// saturated, 500 otherwise.
    pub fn shared(err: &sqlx::Error) -> Self {
        if is_unavailable(err) {
            Fault::Service(ServiceError::new(
                ErrorCode::ServiceUnavailable,
                "storage is unavailable; try again",
            ))
        } else {
            Fault::Internal(format!("database: {err}"))
        }
    }

    /// The wire code this fault answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Fault::Service(err) => err.code,
            Fault::Database(err) if is_unavailable(err) => ErrorCode::ServiceUnavailable,
            Fault::Database(_) | Fault::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Postgres unreachable, saturated or restarting is something the client may retry (503); any
/// other database error is a bug or a broken invariant (500).
fn is_unavailable(err: &sqlx::Error) -> bool {
    is_transient(err)
}

/// True when a statement failed because Postgres is away or busy, not because of what it was
/// asked: no connection (pool timeout or closed, I/O, TLS), SQLSTATE classes 08 connection
/// exception, 40 transaction rollback (serialization failure, deadlock), 53 insufficient
/// resources, 57 operator intervention (a shutdown, not a statement timeout), 58 system error, and
/// 55P03 lock not available. The same statement may pass later; anything else (a bug, a row
/// that contradicts the statement) fails again however often it is tried.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // Not 57014, a statement timeout: the same statement on the same data overruns again.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code == "55P03"
                || (code != "57014"
                    && ["08", "40", "53", "57", "58"]
                        .iter()
                        .any(|c| code.starts_with(c)))
        }),
        _ => false,
    }
}

impl From<Fault> for ServiceError {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::Service(err) => {
                if !err.is_client_error() {
                    tracing::warn!(code = %err.code, message = %err.message, "answered with a server error");
                }
                err
            }
            Fault::Database(err) if is_unavailable(&err) => {
                tracing::error!(error = %err, "database unavailable");
                ServiceError::new(
                    ErrorCode::ServiceUnavailable,
                    "storage is unavailable; try again",
                )
            }
            Fault::Database(err) => {
                tracing::error!(error = %err, "database error");
                ServiceError::internal()
            }
            Fault::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                ServiceError::internal()
            }
        }
    }
}

/// A field failed to parse: 400 `validation_failed` naming the field.
pub fn invalid(field: &str, why: &str) -> ServiceError {
    ServiceError::new(ErrorCode::ValidationFailed, format!("{field}: {why}"))
}

/// Something the caller named does not exist (or is not theirs to see): 404.
pub fn not_found(what: &str) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, format!("no such {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_map_to_wire_codes_in_one_place() {
        let refused = Fault::from(ServiceError::new(ErrorCode::Blocked, "blocked"));
        assert_eq!(refused.code(), ErrorCode::Blocked);
        assert_eq!(
            ServiceError::from(refused),
            ServiceError::new(ErrorCode::Blocked, "blocked")
        );

        let away = Fault::from(sqlx::Error::PoolTimedOut);
        assert_eq!(away.code(), ErrorCode::ServiceUnavailable);
        assert_eq!(ServiceError::from(away).code, ErrorCode::ServiceUnavailable);

        let broken = Fault::from(sqlx::Error::RowNotFound);
        assert_eq!(broken.code(), ErrorCode::Internal);
        let answered = ServiceError::from(broken);
        assert_eq!(
            answered,
            ServiceError::internal(),
            "no cause reaches the caller"
        );

        let bug = ServiceError::from(Fault::internal("secret detail"));
        assert!(!bug.message.contains("secret"));

        // Callers of one failed shared statement answer as one caller would.
        let shared = Fault::shared(&sqlx::Error::PoolTimedOut);
        assert_eq!(shared.code(), ErrorCode::ServiceUnavailable);
        let shared = ServiceError::from(Fault::shared(&sqlx::Error::RowNotFound));
        assert_eq!(shared, ServiceError::internal());
    }

    #[test]
    fn the_shared_refusals_name_what_failed() {
        let err = invalid("limit", "must be 1 to 100");
        assert_eq!(err.code, ErrorCode::ValidationFailed);
        assert_eq!(err.message, "limit: must be 1 to 100");
        assert_eq!(not_found("group").code, ErrorCode::NotFound);
        assert_eq!(not_found("group").message, "no such group");
    }
}
