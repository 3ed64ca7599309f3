//! The admin API's error answer: a JSON `{error, message}` (with the `problems` of a refused
//! reload), and the status each kind of store error maps to: an unreachable database 503, a
//! name or id conflict and a read-only token 409, an unknown token 404, bad input 400, a change
//! beyond the acting token's rights 403, refused token files 422.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::store::db::DbError;
use crate::store::{ChangeError, StoreError};

/// A JSON error answer `{error, message}`, with the `problems` of a refused reload.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    problems: Option<Vec<String>>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            problems: None,
        }
    }

    pub(super) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "message": self.message});
        if let Some(problems) = self.problems {
            body["problems"] = json!(problems);
        }
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tollgate-admin\""),
            );
        }
        r
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                e.to_string(),
            ),
            DbError::DuplicateName(_) | DbError::DuplicateId(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            DbError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            DbError::Url(_) | DbError::Corrupt { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        let (status, code) = match e {
            ChangeError::Invalid(_) | ChangeError::Hash(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            ChangeError::ExceedsActor(_) => (StatusCode::FORBIDDEN, "exceeds_actor"),
            ChangeError::ReadOnly { .. } => (StatusCode::CONFLICT, "read_only"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// A refused reload: 503 when the database is unreachable, else 422 (the token files, or the
/// loader); either way with every problem, and the last good token set keeps serving.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let mut answer = if e.is_database_outage() {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                format!("{e}; the last good token set keeps serving"),
            )
        } else {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reload_failed",
                "the token set was refused; the last good one keeps serving",
            )
        };
        answer.problems = Some(e.problems());
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileRefused;
    use crate::token::Source;

    #[test]
    fn errors_answer_by_kind() {
        let down = || DbError::Unavailable("connection refused".into());
        let files = StoreError::TokenFiles {
            files: vec![FileRefused::one("t.yaml", "bad")],
            conflicts: vec![],
            rebuild: None,
        };
        let cases: Vec<(ApiError, StatusCode, &str)> = vec![
            (
                down().into(),
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
            ),
            (
                DbError::DuplicateName("a".into()).into(),
                StatusCode::CONFLICT,
                "conflict",
            ),
            (
                DbError::DuplicateId("a".into()).into(),
                StatusCode::CONFLICT,
                "conflict",
            ),
            (
                DbError::NotFound("a".into()).into(),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                ChangeError::Invalid("name".into()).into(),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                ChangeError::ExceedsActor("wider".into()).into(),
                StatusCode::FORBIDDEN,
                "exceeds_actor",
            ),
            (
                ChangeError::ReadOnly {
                    name: "f".into(),
                    origin: Source::File("t.yaml".into()),
                }
                .into(),
                StatusCode::CONFLICT,
                "read_only",
            ),
            (
                StoreError::from(down()).into(),
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
            ),
            (
                files.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "reload_failed",
            ),
            (
                StoreError::Loader("stopped").into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "reload_failed",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status, e.code), (status, code), "{e:?}");
        }
        let refused = ApiError::from(StoreError::from(down()));
        assert_eq!(
            refused.problems.as_deref(),
            Some(&["the token database is unavailable: connection refused".to_string()][..])
        );
    }
}
