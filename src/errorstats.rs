//! INFO's errorstats: the error replies clients were sent, by error code
//! (`ERR`, `WRONGTYPE`, `NOPERM`, a script's own), and their total, as
//! Redis counts them; CONFIG RESETSTAT starts them again. Touched only when
//! an error is sent, so a lock is fine.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::protocol::Reply;

/// Codes kept at most; further new codes are not counted by code (Redis's
/// limit, against a script inventing one per call).
const MAX_CODES: usize = 128;

#[derive(Debug, Default)]
pub struct ErrorStats {
    /// (total, count by code).
    inner: Mutex<(u64, BTreeMap<String, u64>)>,
}

impl ErrorStats {
    /// Counts one error reply.
    pub fn count(&self, reply: &Reply) {
        let code = code_of(reply);
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.0 += 1;
        let codes = &mut inner.1;
        if let Some(n) = codes.get_mut(&code) {
            *n += 1;
        } else if codes.len() < MAX_CODES {
            codes.insert(code, 1);
        }
    }

    /// Error replies sent in all.
    pub fn total(&self) -> u64 {
        self.inner.lock().map_or(0, |i| i.0)
    }

    /// INFO's `errorstat_<CODE>:count=<n>` fields.
    pub fn fields(&self) -> Vec<(String, String)> {
        self.inner.lock().map_or_else(
            |_| Vec::new(),
            |i| {
                i.1.iter()
                    .map(|(code, n)| (format!("errorstat_{code}"), format!("count={n}")))
                    .collect()
            },
        )
    }

    pub fn reset(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            *inner = (0, BTreeMap::new());
        }
    }
}

/// The error's code: its first word.
fn code_of(reply: &Reply) -> String {
    let line: &[u8] = match reply {
        Reply::Error(e) => e,
        Reply::Raw(raw) | Reply::Raw3(raw) => match raw.first() {
            Some(b'-') => &raw[1..],
            // A blob error: `!<len>\r\n<text>\r\n`.
            Some(b'!') => raw
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(&raw[..0], |i| &raw[i + 2..]),
            _ => &raw[..0],
        },
        _ => &[],
    };
    let word = line
        .split(|&b| b == b' ' || b == b'\r')
        .next()
        .unwrap_or_default();
    String::from_utf8_lossy(word).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn errors_are_counted_by_their_code() {
        let stats = ErrorStats::default();
        stats.count(&Reply::error("ERR no"));
        stats.count(&Reply::Raw(Bytes::from_static(b"-WRONGTYPE Operation\r\n")));
        stats.count(&Reply::Raw3(Bytes::from_static(b"!9\r\nMY_ERR x\r\n")));
        stats.count(&Reply::error("ERR again"));
        assert_eq!(stats.total(), 4);
        assert_eq!(
            stats.fields(),
            vec![
                ("errorstat_ERR".to_string(), "count=2".to_string()),
                ("errorstat_MY_ERR".to_string(), "count=1".to_string()),
                ("errorstat_WRONGTYPE".to_string(), "count=1".to_string()),
            ]
        );
        stats.reset();
        assert_eq!(stats.total(), 0);
    }
}
