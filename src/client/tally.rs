//! Counting what a client did: bytes in and out, and each finished
//! request in the metrics (by command, outcome and latency) and SLOWLOG.

use std::time::Duration;

use bytes::Bytes;

use crate::client::slot::Kept;
use crate::shared::{Shared, Topology};

/// Counts bytes written to a client (INFO and /metrics read the count).
pub(in crate::client) fn count_sent(shared: &Shared, n: usize) {
    if n > 0 {
        shared.stats.net_output_bytes.add(n as u64);
        shared.stats.writes.add(1);
    }
}

/// Counts bytes read from a client (INFO and /metrics read the count).
pub(in crate::client) fn count_received(shared: &Shared, n: usize) {
    shared.stats.net_input_bytes.add(n as u64);
    shared.stats.reads.add(1);
}

/// Finished requests of one command, outcome and latency in a row, counted
/// in the metrics at once: a pipeline's replies, decoded in one pass and
/// encoded in another, mostly share all three.
#[derive(Default)]
pub(in crate::client) struct Tally {
    command: usize,
    error: bool,
    took: Duration,
    count: u64,
}

impl Tally {
    pub(in crate::client) fn add(
        &mut self,
        shared: &Shared,
        command: usize,
        error: bool,
        took: Duration,
    ) {
        if self.count > 0 && (self.command, self.error, self.took) == (command, error, took) {
            self.count += 1;
            return;
        }
        self.flush(shared);
        *self = Tally {
            command,
            error,
            took,
            count: 1,
        };
    }

    pub(in crate::client) fn flush(&mut self, shared: &Shared) {
        if self.count == 0 {
            return;
        }
        if let Some(metrics) = shared.metrics.command(self.command) {
            if self.error {
                metrics.error.add(self.count);
            } else {
                metrics.ok.add(self.count);
            }
            metrics.latency.record(self.took, self.count);
        }
        self.count = 0;
    }
}

/// A request answered: its command (the table's index), how long it took,
/// what SLOWLOG keeps of it, its user, and whether the reply was an error.
pub(in crate::client) struct Finished<'a> {
    pub(in crate::client) command: usize,
    pub(in crate::client) took: Duration,
    pub(in crate::client) request: &'a Kept,
    pub(in crate::client) user: Option<&'a Bytes>,
    pub(in crate::client) error: bool,
}

/// Counts a finished request in the metrics, and in SLOWLOG when slow.
pub(in crate::client) fn observe(
    shared: &Shared,
    topo: &Topology,
    tally: &mut Tally,
    finished: Finished<'_>,
    peer: &str,
    name: Option<&Bytes>,
) {
    let Finished {
        command,
        took,
        request,
        user,
        error,
    } = finished;
    tally.add(shared, command, error, took);
    let slowlog = &topo.config.slowlog;
    if slowlog.slower_than_us >= 0 && took.as_micros() as i64 >= slowlog.slower_than_us {
        shared
            .slowlog
            .record(slowlog.max_len, took, &request.args(), peer, name, user);
    }
}
