//! Fair sharing of one backend connection between its clients.
//!
//! Every client has a lane of its own inside a connection: its jobs wait
//! there in order, and the connection takes them round robin, one job per
//! client per turn. A lane sends while the replies it has in flight are
//! expected to total less than [`SHARE_BYTES`] (judged by the average size of
//! its recent replies), and always sends one job when nothing of its is in
//! flight. So a client that pipelines hundreds of 100 KB GETs has a few of
//! them ahead of anyone else's request at any moment, not all of them, and a
//! client of small requests pipelines as deep as it likes. Redis does the
//! same between its own clients (a bounded write per client per turn of its
//! event loop); a connection shared by many clients has to do it itself.
//!
//! Pure bookkeeping, no I/O: the connection task pushes, pops and reports
//! replies.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Reply bytes one client may have in flight on a connection before its
/// next job waits for some of them (at least one job is always allowed).
pub const SHARE_BYTES: u64 = 256 * 1024;
/// What a reply is expected to weigh when its client has had none yet: a
/// new client may have 4 replies in flight until they tell how large they
/// are.
const FIRST_GUESS: u64 = SHARE_BYTES / 4;

/// What the lanes need to know about a job.
pub trait Queued {
    /// How many replies it will get.
    fn replies(&self) -> u32;
    /// Whether its client has given up on it (it is dropped, never sent).
    fn abandoned(&self) -> bool;
    /// The average size of its client's replies so far, 0 if none yet: a
    /// lane starts from it (lanes are forgotten when idle; clients remember).
    fn reply_bytes(&self) -> u64;
}

/// Idle lanes are kept (so a busy client's lane is not made afresh for every
/// batch) until there are more lanes than this, or than twice as many as
/// the last sweep left, whichever is more; then every idle one is dropped.
const KEEP_IDLE: usize = 1024;

/// Client ids are small sequential numbers: they hash to themselves.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Lane<J> {
    jobs: VecDeque<J>,
    /// Replies sent for and not yet back.
    in_flight: u64,
    /// Moving average of this client's reply size, in bytes.
    reply_bytes: u64,
    /// `reply_bytes` is FIRST_GUESS, not yet anything seen: the first reply
    /// replaces it rather than moving the average.
    guessed: bool,
    /// Whether the lane is in `turns`.
    in_turn: bool,
}

impl<J> Lane<J> {
    fn new(reply_bytes: u64) -> Lane<J> {
        Lane {
            jobs: VecDeque::new(),
            in_flight: 0,
            reply_bytes: if reply_bytes == 0 {
                FIRST_GUESS
            } else {
                reply_bytes
            },
            guessed: reply_bytes == 0,
            in_turn: false,
        }
    }

    fn has_room(&self) -> bool {
        self.in_flight == 0 || self.in_flight * self.reply_bytes < SHARE_BYTES
    }

    fn is_idle(&self) -> bool {
        self.jobs.is_empty() && self.in_flight == 0
    }
}

/// The lanes of one connection.
pub struct Lanes<J> {
    lanes: HashMap<u64, Lane<J>, BuildHasherDefault<IdHasher>>,
    /// Clients with a job waiting and room to send it, in turn order.
    turns: VecDeque<u64>,
    /// Jobs waiting in all lanes.
    queued: usize,
    /// Lanes beyond which idle ones are swept.
    sweep_above: usize,
}

impl<J> Default for Lanes<J> {
    fn default() -> Self {
        Lanes {
            lanes: HashMap::default(),
            turns: VecDeque::new(),
            queued: 0,
            sweep_above: KEEP_IDLE,
        }
    }
}

impl<J: Queued> Lanes<J> {
    /// Jobs waiting to be sent.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Queues `job` at the end of `client`'s lane.
    pub fn push(&mut self, client: u64, job: J) {
        let lane = self
            .lanes
            .entry(client)
            .or_insert_with(|| Lane::new(job.reply_bytes()));
        if lane.is_idle() && job.reply_bytes() > 0 {
            // A lane kept from before: its client knows better now.
            lane.reply_bytes = job.reply_bytes();
            lane.guessed = false;
        }
        lane.jobs.push_back(job);
        self.queued += 1;
        if !lane.in_turn && lane.has_room() {
            lane.in_turn = true;
            self.turns.push_back(client);
        }
    }

    /// Puts `job` back at the front of `client`'s lane: it was sent and
    /// must go again before what the client sent after it.
    pub fn push_front(&mut self, client: u64, job: J) {
        let lane = self
            .lanes
            .entry(client)
            .or_insert_with(|| Lane::new(job.reply_bytes()));
        lane.jobs.push_front(job);
        self.queued += 1;
        if !lane.in_turn && lane.has_room() {
            lane.in_turn = true;
            self.turns.push_back(client);
        }
    }

    /// The next job to send, from the next client in turn that may send;
    /// its replies count as in flight from now. Abandoned jobs are dropped
    /// on the way.
    pub fn pop(&mut self) -> Option<(u64, J)> {
        self.pop_if(|_| true)
    }

    /// As [`Lanes::pop`], taking only a job that `take` accepts at the head
    /// of its lane: a lane whose next job it refuses is passed over, and
    /// keeps its turn, so that no job of a client goes before an earlier one.
    pub fn pop_if(&mut self, take: impl Fn(&J) -> bool) -> Option<(u64, J)> {
        for _ in 0..self.turns.len() {
            let client = self.turns.pop_front()?;
            let Some(lane) = self.lanes.get_mut(&client) else {
                continue;
            };
            while lane.jobs.front().is_some_and(|job| job.abandoned()) {
                lane.jobs.pop_front();
                self.queued -= 1;
            }
            match lane.jobs.front() {
                None => {
                    lane.in_turn = false;
                    continue;
                }
                Some(job) if !take(job) => {
                    self.turns.push_back(client);
                    continue;
                }
                Some(_) => {}
            }
            let job = lane.jobs.pop_front()?;
            self.queued -= 1;
            lane.in_flight += u64::from(job.replies());
            lane.in_turn = !lane.jobs.is_empty() && lane.has_room();
            if lane.in_turn {
                self.turns.push_back(client);
            }
            return Some((client, job));
        }
        None
    }

    /// `replies` replies of `bytes` in all came back for `client`.
    pub fn replied(&mut self, client: u64, replies: u32, bytes: usize) {
        let Some(lane) = self.lanes.get_mut(&client) else {
            return;
        };
        let replies = u64::from(replies.max(1));
        lane.in_flight = lane.in_flight.saturating_sub(replies);
        let size = (bytes as u64 / replies).max(1);
        lane.reply_bytes = if lane.guessed {
            size
        } else {
            (lane.reply_bytes * 7 + size).div_ceil(8)
        };
        lane.guessed = false;
        if !lane.in_turn && !lane.jobs.is_empty() && lane.has_room() {
            lane.in_turn = true;
            self.turns.push_back(client);
        }
        if lane.is_idle() && self.lanes.len() > self.sweep_above {
            self.sweep();
        }
    }

    /// The connection was lost or left: nothing is in flight any more.
    pub fn clear_in_flight(&mut self) {
        for (client, lane) in &mut self.lanes {
            lane.in_flight = 0;
            if !lane.in_turn && !lane.jobs.is_empty() {
                lane.in_turn = true;
                self.turns.push_back(*client);
            }
        }
    }

    /// Takes every waiting job out (to be answered with an error).
    pub fn take_all(&mut self) -> Vec<J> {
        let mut all = Vec::with_capacity(self.queued);
        for lane in self.lanes.values_mut() {
            all.extend(lane.jobs.drain(..));
            lane.in_turn = false;
        }
        self.turns.clear();
        self.queued = 0;
        all
    }

    /// Drops every idle lane.
    fn sweep(&mut self) {
        self.lanes.retain(|_, lane| !lane.is_idle());
        self.sweep_above = KEEP_IDLE.max(2 * self.lanes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct J {
        id: u32,
        replies: u32,
        gone: bool,
        reply_bytes: u64,
    }

    impl Queued for J {
        fn replies(&self) -> u32 {
            self.replies
        }
        fn abandoned(&self) -> bool {
            self.gone
        }
        fn reply_bytes(&self) -> u64 {
            self.reply_bytes
        }
    }

    fn job(id: u32) -> J {
        J {
            id,
            replies: 1,
            gone: false,
            reply_bytes: 0,
        }
    }

    fn pop_all(lanes: &mut Lanes<J>) -> Vec<(u64, u32)> {
        std::iter::from_fn(|| lanes.pop().map(|(c, j)| (c, j.id))).collect()
    }

    #[test]
    fn clients_take_turns_and_each_keeps_its_order() {
        let mut lanes = Lanes::default();
        for id in 0..3 {
            lanes.push(1, job(id));
        }
        lanes.push(2, job(10));
        lanes.push(3, job(20));
        lanes.push(2, job(11));
        assert_eq!(
            pop_all(&mut lanes),
            [(1, 0), (2, 10), (3, 20), (1, 1), (2, 11), (1, 2)]
        );
        assert_eq!(lanes.queued(), 0);
    }

    #[test]
    fn only_jobs_at_the_head_of_their_lane_are_taken_by_pop_if() {
        // Odd ids stand for writes: while they are held, reads go on, but
        // never one queued behind a write of its own client.
        let mut lanes = Lanes::default();
        lanes.push(1, job(0));
        lanes.push(1, job(1));
        lanes.push(1, job(2));
        lanes.push(2, job(11));
        lanes.push(2, job(12));
        lanes.push(3, job(20));
        let reads = |lanes: &mut Lanes<J>| {
            std::iter::from_fn(|| lanes.pop_if(|j| j.id % 2 == 0).map(|(c, j)| (c, j.id)))
                .collect::<Vec<_>>()
        };
        assert_eq!(reads(&mut lanes), [(1, 0), (3, 20)]);
        assert_eq!(lanes.queued(), 4);
        for (client, replies) in [(1, 1), (3, 1)] {
            lanes.replied(client, replies, 10);
        }
        // The hold ends: the writes go, each before what followed it.
        assert_eq!(pop_all(&mut lanes), [(1, 1), (2, 11), (1, 2), (2, 12)]);
    }

    #[test]
    fn a_client_of_large_replies_waits_for_them_while_others_go_ahead() {
        let mut lanes = Lanes::default();
        // Its client knows its replies are 100 KB each; 256 of them: only
        // as many as fit in its share go out.
        for id in 0..256 {
            lanes.push(
                1,
                J {
                    reply_bytes: 100_000,
                    ..job(id)
                },
            );
        }
        let first = pop_all(&mut lanes);
        let allowed = SHARE_BYTES.div_ceil(100_000) as usize;
        assert!(first.len() <= allowed, "{} in flight", first.len());
        // A newcomer with a small request is next, not after the 256.
        lanes.push(2, job(1000));
        assert_eq!(pop_all(&mut lanes), [(2, 1000)]);
        // Each reply that comes back lets one more of the heavy lane go.
        lanes.replied(1, 1, 100_000);
        assert_eq!(pop_all(&mut lanes).len(), 1);
    }

    #[test]
    fn small_replies_pipeline_deep() {
        let mut lanes = Lanes::default();
        // Until its replies come, a new client has 4 in flight.
        for id in 0..100 {
            lanes.push(7, job(id));
        }
        assert_eq!(pop_all(&mut lanes).len(), 4);
        // The first reply tells: small. All the rest may go.
        lanes.replied(7, 1, 5);
        assert_eq!(pop_all(&mut lanes).len(), 96);
        // A client known to have small replies pipelines as deep as it sends.
        for id in 0..1000 {
            lanes.push(
                8,
                J {
                    reply_bytes: 5,
                    ..job(id)
                },
            );
        }
        assert_eq!(pop_all(&mut lanes).len(), 1000);
        lanes.replied(8, 1000, 5000);
        assert_eq!(lanes.lanes[&8].in_flight, 0);
    }

    #[test]
    fn a_lane_with_nothing_in_flight_always_sends_one_job() {
        let mut lanes = Lanes::default();
        lanes.push(
            1,
            J {
                id: 1,
                replies: 500,
                gone: false,
                reply_bytes: 10_000_000,
            },
        );
        lanes.push(1, job(2));
        assert_eq!(pop_all(&mut lanes), [(1, 1)]);
        lanes.replied(1, 500, 500 * 10_000_000);
        assert_eq!(pop_all(&mut lanes), [(1, 2)]);
    }

    #[test]
    fn idle_lanes_are_swept_once_there_are_many() {
        let mut lanes = Lanes::default();
        // Clients come and go: their idle lanes are kept up to KEEP_IDLE...
        for client in 0..KEEP_IDLE as u64 {
            lanes.push(client, job(0));
            assert_eq!(pop_all(&mut lanes), [(client, 0)]);
            lanes.replied(client, 1, 10);
        }
        assert_eq!(lanes.lanes.len(), KEEP_IDLE);
        // ...and swept by the one after.
        lanes.push(u64::MAX, job(1));
        assert_eq!(pop_all(&mut lanes), [(u64::MAX, 1)]);
        lanes.replied(u64::MAX, 1, 10);
        assert!(lanes.lanes.is_empty());
    }

    #[test]
    fn abandoned_jobs_are_dropped_and_take_no_share() {
        let mut lanes = Lanes::default();
        lanes.push(
            1,
            J {
                id: 0,
                replies: 1,
                gone: true,
                reply_bytes: 0,
            },
        );
        lanes.push(1, job(1));
        assert_eq!(pop_all(&mut lanes), [(1, 1)]);
        assert_eq!(lanes.lanes[&1].in_flight, 1);
    }

    #[test]
    fn a_lost_connection_frees_every_share_and_can_fail_what_waits() {
        let mut lanes = Lanes::default();
        let large = |id| J {
            reply_bytes: 10_000_000,
            ..job(id)
        };
        lanes.push(1, large(1));
        lanes.push(1, large(2));
        assert_eq!(pop_all(&mut lanes), [(1, 1)]);
        // Lost before job 1's reply: job 2 may go on the next connection.
        lanes.clear_in_flight();
        assert_eq!(pop_all(&mut lanes), [(1, 2)]);
        lanes.clear_in_flight();
        lanes.push(1, job(3));
        lanes.push(2, job(4));
        let ids: Vec<u32> = lanes.take_all().into_iter().map(|j| j.id).collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(lanes.queued(), 0);
        assert_eq!(pop_all(&mut lanes), []);
    }
}
