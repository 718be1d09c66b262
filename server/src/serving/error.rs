//! Why a request could not be served, and the [`Code`] of each cause, decided once here.
//!
//! Every call fails through [`ServingError`], so a client sees the same code for the same cause
//! whichever method or port it called (`grpc/status.rs` and `http/error.rs` only translate the code).
//! Internal details go to the log; the client gets one clean line.

use super::code::Code;

use crate::engine::EngineError;
use crate::pipeline::PipelineError;

/// Why a request could not be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServingError {
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
    /// The request may not be made from where it comes from (a foreign `Host`, a cross-site
    /// `Origin`: the HTTP edge's checks).
    #[error("{0}")]
    Forbidden(String),
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

impl ServingError {
    pub fn invalid(field: impl Into<String>, reason: impl ToString) -> ServingError {
        ServingError::InvalidArgument { field: field.into(), reason: reason.to_string() }
    }

    /// An internal failure: the full detail is logged here, the client gets its first line only.
    pub fn internal(detail: impl std::fmt::Display) -> ServingError {
        let detail = detail.to_string();
        tracing::error!(%detail, "internal error");
        ServingError::Internal(clean_message(&detail))
    }

    pub fn code(&self) -> Code {
        match self {
            ServingError::InvalidArgument { .. } => Code::InvalidArgument,
            ServingError::QueueFull(_) => Code::ResourceExhausted,
            ServingError::NotReady
            | ServingError::ShuttingDown
            | ServingError::NotStarted
            | ServingError::EngineDied(_) => Code::Unavailable,
            ServingError::Unauthenticated(_) => Code::Unauthenticated,
            ServingError::Forbidden(_) => Code::PermissionDenied,
            ServingError::DeadlineExceeded => Code::DeadlineExceeded,
            ServingError::Cancelled | ServingError::Stalled(_) => Code::Cancelled,
            ServingError::Internal(_) => Code::Internal,
        }
    }
}

impl From<EngineError> for ServingError {
    fn from(e: EngineError) -> ServingError {
        match e {
            EngineError::QueueFull(_) => ServingError::QueueFull(e.to_string()),
            EngineError::Stopped | EngineError::ShuttingDown => ServingError::ShuttingDown,
            EngineError::ContextFull(_) => ServingError::invalid("options.max_tiles", e),
            other => ServingError::internal(other),
        }
    }
}

impl From<PipelineError> for ServingError {
    fn from(e: PipelineError) -> ServingError {
        match e {
            // Images and options are validated once (requests.rs) with their wire field
            // names; these arms only catch what slipped past, still as the client's fault.
            PipelineError::Image(e) => ServingError::invalid("image", e),
            PipelineError::Options(e) => ServingError::invalid(format!("options.{}", e.field), e.reason),
            PipelineError::Engine(e) => e.into(),
            e @ PipelineError::WrongImage { .. } => ServingError::internal(e),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_has_its_code_and_messages_are_one_clean_line() {
        assert_eq!(ServingError::invalid("image.encoded", "bad").code(), Code::InvalidArgument);
        assert_eq!(ServingError::from(EngineError::QueueFull(3)).code(), Code::ResourceExhausted);
        assert_eq!(ServingError::NotReady.code(), Code::Unavailable);
        assert_eq!(ServingError::DeadlineExceeded.code(), Code::DeadlineExceeded);
        assert_eq!(ServingError::Cancelled.code(), Code::Cancelled);
        assert_eq!(ServingError::NotStarted.code(), Code::Unavailable);
        assert_eq!(ServingError::EngineDied("panicked".into()).code(), Code::Unavailable);
        assert_eq!(ServingError::Unauthenticated("no key".into()).code(), Code::Unauthenticated);
        let internal = ServingError::internal("decode failed\n  at frame 3\u{7}");
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(internal.to_string(), "internal error: decode failed");
        let long = clean_message(&"é".repeat(400));
        assert!(long.len() <= 304 && long.ends_with('…'));
        let s = ServingError::invalid("images[3].raw.pixels", "too short");
        assert_eq!(s.to_string(), "images[3].raw.pixels: too short");
    }
}
