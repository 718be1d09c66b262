//! The servers `heie bench --addr` drives: one or several replicas, given as `host:port` (every address
//! the name resolves to is a replica, as gRPC's DNS balancing sees it), `dns:///host:port` (the same,
//! spelt as gRPC clients do), or a comma list of those. Benchmark clients are spread over them in turn.

use std::net::SocketAddr;

use anyhow::Context as _;

/// Splits and checks the `--addr` values, without resolving them.
pub fn parse_targets(values: &[String]) -> anyhow::Result<Vec<String>> {
    let mut targets = Vec::new();
    for value in values.iter().flat_map(|v| v.split(',')) {
        let value = value.trim();
        anyhow::ensure!(!value.is_empty(), "--addr: empty address (stray comma?)");
        let host_port = value.strip_prefix("dns:///").unwrap_or(value);
        anyhow::ensure!(!host_port.contains("://"), "--addr {value:?}: expected host:port or dns:///host:port");
        let (host, port) = host_port.rsplit_once(':').with_context(|| format!("--addr {value:?}: expected host:port"))?;
        anyhow::ensure!(!host.is_empty(), "--addr {value:?}: expected host:port");
        anyhow::ensure!(port.parse::<u16>().is_ok_and(|p| p > 0), "--addr {value:?}: port must be 1..65535");
        targets.push(host_port.to_string());
    }
    anyhow::ensure!(!targets.is_empty(), "--addr: no address");
    Ok(targets)
}

/// Resolves every target to all of its addresses (duplicates dropped, order kept).
pub async fn resolve_targets(targets: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for target in targets {
        let resolved = tokio::net::lookup_host(target).await.with_context(|| format!("--addr {target}: cannot resolve"))?;
        let mut any = false;
        for addr in resolved {
            any = true;
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        anyhow::ensure!(any, "--addr {target}: resolved to no address");
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lists_and_dns_targets() {
        let values = vec!["127.0.0.1:1,dns:///localhost:2".to_string(), "[::1]:3".to_string()];
        assert_eq!(parse_targets(&values).unwrap(), vec!["127.0.0.1:1", "localhost:2", "[::1]:3"]);
    }

    #[test]
    fn refuses_bad_addresses_by_name() {
        for (bad, why) in [("a:1,,b:2", "empty"), ("host", "host:port"), ("h:0", "port"), ("h:x", "port"), ("http://h:1", "expected")] {
            let err = parse_targets(&[bad.to_string()]).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn resolves_every_address_once() {
        let targets = parse_targets(&["127.0.0.1:5,127.0.0.1:5,127.0.0.1:6".to_string()]).unwrap();
        let addrs = resolve_targets(&targets).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:5".parse().unwrap(), "127.0.0.1:6".parse().unwrap()]);
    }
}
