//! One call from its start to its end: its request-log line and its metrics, written once however
//! it ends (refused at the door, completed, failed, cancelled, stalled, past its deadline).

use std::net::SocketAddr;
use std::sync::Arc;

use super::code::Code;
use super::request_log::{self, RequestLog, SharedLog};
use super::{Serving, ServingError};

/// A call in progress.
pub(crate) struct Call {
    serving: Arc<Serving>,
    rpc: &'static str,
    log: SharedLog,
}

impl Call {
    pub fn start(serving: &Arc<Serving>, rpc: &'static str, peer: Option<SocketAddr>) -> Call {
        Call { serving: serving.clone(), rpc, log: RequestLog::start(rpc, peer) }
    }

    /// The call's log, which its images' tasks fill in as they run.
    pub fn log(&self) -> &SharedLog {
        &self.log
    }

    /// Refused before any work was done (not ready, busy, a bad request).
    pub fn rejected(self, error: &ServingError) {
        self.write("rejected", error.code());
    }

    /// Ended after its work started: `None` when it completed.
    pub fn ended(self, failure: Option<&ServingError>) {
        let code = failure.map_or(Code::Ok, ServingError::code);
        self.write(outcome(failure), code);
    }

    fn write(self, outcome: &str, code: Code) {
        self.serving.metrics.record_request(self.rpc, code);
        request_log::finish(&self.log, outcome, code);
    }
}

/// The request log's word for how a call that started ended.
fn outcome(failure: Option<&ServingError>) -> &'static str {
    match failure {
        None => "completed",
        Some(ServingError::Cancelled) => "cancelled",
        Some(ServingError::Stalled(_)) => "stalled",
        Some(ServingError::DeadlineExceeded) => "deadline",
        Some(ServingError::ShuttingDown) => "shutdown",
        Some(_) => "failed",
    }
}
