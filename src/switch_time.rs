//! When proxies reloaded one after the other switch to the new layout:
//! together, at `[reload] settle_ms` after the first of them reloaded.
//!
//! Each proxy would otherwise switch `settle_ms` after its own reload, so
//! for the proxies' reload skew some route by the old layout and some by
//! the new, and two clients using one key at once through two of them are
//! not serialized (docs/migration.md). So at a reload each proxy asks one
//! server that all of them share, the first backend of the layout before
//! the reload, when the first proxy reloaded this change: a script there
//! keeps that moment, by the server's own clock, under a key named by the
//! two layouts, and answers how long ago it was. A proxy switches at the
//! sooner of its own time and the first proxy's; one that cannot ask
//! (that server down or slow) keeps its own, as before.

use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::config::Config;
use crate::migration::{call, PROXY_LANE};
use crate::own_keys::RELOAD_PREFIX;
use crate::protocol::Reply;
use crate::topology::Topology;

/// Answers how long ago (ms, by the server's clock) the first proxy
/// reloaded this change, noting now as that moment when none did within
/// the last ARGV[1] ms (the settle), for as long: the key is gone before
/// any mover starts.
const FIRST_RELOAD: &str = "local t = redis.call('TIME') \
     local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
     local settle = tonumber(ARGV[1]) \
     local first = tonumber(redis.call('GET', KEYS[1])) \
     if not first or first > now or now - first >= settle then \
       first = now \
       redis.call('SET', KEYS[1], string.format('%.0f', now), 'PX', settle) \
     end \
     return now - first";

/// The key under which the proxies keep when the change from layout
/// `before` to `after` was first reloaded: the same for every proxy given
/// the same backends (ids and weights) and hash tag.
pub fn key_for(before: &Config, after: &Config) -> Vec<u8> {
    let mut layouts = String::new();
    for config in [before, after] {
        for backend in &config.backends {
            layouts.push_str(&format!("{}={};", backend.id, backend.weight));
        }
        layouts.push_str(&format!("#{:?}|", config.keys.hash_tag()));
    }
    let mut key = RELOAD_PREFIX.to_vec();
    key.extend_from_slice(format!("{:016x}", fnv1a(layouts.as_bytes())).as_bytes());
    key
}

/// 64-bit FNV-1a: a name that every proxy's build computes alike (std's
/// hasher may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// When to switch: at `own` (this proxy's reload plus the settle), or
/// sooner when the first proxy reloaded `first_ago` before `heard` (when
/// its answer came), `settle` before its switch.
pub fn switch_at(own: Instant, heard: Instant, first_ago: Duration, settle: Duration) -> Instant {
    let theirs = heard + settle.saturating_sub(first_ago);
    own.min(theirs)
}

/// What a proxy asks at a reload: the server all proxies share (the first
/// backend of the layout before it) and the key naming the change.
pub struct Asking {
    pub server: Backend,
    key: Vec<u8>,
    request_timeout: Duration,
}

impl Asking {
    /// The question for the change from `before` to `next`; `None` when
    /// `before` has no backend.
    pub fn of(before: &Topology, next: &Topology) -> Option<Asking> {
        Some(Asking {
            server: before.backends.first()?.clone(),
            key: key_for(&before.config, &next.config),
            request_timeout: before.config.pool.request_timeout(),
        })
    }

    /// How long ago the first proxy reloaded the change, as the server
    /// says within the request timeout and `left` (this proxy's own time to
    /// its switch); else why not (the caller keeps its own time).
    pub async fn first_reload_ago(
        &self,
        settle: Duration,
        left: Duration,
    ) -> Result<Duration, String> {
        let wait = self.request_timeout.min(left);
        let settle_ms = settle.as_millis().to_string();
        let args: [&[u8]; 5] = [
            b"EVAL",
            FIRST_RELOAD.as_bytes(),
            b"1",
            &self.key,
            settle_ms.as_bytes(),
        ];
        let asked = call(&self.server, PROXY_LANE, 0, &args, true);
        match tokio::time::timeout(wait, asked).await {
            Ok(Ok(Reply::Int(ms))) if ms >= 0 => Ok(Duration::from_millis(ms as u64)),
            Ok(Ok(other)) => Err(format!("unexpected reply {:?}", reply_text(&other))),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {} ms", wait.as_millis())),
        }
    }
}

fn reply_text(reply: &Reply) -> String {
    match reply {
        Reply::Error(e) | Reply::Bulk(e) => String::from_utf8_lossy(e).into_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(backends: &[(&str, f64)]) -> Config {
        let mut text = String::from("[listen]\naddress = \"127.0.0.1:0\"\n");
        for (id, weight) in backends {
            text.push_str(&format!(
                "[[backends]]\nid = \"{id}\"\naddress = \"127.0.0.1:1\"\nweight = {weight}\n"
            ));
        }
        Config::parse(&text).unwrap()
    }

    #[test]
    fn the_key_names_both_layouts_alike_for_every_proxy() {
        let one = config(&[("a", 1.0)]);
        let two = config(&[("a", 1.0), ("b", 1.0)]);
        let heavier = config(&[("a", 1.0), ("b", 2.0)]);
        let key = key_for(&one, &two);
        assert!(crate::own_keys::is_own(&key));
        assert_eq!(key, key_for(&config(&[("a", 1.0)]), &two));
        assert_ne!(key, key_for(&two, &one));
        assert_ne!(key, key_for(&one, &heavier));
    }

    #[test]
    fn a_later_proxy_switches_with_the_first_never_after_its_own_time() {
        let settle = Duration::from_secs(5);
        let heard = Instant::now();
        let own = heard + settle;
        // The first reloaded 1.5 s ago: switch 3.5 s from now.
        let first = switch_at(own, heard, Duration::from_millis(1500), settle);
        assert_eq!(first, heard + Duration::from_millis(3500));
        // This proxy is the first (0 ms ago): its own time.
        assert_eq!(switch_at(own, heard, Duration::ZERO, settle), own);
        // An answer that came late does not push the switch past its own.
        let late = own + Duration::from_secs(1);
        assert_eq!(switch_at(own, late, Duration::ZERO, settle), own);
        // A first reload a settle or more ago: switch now.
        assert_eq!(switch_at(own, heard, settle * 2, settle), heard);
    }
}
