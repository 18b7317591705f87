//! TCP keepalive as Redis sets it (its `tcp-keepalive`, anet.c's
//! `anetKeepAlive`): the first probe after `period` without traffic, then one
//! every third of it, and the connection given up after three unanswered.
//! A peer that vanished without a reset (its host down, a network cut) is
//! then noticed within about twice `period`, instead of never, on a
//! connection that only waits: a client blocked in BLPOP 0 (whose lease
//! would otherwise take an element for nobody), a blocking command or a
//! subscriber's link on a backend.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// When probes go out and how many may go unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probes {
    /// Without traffic this long, the first probe.
    pub idle: Duration,
    /// Then one every this long.
    pub interval: Duration,
    /// Unanswered probes that end the connection.
    pub count: u32,
}

/// Redis's probes for `period`, in whole seconds as the kernel counts them;
/// `None` for 0, keepalive off.
pub fn probes(period: Duration) -> Option<Probes> {
    let seconds = period.as_secs();
    (seconds > 0).then(|| Probes {
        idle: Duration::from_secs(seconds),
        interval: Duration::from_secs((seconds / 3).max(1)),
        count: 3,
    })
}

/// Turns keepalive on for `tcp` with Redis's probes for `period` (nothing
/// for 0).
pub fn set(tcp: &TcpStream, period: Duration) -> io::Result<()> {
    let Some(probes) = probes(period) else {
        return Ok(());
    };
    let keepalive = TcpKeepalive::new()
        .with_time(probes.idle)
        .with_interval(probes.interval)
        .with_retries(probes.count);
    SockRef::from(tcp).set_tcp_keepalive(&keepalive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_redis_s() {
        let secs = Duration::from_secs;
        assert_eq!(probes(Duration::ZERO), None);
        assert_eq!(probes(Duration::from_millis(900)), None);
        let default = probes(secs(300)).unwrap();
        assert_eq!(
            default,
            Probes {
                idle: secs(300),
                interval: secs(100),
                count: 3
            }
        );
        // A third of under three seconds is still one second apart.
        assert_eq!(probes(secs(2)).unwrap().interval, secs(1));
        assert_eq!(probes(secs(7)).unwrap().interval, secs(2));
    }
}
