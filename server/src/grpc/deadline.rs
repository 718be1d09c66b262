//! The client's `grpc-timeout`, as a deadline the service enforces itself.
//!
//! tonic's transport also reads the header, but it only bounds the handler's future (not a stream)
//! and answers CANCELLED when it fires. The service answers DEADLINE_EXCEEDED, for streams too, and
//! cancels the engine work by dropping the request's event receiver. It fires a little before the
//! transport's own timer so the client always sees the precise code.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// How much earlier than the client's deadline the service gives up (see the module docs).
const MARGIN: Duration = Duration::from_millis(5);

/// The deadline of a request, or `None` when the client set none (or sent an unreadable one).
pub fn from_metadata(metadata: &MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let timeout = parse_timeout(value)?;
    Some(Instant::now() + timeout.saturating_sub(MARGIN))
}

/// Parses the gRPC wire form: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_malformed_values() {
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "10", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }
}
