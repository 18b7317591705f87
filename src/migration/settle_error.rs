//! Why a key could not be settled, and what the request it was settled for
//! does then: go on as if the key were not on the old location, or fail.

use std::time::Duration;

use crate::backend::BackendError;

/// Why a key could not be settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// The old location did not answer (its connection failed, or it is
    /// known down): a read may go on as a miss when it is known down. An
    /// old location that answers, even with an error, is up: `Failed`.
    #[error("old location: {0}")]
    OldDown(BackendError),
    /// The old location is known down and has not answered for `[migration]
    /// gone_after_s`: taken for gone. A write to one of its keys then goes
    /// to the owner beside whatever copy it holds, and a delete leaves a
    /// tombstone there, rather than fail until the server is back (which,
    /// for a server that died, is never).
    #[error("old location: {0}")]
    OldGone(BackendError),
    /// Anything else (the owner refused the copy, the key stayed locked by
    /// another move): the command must not go on as if nothing were there.
    #[error("{0}")]
    Failed(BackendError),
}

impl SettleError {
    /// Whether the old location is known down (its connections fail), not
    /// only slow or its answer lost. A slow server may hold the session: a
    /// miss would log its user out, and a write beside it would leave a
    /// stale copy there, which wins if the layout turns back (the nemesis
    /// met both).
    pub fn old_location_down(&self) -> bool {
        match self {
            SettleError::OldGone(_) => true,
            SettleError::OldDown(error) => known_down(error),
            SettleError::Failed(_) => false,
        }
    }

    /// The same error, taken for gone if its old location is known down and
    /// has gone `unanswered` for `gone_after`.
    pub fn gone_if_unanswered_for(self, unanswered: Duration, gone_after: Duration) -> SettleError {
        match self {
            SettleError::OldDown(error) if unanswered >= gone_after && known_down(&error) => {
                SettleError::OldGone(error)
            }
            other => other,
        }
    }

    /// Whether the request whose key this settle failed for may go on as if
    /// the key were not on the old location: only once that server is taken
    /// for gone, a read (answered as the miss it would have been) as a
    /// write. Before, the server may hold the session and be down only for
    /// a moment (frozen, restarting, failing over): a miss would log its
    /// user out (a 30-minute nemesis saw one: a read beside the layout a
    /// reload was switching to, whose master was frozen), and a write beside
    /// it would leave that copy stale, to win if the layout turned back
    /// before the mover removed it (a nemesis saw a session go back to an
    /// older value so). A request that `must_settle` (a delete, a write
    /// while a reload settles) never: a delete beside a server taken for
    /// gone goes on with a tombstone instead, left by the settle (see
    /// [`crate::migration::Purpose`]).
    pub fn request_goes_on(&self, must_settle: bool) -> bool {
        !must_settle && matches!(self, SettleError::OldGone(_))
    }

    pub fn into_backend(self) -> BackendError {
        match self {
            SettleError::OldDown(e) | SettleError::OldGone(e) | SettleError::Failed(e) => e,
        }
    }
}

/// Whether a backend error says the server is down (its connections
/// fail), not that it was slow to answer.
fn known_down(error: &BackendError) -> bool {
    matches!(
        error,
        BackendError::Unavailable { .. } | BackendError::NoMaster { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::SettleError;
    use crate::backend::BackendError;
    use std::time::Duration;

    const GONE_AFTER: Duration = Duration::from_secs(30);

    fn down() -> BackendError {
        BackendError::Unavailable {
            backend: "old".into(),
            reason: "down; probed every 500 ms".into(),
        }
    }

    fn slow() -> BackendError {
        BackendError::Timeout {
            backend: "old".into(),
            timeout_ms: 750,
        }
    }

    /// (error, unanswered for) -> may a read or write, a delete go on?
    #[test]
    fn requests_go_on_only_beside_a_server_taken_for_gone() {
        let moment = Duration::from_secs(2);
        let cases = [
            (SettleError::OldDown(down()), moment, [false, false]),
            (SettleError::OldDown(down()), GONE_AFTER, [true, false]),
            (SettleError::OldDown(slow()), moment, [false, false]),
            (SettleError::OldDown(slow()), GONE_AFTER, [false, false]),
            (SettleError::Failed(down()), GONE_AFTER, [false, false]),
        ];
        for (error, unanswered, [goes_on, delete]) in cases {
            let error = error.gone_if_unanswered_for(unanswered, GONE_AFTER);
            let what = format!("{error:?} after {unanswered:?}");
            assert_eq!(error.request_goes_on(false), goes_on, "{what}");
            assert_eq!(error.request_goes_on(true), delete, "delete: {what}");
        }
    }
}
