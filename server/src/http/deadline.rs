//! `X-Heie-Timeout-Ms: N`, the HTTP form of gRPC's `grpc-timeout`: the request must finish within N
//! milliseconds of arriving, or it ends with DEADLINE_EXCEEDED and its work is cancelled.

use std::time::Duration;

use axum::http::HeaderMap;
use tokio::time::Instant;
use crate::serving::Code;

use super::error::ApiError;

/// The header's name.
pub(super) const HEADER: &str = "x-heie-timeout-ms";

/// The request's deadline, `None` without the header; a malformed value is the client's error.
pub(super) fn from_headers(headers: &HeaderMap) -> Result<Option<Instant>, ApiError> {
    let Some(value) = headers.get(HEADER) else { return Ok(None) };
    let ms = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0 && *ms <= 24 * 3600 * 1000)
        .ok_or_else(|| {
            ApiError::new(Code::InvalidArgument, "X-Heie-Timeout-Ms: must be a whole number of milliseconds, 1..=86400000")
        })?;
    Ok(Some(Instant::now() + Duration::from_millis(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_milliseconds_and_refuses_anything_else() {
        let mut h = HeaderMap::new();
        assert!(from_headers(&h).unwrap().is_none());
        h.insert(HEADER, "1500".parse().unwrap());
        let at = from_headers(&h).unwrap().unwrap();
        let left = at - Instant::now();
        assert!(left > Duration::from_millis(1400) && left <= Duration::from_millis(1500), "{left:?}");
        for bad in ["", "0", "-5", "1.5", "10s", "99999999999"] {
            h.insert(HEADER, bad.parse().unwrap());
            assert!(from_headers(&h).is_err(), "{bad:?}");
        }
    }
}
