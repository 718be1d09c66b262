//! The service's error type and its mapping to gRPC status codes, written once.
//!
//! Every RPC fails through [`ServiceError`], so a client sees the same code for the same cause
//! whichever method it called. Internal details go to the log; the client gets one clean line.

use tonic::{Code, Status};

use crate::engine::EngineError;
use crate::pipeline::PipelineError;

/// Why a request could not be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceError {
    /// A request field is missing, malformed or out of range; `field` is its path in the request,
    /// e.g. `images[3].raw.pixels`.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The engine's admission queue is full.
    #[error("the server is busy: {0}; retry later")]
    QueueFull(String),
    /// The model is still loading or warming up.
    #[error("the model is not ready yet (loading or warming up); retry later")]
    NotReady,
    /// The server is shutting down: the request arrived after shutdown began, or was still running
    /// when the grace period ended.
    #[error("the server is shutting down; retry on another server")]
    ShuttingDown,
    /// The request was still queued (never started) when the server began shutting down.
    #[error("the server is shutting down and did not start this request; retry it on another server")]
    NotStarted,
    /// A thread the server cannot run without died; the process exits so a supervisor restarts it.
    #[error("the server's engine stopped ({0}); it is restarting, retry shortly")]
    EngineDied(String),
    /// The call carries no valid API key (`authorization: Bearer KEY`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The client's grpc-timeout passed before the request finished.
    #[error("the deadline passed before the evaluation finished")]
    DeadlineExceeded,
    /// The evaluation was cancelled before it finished.
    #[error("the evaluation was cancelled")]
    Cancelled,
    /// The client took no event for `--stall-timeout` seconds while events waited: cancelled to
    /// free its slot.
    #[error("the client read nothing for {0} s while events waited; the evaluation was cancelled to free its slot")]
    Stalled(f64),
    /// Anything else: a failed decode, a broken engine. The message is one clean line.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, reason: impl ToString) -> ServiceError {
        ServiceError::InvalidArgument { field: field.into(), reason: reason.to_string() }
    }

    /// An internal failure: the full detail is logged here, the client gets its first line only.
    pub fn internal(detail: impl std::fmt::Display) -> ServiceError {
        let detail = detail.to_string();
        tracing::error!(%detail, "internal error");
        ServiceError::Internal(clean_message(&detail))
    }

    pub fn code(&self) -> Code {
        match self {
            ServiceError::InvalidArgument { .. } => Code::InvalidArgument,
            ServiceError::QueueFull(_) => Code::ResourceExhausted,
            ServiceError::NotReady
            | ServiceError::ShuttingDown
            | ServiceError::NotStarted
            | ServiceError::EngineDied(_) => Code::Unavailable,
            ServiceError::Unauthenticated(_) => Code::Unauthenticated,
            ServiceError::DeadlineExceeded => Code::DeadlineExceeded,
            ServiceError::Cancelled | ServiceError::Stalled(_) => Code::Cancelled,
            ServiceError::Internal(_) => Code::Internal,
        }
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> ServiceError {
        match e {
            EngineError::QueueFull(_) => ServiceError::QueueFull(e.to_string()),
            EngineError::Stopped | EngineError::ShuttingDown => ServiceError::ShuttingDown,
            EngineError::ContextFull(_) => ServiceError::invalid("options.max_tiles", e),
            other => ServiceError::internal(other),
        }
    }
}

impl From<PipelineError> for ServiceError {
    fn from(e: PipelineError) -> ServiceError {
        match e {
            // Images and options are validated at the edge (convert.rs) with their wire field
            // names; these arms only catch what slipped past, still as the client's fault.
            PipelineError::Image(e) => ServiceError::invalid("image", e),
            PipelineError::Options(e) => ServiceError::invalid(format!("options.{}", e.field), e.reason),
            PipelineError::Engine(e) => e.into(),
        }
    }
}

/// One line, no control characters, bounded length: safe to hand to any client.
pub fn clean_message(detail: &str) -> String {
    const MAX: usize = 300;
    let line = detail.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("unknown failure");
    let mut out: String = line.chars().filter(|c| !c.is_control()).collect();
    if out.len() > MAX {
        let mut cut = MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// The canonical upper-case name of a code, the label of the `requests` metric.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_has_its_code_and_messages_are_one_clean_line() {
        assert_eq!(Status::from(ServiceError::invalid("image.encoded", "bad")).code(), Code::InvalidArgument);
        assert_eq!(Status::from(ServiceError::from(EngineError::QueueFull(3))).code(), Code::ResourceExhausted);
        assert_eq!(Status::from(ServiceError::NotReady).code(), Code::Unavailable);
        assert_eq!(Status::from(ServiceError::DeadlineExceeded).code(), Code::DeadlineExceeded);
        assert_eq!(Status::from(ServiceError::Cancelled).code(), Code::Cancelled);
        assert_eq!(Status::from(ServiceError::NotStarted).code(), Code::Unavailable);
        assert_eq!(Status::from(ServiceError::EngineDied("panicked".into())).code(), Code::Unavailable);
        assert_eq!(Status::from(ServiceError::Unauthenticated("no key".into())).code(), Code::Unauthenticated);
        let internal = Status::from(ServiceError::internal("decode failed\n  at frame 3\u{7}"));
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(internal.message(), "internal error: decode failed");
        let long = clean_message(&"é".repeat(400));
        assert!(long.len() <= 304 && long.ends_with('…'));
        let s = Status::from(ServiceError::invalid("images[3].raw.pixels", "too short"));
        assert_eq!(s.message(), "images[3].raw.pixels: too short");
    }
}
