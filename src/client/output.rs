//! A client's replies going out: each slot's reply encoded in request order
//! in the client's protocol, held back while a later one is still coming,
//! and written.

use std::io;
use std::time::Instant;

use bytes::Bytes;
use tokio_util::codec::Encoder;

use crate::backend::LARGE_REPLY_BYTES;
use crate::client::slot::{Pending, Slot};
use crate::client::tally::{count_sent, observe, Finished};
use crate::client::Handler;
use crate::protocol::{Reply, ReplyEncoder};

/// The size a first reply that did not come whole from a backend (an error
/// the proxy made, a merged reply) counts as.
const SMALL_REPLY: usize = 64;

/// Reply bytes a client encodes in one pass before it lets others run.
const ENCODE_TURN: usize = 256 * 1024;

/// Encoded replies held back while a later reply in the pipeline is still
/// coming, at most; see step 3 of the client loop.
const HOLD_LIMIT: usize = 64 * 1024;

impl Handler<'_> {
    /// The reply to a new client's first backend request is in (its slot,
    /// the last, was a barrier): its size decides the connection for the
    /// requests behind it. Without this, a client that connects and at once
    /// pipelines hundreds of 100 KB GETs would put them all on the pool's
    /// connection, ahead of everyone's small session reads, because it
    /// moves to the connection for large replies only once nothing of its
    /// is in flight. Nothing is in flight now: every earlier backend request
    /// of this client was such a barrier too.
    pub(super) fn sized(&mut self) {
        self.sizing = false;
        let bytes = match self.queue.back().map(|s| &s.pending) {
            Some(Pending::Ready(Reply::Raw(bytes) | Reply::Raw3(bytes))) => bytes.len(),
            // An error the proxy made (a timeout, a backend down) or a
            // merged reply: small, as far as the connection is concerned.
            // It sizes the client too, or every request of a client whose
            // backend is in trouble would wait for the one before.
            Some(Pending::Ready(_)) => SMALL_REPLY,
            _ => return,
        };
        self.state.replied(bytes);
        self.state.large_replies = self.state.reply_bytes > LARGE_REPLY_BYTES;
    }

    /// A Pub/Sub message from a link: written now if nothing is owed to the
    /// client before it, else once the replies before it are.
    pub(super) fn deliver(&mut self, frame: Bytes) {
        let Some(subscriber) = self.state.subscriber.as_ref() else {
            return;
        };
        let wanted = subscriber.wanted.lock().is_ok_and(|w| w.wants(&frame));
        if !wanted {
            return;
        }
        // A client restricted to key prefixes hears of its own keys only.
        let user = self
            .state
            .user
            .as_ref()
            .and_then(|n| self.topo.config.user(n));
        if let Some(key) = crate::pubsub::notification_key(&frame) {
            let under = |list: &[String]| {
                list.is_empty() || list.iter().any(|p| key.starts_with(p.as_bytes()))
            };
            let user_prefixes = user.map_or(&[][..], |u| &u.prefixes[..]);
            if !under(&self.topo.config.keys.prefixes) || !under(user_prefixes) {
                return;
            }
        }
        let frame = crate::pubsub::for_client(frame, self.state.proto);
        self.push_out(frame);
    }

    /// Writes a frame the proxy made for the client (a message, an
    /// invalidation) behind the replies in flight: never ahead of a reply
    /// to a request sent before it.
    pub(super) fn push_out(&mut self, frame: Bytes) {
        if self.queue.is_empty() {
            self.wbuf.extend_from_slice(&frame);
        } else {
            self.queue
                .push_back(Slot::ready(self.state.proto, Reply::Encoded(frame)));
        }
    }

    /// Step 2: encodes every reply that is ready, in order, up to ENCODE_TURN
    /// bytes: a client with megabytes of large replies ready lets the others
    /// go first (like Redis's per-client write limit per turn of its event
    /// loop), then comes back for the rest. Returns whether more are ready.
    pub(super) fn encode_replies(&mut self, now: Instant) -> io::Result<bool> {
        let encode_until = self.wbuf.len() + ENCODE_TURN;
        let mut more_ready = false;
        while let Some(slot) = self.queue.front_mut() {
            if self.wbuf.len() >= encode_until {
                more_ready = true;
                break;
            }
            if !slot.poll_ready(&mut self.batcher, None) {
                break;
            }
            let Some(slot) = self.queue.pop_front() else {
                break;
            };
            let close_after = slot.close_after;
            self.account.release(slot.charge);
            if slot.arms_noloop {
                self.shared.tracker.replied(self.state.id);
            }
            if let Pending::Ready(reply) = slot.pending {
                if let Some(bytes) = reply.raw_bytes() {
                    self.state.replied(bytes.len());
                }
                if let Some(started) = slot.started {
                    // From the request, or from the reply before it when
                    // that came later: time spent waiting for the client's
                    // earlier replies is not this request's (as Redis
                    // times a command's execution, not its queue).
                    let from = started.max(self.last_reply);
                    let took = now.saturating_duration_since(from);
                    if reply.is_error() {
                        self.shared.error_codes.count(&reply);
                    }
                    let finished = Finished {
                        command: slot.command,
                        took,
                        request: &slot.request,
                        user: slot.user.as_ref(),
                        error: reply.is_error(),
                    };
                    observe(
                        self.shared,
                        &self.topo,
                        &mut self.tally,
                        finished,
                        &self.state.peer,
                        self.state.name.as_ref(),
                    );
                }
                self.last_reply = now;
                // CLIENT REPLY OFF silences replies, not Pub/Sub's frames
                // (a subscribe's confirmations, in either protocol), as on
                // Redis.
                let pubsub = matches!(&reply, Reply::Encoded(_));
                if !slot.silent || pubsub {
                    let mut encoder = ReplyEncoder { proto: slot.proto };
                    encoder
                        .encode(reply, &mut self.wbuf)
                        .map_err(|e| io::Error::other(e.to_string()))?;
                }
            }
            if close_after {
                self.queue.clear();
                break;
            }
        }
        self.batcher.trim();
        self.tally.flush(self.shared);
        Ok(more_ready)
    }

    /// Step 3: writes what the socket takes now, unless a reply further on is
    /// still to come. Like Redis, which writes a pipeline's replies once it
    /// has run the whole read buffer, replies gathered from several backends
    /// go out in one send, not one per backend that answers. The hold ends
    /// when that reply comes or times out, or at HOLD_LIMIT bytes. Returns
    /// whether it held.
    pub(super) fn write(&mut self) -> io::Result<bool> {
        let hold = !self.wbuf.is_empty()
            && self.wbuf.len() < HOLD_LIMIT
            && self.queue.front().is_some_and(Slot::is_waiting);
        if !hold {
            let before = self.wbuf.len();
            let written = self.stream.write_some(&mut self.wbuf);
            count_sent(self.shared, before - self.wbuf.len());
            written?;
        }
        Ok(hold)
    }
}
