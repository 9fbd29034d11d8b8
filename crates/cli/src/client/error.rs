//! What can go wrong in a client command, and how it is told: one line per problem on
//! stderr, `portcullis: <command>: <what>`, never a panic or a stack trace.

use std::error::Error as _;
use std::fmt::Write as _;
use std::time::Duration;

use portcullis_engine::policy::FieldError;
use tonic::{Code, Status};

use super::duration::format_duration;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad local input: a flag, a file, a missing key.
    #[error("{0}")]
    Input(String),
    /// A document that the engine refused before anything was sent.
    #[error("{source_name}: {} field error(s)", errors.len())]
    Invalid {
        /// The file the document came from (`-` for standard input).
        source_name: String,
        /// Every problem found.
        errors: Vec<FieldError>,
    },
    /// The server could not be reached at all.
    #[error("cannot reach {server}: {reason}")]
    Connect {
        /// The server URL.
        server: String,
        /// Why, as one line.
        reason: String,
    },
    /// The server (or the transport, mid-call) answered with an error status.
    #[error("{}", status_text(.status, *.timeout))]
    Rpc {
        /// The status.
        status: Box<Status>,
        /// The per-call deadline, named when it was exceeded.
        timeout: Duration,
    },
    /// Standard output could not be written.
    #[error("writing output: {0}")]
    Output(std::io::Error),
}

impl ClientError {
    /// An input error.
    pub fn input(message: impl Into<String>) -> ClientError {
        ClientError::Input(message.into())
    }

    /// The lines to print, each to be prefixed with `portcullis: <command>: `. A multi-line
    /// server message (several field errors) gives one line per field error.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ClientError::Invalid { source_name, errors } if !errors.is_empty() => errors
                .iter()
                .map(|e| format!("{source_name}: {}", one_line(&e.to_string())))
                .collect(),
            ClientError::Rpc { status, timeout } => {
                let text = status_text(status, *timeout);
                let lines: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
                if lines.is_empty() {
                    vec![code_text(status.code()).to_owned()]
                } else {
                    lines
                }
            }
            other => vec![one_line(&other.to_string())],
        }
    }
}

/// A status as text: the server's message (or the code's meaning when it sent none), the
/// transport's cause when there is one, the deadline when it was exceeded.
pub fn status_text(status: &Status, timeout: Duration) -> String {
    let message = status.message().trim();
    // tonic's client-side timeout is a Cancelled status with this message.
    let timed_out =
        status.code() == Code::DeadlineExceeded || (status.code() == Code::Cancelled && message == "Timeout expired");
    if timed_out {
        return format!("no answer within {} (see --timeout)", format_duration(timeout));
    }
    let mut text = if message.is_empty() {
        code_text(status.code()).to_owned()
    } else {
        message.to_owned()
    };
    // Transport failures carry the real cause (connection refused, TLS) as the source.
    let mut source = status.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    match status.code() {
        Code::Unauthenticated => {
            let _ = write!(text, " (check --api-key / PORTCULLIS_API_KEY)");
        }
        Code::Unavailable if message.is_empty() || message.contains("error") => {
            let _ = write!(text, " (is the server running? see --server)");
        }
        _ => {}
    }
    text
}

/// What a status code means, for a status without a message.
pub fn code_text(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "not implemented by this server",
        Code::Internal => "internal server error",
        Code::Unavailable => "server unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "not authenticated",
    }
}

/// `text` with its line breaks and tabs turned into spaces.
pub fn one_line(text: &str) -> String {
    text.split(['\n', '\r', '\t'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn rpc(status: Status) -> ClientError {
        ClientError::Rpc {
            status: Box::new(status),
            timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_status_message_is_printed_as_the_server_sent_it() {
        let e = rpc(Status::invalid_argument(
            "prod.strict: default.rules[0].action: unknown variant `blok`",
        ));
        assert_eq!(
            e.lines(),
            vec!["prod.strict: default.rules[0].action: unknown variant `blok`"]
        );
    }

    #[test]
    fn a_multi_line_status_message_gives_one_line_per_field_error() {
        let e = rpc(Status::invalid_argument(
            "name: must not be empty\n\ndefault.rules[1].type: unknown\n",
        ));
        assert_eq!(
            e.lines(),
            vec!["name: must not be empty", "default.rules[1].type: unknown"]
        );
    }

    #[test]
    fn a_status_without_message_says_what_its_code_means() {
        assert_eq!(rpc(Status::new(Code::NotFound, "")).lines(), vec!["not found"]);
        assert_eq!(
            rpc(Status::new(Code::PermissionDenied, "  ")).lines(),
            vec!["permission denied"]
        );
    }

    #[test]
    fn an_exceeded_deadline_names_the_timeout() {
        let lines = rpc(Status::cancelled("Timeout expired")).lines();
        assert_eq!(lines, vec!["no answer within 30s (see --timeout)"]);
        let lines = rpc(Status::deadline_exceeded("")).lines();
        assert_eq!(lines, vec!["no answer within 30s (see --timeout)"]);
    }

    #[test]
    fn an_unauthenticated_status_points_at_the_key() {
        let lines = rpc(Status::unauthenticated("invalid API key")).lines();
        assert_eq!(lines, vec!["invalid API key (check --api-key / PORTCULLIS_API_KEY)"]);
    }

    #[test]
    fn local_field_errors_name_the_file_and_the_path_one_per_line() {
        let e = ClientError::Invalid {
            source_name: "p.yaml".to_owned(),
            errors: vec![
                FieldError::new("default.rules[0].action", "unknown variant `blok`"),
                FieldError::new("name", "must not be\nempty"),
            ],
        };
        assert_eq!(
            e.lines(),
            vec![
                "p.yaml: default.rules[0].action: unknown variant `blok`",
                "p.yaml: name: must not be empty"
            ]
        );
    }

    #[test]
    fn connect_and_input_errors_are_single_lines() {
        let e = ClientError::Connect {
            server: "http://127.0.0.1:1".to_owned(),
            reason: "connection refused".to_owned(),
        };
        assert_eq!(e.lines(), vec!["cannot reach http://127.0.0.1:1: connection refused"]);
        assert_eq!(ClientError::input("a\nb").lines(), vec!["a b"]);
    }

    #[test]
    fn a_transport_failure_shows_its_cause_once() {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let mut status = Status::unavailable("transport error");
        status.set_source(std::sync::Arc::new(cause));
        let text = status_text(&status, Duration::from_secs(1));
        assert_eq!(
            text,
            "transport error: connection refused (is the server running? see --server)"
        );
        let repeated = Status::from_error(Box::new(std::io::Error::other("connection refused")));
        let text = status_text(&repeated, Duration::from_secs(1));
        assert_eq!(text, "connection refused");
    }
}
