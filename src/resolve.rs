//! Where a backend's `host:port` leads: the addresses of a hosts file first
//! (`[pool] hosts_file`, read at each lookup, in the file's order), then the
//! system resolver's, in its order. An IP address leads to itself.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The addresses `address` (`host:port`) resolves to now, in order.
pub async fn addresses(address: &str, hosts_file: Option<&Path>) -> io::Result<Vec<SocketAddr>> {
    if let Ok(literal) = address.parse::<SocketAddr>() {
        return Ok(vec![literal]);
    }
    if let (Some(file), Some((host, port))) = (hosts_file, split(address)) {
        let text = tokio::fs::read_to_string(file).await?;
        let pinned = from_hosts(&text, host, port);
        if !pinned.is_empty() {
            return Ok(pinned);
        }
    }
    Ok(tokio::net::lookup_host(address).await?.collect())
}

/// Whether `address` names a host (rather than giving an IP address): what
/// it leads to can change while the proxy runs.
pub fn is_name(address: &str) -> bool {
    address.parse::<SocketAddr>().is_err()
}

/// `host:port` as its parts; `None` without a valid port.
fn split(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

/// The addresses a hosts file (lines of `address name [name...]`, `#` to
/// the end of a line a comment, as /etc/hosts) gives `host`, with `port`.
pub fn from_hosts(text: &str, host: &str, port: u16) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            let ip: IpAddr = words.next()?.parse().ok()?;
            words
                .any(|name| name.eq_ignore_ascii_case(host))
                .then_some(SocketAddr::new(ip, port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_file_gives_every_address_of_a_name_in_its_order() {
        let text = "# pinned for the test\n127.0.0.2 redis.test other\n\n::1 v6.test\nnonsense line\n127.0.0.3 REDIS.test # a second one\n";
        let found = from_hosts(text, "redis.test", 7000);
        assert_eq!(
            found,
            vec![
                "127.0.0.2:7000".parse().unwrap(),
                "127.0.0.3:7000".parse().unwrap()
            ]
        );
        assert_eq!(
            from_hosts(text, "v6.test", 1),
            vec!["[::1]:1".parse().unwrap()]
        );
        assert!(from_hosts(text, "missing.test", 1).is_empty());
        assert!(
            from_hosts(text, "pinned", 1).is_empty(),
            "comments are not names"
        );
    }

    #[test]
    fn ip_addresses_are_not_names() {
        assert!(!is_name("127.0.0.1:6379"));
        assert!(!is_name("[::1]:6379"));
        assert!(is_name("redis.internal:6379"));
        assert!(is_name("localhost:6379"));
    }

    #[tokio::test]
    async fn a_pinned_name_resolves_from_the_file_and_others_from_the_system() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "127.0.0.2 redis.test\n").unwrap();
        let pinned = addresses("redis.test:7000", Some(&file)).await.unwrap();
        assert_eq!(pinned, vec!["127.0.0.2:7000".parse().unwrap()]);
        let literal = addresses("127.0.0.9:1", Some(&file)).await.unwrap();
        assert_eq!(literal, vec!["127.0.0.9:1".parse().unwrap()]);
        let system = addresses("localhost:7000", Some(&file)).await.unwrap();
        assert!(system
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 7000));
    }
}
