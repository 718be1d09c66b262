//! The API key check on the gRPC port: a tonic interceptor over the core's [`ApiKeys::check`], so
//! both ports accept exactly the same keys.

use tonic::{Request, Status};

use crate::serving::ApiKeys;

/// An interceptor that runs [`ApiKeys::check`] on the call's `authorization` metadata.
pub fn interceptor(keys: ApiKeys) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |request: Request<()>| {
        let header = request.metadata().get("authorization").map(|v| v.to_str().unwrap_or(""));
        match keys.check(header) {
            Ok(()) => Ok(request),
            Err(e) => {
                let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
                tracing::info!(%peer, reason = %e, "call refused: unauthenticated");
                Err(super::status::status(e))
            }
        }
    }
}
