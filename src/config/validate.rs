//! The checks a config passes before it is used: each section's, naming
//! the field at fault.

use super::backend::check_host_port;
use super::{invalid, Config, ConfigError};

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_listen()?;
        self.validate_users()?;
        self.validate_keys()?;
        self.validate_limits()?;
        self.validate_backends()?;
        if let Some(migration) = &self.migration {
            migration.validate()?;
        }
        Ok(())
    }

    /// `[listen]` and `[admin]`: addresses, databases, the default user.
    fn validate_listen(&self) -> Result<(), ConfigError> {
        let listen = &self.listen;
        if listen.address.is_none() && listen.unix_socket.is_none() {
            return Err(invalid("listen", "set address, unix_socket or both"));
        }
        if let Some(address) = &listen.address {
            check_host_port(address).map_err(|m| invalid("listen.address", m))?;
        }
        if let Some(address) = self.admin.bind_address() {
            check_host_port(&address).map_err(|m| invalid("admin.address", m))?;
        }
        if let Some(tls) = &listen.tls {
            check_host_port(&tls.address).map_err(|m| invalid("listen.tls.address", m))?;
        }
        self.unix_socket_mode()?;
        if listen.databases == 0 || listen.databases > 1 << 16 {
            return Err(invalid("listen.databases", "must be between 1 and 65536"));
        }
        if listen.password.as_deref() == Some("") {
            return Err(invalid(
                "listen.password",
                "must not be empty; remove it to disable AUTH",
            ));
        }
        if listen.username.is_some() && listen.password.is_none() {
            return Err(invalid("listen.username", "needs listen.password"));
        }
        Ok(())
    }

    /// `[[users]]`: distinct names, no empty prefix.
    fn validate_users(&self) -> Result<(), ConfigError> {
        let listen = &self.listen;
        for (i, user) in self.users.iter().enumerate() {
            let field = format!("users[{i}]");
            if user.name.is_empty()
                || user.name == "default"
                || listen.username.as_deref() == Some(&user.name)
                || self.users[..i].iter().any(|u| u.name == user.name)
            {
                return Err(invalid(
                    format!("{field}.name"),
                    format!(
                        "'{}' is empty, 'default', listen.username or another user's",
                        user.name
                    ),
                ));
            }
            if user.prefixes.iter().any(String::is_empty) {
                return Err(invalid(
                    format!("{field}.prefixes"),
                    "must not hold an empty prefix",
                ));
            }
        }
        Ok(())
    }

    /// `[keys]`: the hash tag, script SHA1s, prefixes.
    fn validate_keys(&self) -> Result<(), ConfigError> {
        if let Some(tag) = &self.keys.hash_tag {
            if tag.len() != 2 || tag.as_bytes()[0] == tag.as_bytes()[1] {
                return Err(invalid(
                    "keys.hash_tag",
                    format!(
                        "'{tag}' is not two different characters (Redis Cluster's is \"{{}}\")"
                    ),
                ));
            }
        }
        for (i, sha) in self.keys.scripts.iter().enumerate() {
            if sha.len() != 40 || !sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(invalid(
                    format!("keys.scripts[{i}]"),
                    format!("'{sha}' is not a SHA1 in lower-case hex (40 characters)"),
                ));
            }
        }
        for (i, prefix) in self.keys.prefixes.iter().enumerate() {
            if prefix.is_empty() {
                return Err(invalid(
                    format!("keys.prefixes[{i}]"),
                    "must not be empty; use an empty list to allow every key",
                ));
            }
        }
        Ok(())
    }

    /// `[pool]` and `[limits]`: what must be positive, and the backoff's
    /// bounds.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let pool = &self.pool;
        for (field, value) in [
            ("pool.connections", pool.connections as u64),
            ("pool.connect_timeout_ms", pool.connect_timeout_ms),
            ("pool.request_timeout_ms", pool.request_timeout_ms),
            ("pool.backoff_min_ms", pool.backoff_min_ms),
            ("pool.max_pending", pool.max_pending as u64),
            ("pool.health_failures", pool.health_failures as u64),
            ("pool.health_successes", pool.health_successes as u64),
            ("pool.sentinel_timeout_ms", pool.sentinel_timeout_ms),
            ("pool.sentinel_recheck_ms", pool.sentinel_recheck_ms),
            ("pool.probe_interval_ms", pool.probe_interval_ms),
            ("limits.max_clients", self.limits.max_clients as u64),
            (
                "limits.max_request_bytes",
                self.limits.max_request_bytes as u64,
            ),
            ("limits.max_pipeline", self.limits.max_pipeline as u64),
            ("limits.max_reply_bytes", self.limits.max_reply_bytes as u64),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        if pool.backoff_max_ms < pool.backoff_min_ms {
            return Err(invalid(
                "pool.backoff_max_ms",
                "must be at least pool.backoff_min_ms",
            ));
        }
        Ok(())
    }

    /// `[[backends]]`: at least one, distinct ids, positive weights, a
    /// target each.
    fn validate_backends(&self) -> Result<(), ConfigError> {
        if self.backends.is_empty() {
            return Err(invalid(
                "backends",
                "at least one [[backends]] entry is needed",
            ));
        }
        for (i, backend) in self.backends.iter().enumerate() {
            let field = format!("backends[{i}]");
            if backend.id.is_empty() {
                return Err(invalid(format!("{field}.id"), "must not be empty"));
            }
            if !(backend.weight.is_normal() && backend.weight > 0.0) {
                return Err(invalid(
                    format!("{field}.weight"),
                    "must be a positive number",
                ));
            }
            if self.backends[..i].iter().any(|b| b.id == backend.id) {
                return Err(invalid(
                    format!("{field}.id"),
                    format!("'{}' is used by another backend", backend.id),
                ));
            }
            backend.target(&field)?;
        }
        Ok(())
    }
}
