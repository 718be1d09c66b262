//! The `Host` check (`--allowed-hosts`), against DNS rebinding.
//!
//! A page on `evil.example` can make its own name resolve to this server's address (a short DNS TTL,
//! then a private address), and the browser then treats our answers as `evil.example`'s own: same
//! origin, readable by the attacker's script. The one thing the browser cannot hide is the name it
//! thinks it is talking to: it sends `Host: evil.example`. So every request but `/healthz` (which
//! orchestrators probe by address, and which reveals nothing) must name a host this server answers for.
//!
//! The list always holds the names that cannot be rebound by someone else: `localhost`, the
//! loopback addresses and the bound address. An IP address in `Host` can never be a rebinding attack
//! (rebinding needs a DNS name the attacker controls), so a server bound to all interfaces
//! (`0.0.0.0`, `[::]`) accepts any address; names (`judge.lan`) must be listed. Behind a
//! reverse proxy that checks `Host` itself, `--allowed-hosts '*'` turns the check off.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::HOST;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::serving::ServingError;

use super::error::ApiError;
use super::AppState;

/// Which `Host` values the port answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    /// `*` was given: no check.
    any: bool,
    /// Any IP-address host (the server is bound to all interfaces).
    any_ip: bool,
    /// Lower-case names and addresses (IPv6 in brackets), without ports.
    names: Vec<String>,
}

impl AllowedHosts {
    /// The defaults plus the hosts of `--allowed-hosts` for a port bound to `bound`.
    /// Entries are host names or addresses without a port, or `*`.
    pub fn new(configured: &[String], bound: SocketAddr) -> Result<AllowedHosts, String> {
        if configured.iter().any(|h| h == "*") {
            return Ok(AllowedHosts { any: true, any_ip: true, names: Vec::new() });
        }
        // Listed names come on top of the defaults: those can never be rebound by someone else.
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"].map(String::from).to_vec();
        let any_ip = bound.ip().is_unspecified();
        if !any_ip {
            names.push(host_of_ip(bound.ip()));
        }
        for entry in configured {
            names.push(normalize(entry)?);
        }
        Ok(AllowedHosts { any: false, any_ip, names })
    }

    /// Whether a request with this `Host` header value may be answered.
    pub fn allows(&self, host_header: &str) -> bool {
        if self.any {
            return true;
        }
        let host = strip_port(host_header).to_ascii_lowercase();
        if self.any_ip && parse_ip(&host).is_some() {
            return true;
        }
        self.names.iter().any(|n| *n == host)
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → the host part.
fn strip_port(value: &str) -> &str {
    if value.starts_with('[') {
        return value.find(']').map_or(value, |end| &value[..=end]);
    }
    match value.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => value,
    }
}

fn parse_ip(host: &str) -> Option<IpAddr> {
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).parse().ok()
}

fn host_of_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// One `--allowed-hosts` entry in the form `Host` values are compared with.
fn normalize(entry: &str) -> Result<String, String> {
    let entry = entry.trim();
    if let Some(ip) = parse_ip(entry) {
        return Ok(host_of_ip(ip));
    }
    let valid = !entry.is_empty() && entry.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(format!("--allowed-hosts: {entry:?} is not a host name or address (give it without scheme or port, or `*`)"));
    }
    Ok(entry.to_ascii_lowercase())
}

/// Refuses (403, PERMISSION_DENIED) a request whose `Host` is not allowed, or that has none.
pub(super) async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let host = request.headers().get(HOST).and_then(|v| v.to_str().ok());
    if host.is_some_and(|h| state.hosts.allows(h)) {
        return next.run(request).await;
    }
    let message = match host {
        Some(h) => format!(
            "this server does not answer for the host {:?}; if that name is really this server, start it with --allowed-hosts {}",
            h,
            strip_port(h)
        ),
        None => "the request has no Host header".to_string(),
    };
    let error = ServingError::Forbidden(message);
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    state.serving.record_refusal(super::access::rpc_of(request.uri().path()), peer, &error);
    ApiError::from(error).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(a: &str) -> SocketAddr {
        a.parse().unwrap()
    }

    #[test]
    fn the_default_list_is_loopback_and_the_bound_address() {
        let hosts = AllowedHosts::new(&[], bound("192.168.1.5:8080")).unwrap();
        for ok in ["localhost", "localhost:8080", "LOCALHOST", "127.0.0.1:8080", "[::1]:8080", "[::1]", "192.168.1.5:8080"] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for refused in ["evil.example:8080", "evil.example", "192.168.1.6:8080", "localhost.evil.example", "", "[::2]"] {
            assert!(!hosts.allows(refused), "{refused}");
        }
    }

    #[test]
    fn a_wildcard_bind_allows_any_address_but_no_name() {
        let hosts = AllowedHosts::new(&[], bound("0.0.0.0:8080")).unwrap();
        assert!(hosts.allows("10.1.2.3:8080") && hosts.allows("[fe80::1]:8080") && hosts.allows("localhost"));
        assert!(!hosts.allows("judge.lan:8080") && !hosts.allows("rebind.evil.example:8080"));
    }

    #[test]
    fn listed_names_add_to_the_defaults_and_star_allows_all() {
        let hosts = AllowedHosts::new(&["Judge.LAN".into(), "::2".into()], bound("127.0.0.1:8080")).unwrap();
        assert!(hosts.allows("judge.lan:8080") && hosts.allows("[::2]:1"));
        assert!(hosts.allows("localhost") && !hosts.allows("other.lan"));
        assert!(AllowedHosts::new(&["*".into()], bound("127.0.0.1:1")).unwrap().allows("anything.example"));
        assert!(AllowedHosts::new(&["http://judge.lan".into()], bound("127.0.0.1:1")).is_err());
        assert!(AllowedHosts::new(&["judge.lan:8080".into()], bound("127.0.0.1:1")).is_err());
    }
}
