//! The nemesis's managed backend: a primary and its replica on one port,
//! at 127.0.0.1 and 127.0.0.2, reached by a host name that a hosts file
//! pins (`[pool] hosts_file`), as a managed service's primary endpoint is
//! (ElastiCache, Memorystore, Azure): its failovers move the name, with no
//! Sentinel to name the new primary. Two faults: Redis's own `FAILOVER`
//! then the name moved (a planned failover), and the primary frozen, its
//! replica promoted and the name moved to it (a failover of a primary gone
//! silent), the old one made a replica of the new once it wakes, as the
//! service would. `min_replicas_ack = 1`, as with the Sentinel groups: a
//! write is acknowledged once the replica has it, so a promotion loses
//! none.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{free_port, try_wait_until, HostsFile, RawClient, Redis};

/// The host name, as the proxies' config gives it.
const NAME: &str = "managed.redis.test";
const IPS: [&str; 2] = ["127.0.0.1", "127.0.0.2"];
/// How long a step of a fault waits for Redis at most.
const STEP_LIMIT: Duration = Duration::from_secs(30);

pub struct Managed {
    nodes: [Redis; 2],
    hosts: HostsFile,
    /// The node the name leads to.
    primary: AtomicUsize,
}

impl Managed {
    /// The two nodes, the name on the first, its replica in sync.
    pub fn start(node_args: &[&str]) -> Managed {
        let port = free_port();
        let start = |i: usize, replica_of: &[&str]| {
            // FAILOVER TO names a replica by the address it announces; its
            // connection to the primary comes from 127.0.0.1 whatever its IP.
            let mut args = vec!["--replica-announce-ip", IPS[i]];
            args.extend_from_slice(node_args);
            args.extend_from_slice(replica_of);
            Redis::start_at(IPS[i], port, &args)
        };
        let port_text = port.to_string();
        let nodes = [
            start(0, &[]),
            start(1, &["--replicaof", IPS[0], &port_text]),
        ];
        let managed = Managed {
            nodes,
            hosts: HostsFile::naming(NAME, IPS[0]),
            primary: AtomicUsize::new(0),
        };
        assert!(managed.synced(1), "the managed replica never synced");
        managed
    }

    /// Its lines of the proxies' `[pool]`: the name looked up every second.
    pub fn pool_toml(&self) -> String {
        format!(
            "dns_refresh_s = 1\nhosts_file = \"{}\"\n",
            self.hosts.path.display()
        )
    }

    /// Its `[[backends]]` entry.
    pub fn backend_toml(&self) -> String {
        format!(
            "[[backends]]\nid = \"managed\"\naddress = \"{NAME}:{}\"\nmin_replicas_ack = 1\n",
            self.nodes[0].port
        )
    }

    /// The node the name leads to, and the other.
    fn pair(&self) -> (&Redis, &Redis, usize) {
        let old = self.primary.load(Ordering::Relaxed);
        (&self.nodes[old], &self.nodes[1 - old], 1 - old)
    }

    /// Whether node `i`, a replica, has finished its sync with the primary
    /// and the primary counts it for a WAIT, as the proxy's
    /// `min_replicas_ack` does (a write is refused with -NOREPLICAS until
    /// then).
    fn synced(&self, i: usize) -> bool {
        let linked = self.nodes[i].replication_until(STEP_LIMIT, |info| {
            info.contains("role:slave") && info.contains("master_link_status:up")
        });
        let primary = &self.nodes[1 - i];
        linked
            && try_wait_until(STEP_LIMIT, Duration::from_millis(50), || {
                let Ok(mut client) = RawClient::try_connect_to(primary.ip, primary.port) else {
                    return false;
                };
                client.text(&["SET", "managed:probe", "1"]) == "+OK\r\n"
                    && client.text(&["WAIT", "1", "200"]) == ":1\r\n"
            })
    }

    /// Redis's FAILOVER to the replica (writes paused until it has caught
    /// up), then the name moved to it; over once the old primary, now its
    /// replica, has synced.
    pub fn failover(&self) {
        let (old, new, next) = self.pair();
        let port = new.port.to_string();
        let taken = try_wait_until(STEP_LIMIT, Duration::from_millis(50), || {
            RawClient::try_once_to(old.ip, old.port, &["FAILOVER", "TO", new.ip, &port])
                .is_ok_and(|reply| reply == "+OK\r\n")
        });
        if !taken {
            return;
        }
        let role = |node: &Redis| {
            RawClient::try_once_to(node.ip, node.port, &["ROLE"]).unwrap_or_default()
        };
        try_wait_until(STEP_LIMIT, Duration::from_millis(10), || {
            role(new).contains("master") && role(old).contains("slave")
        });
        self.hosts.point(new.ip);
        self.primary.store(next, Ordering::Relaxed);
        self.synced(1 - next);
    }

    /// The primary frozen for `pause`, its replica promoted at once and the
    /// name moved to it; the old one, awake, is made a replica of the new
    /// one before anything else reaches it (with the name moved a second
    /// lookup at least before, no connection of a proxy's is left on it);
    /// over once it has synced.
    pub fn freeze_and_promote(&self, pause: Duration) {
        let (old, new, next) = self.pair();
        old.signal("STOP");
        let promoted = try_wait_until(STEP_LIMIT, Duration::from_millis(50), || {
            RawClient::try_once_to(new.ip, new.port, &["REPLICAOF", "NO", "ONE"])
                .is_ok_and(|reply| reply == "+OK\r\n")
        });
        if promoted {
            self.hosts.point(new.ip);
            self.primary.store(next, Ordering::Relaxed);
        }
        std::thread::sleep(pause);
        old.signal("CONT");
        if !promoted {
            return;
        }
        let port = new.port.to_string();
        try_wait_until(STEP_LIMIT, Duration::from_millis(20), || {
            RawClient::try_once_to(old.ip, old.port, &["REPLICAOF", new.ip, &port])
                .is_ok_and(|reply| reply.starts_with("+OK"))
        });
        self.synced(1 - next);
    }
}
