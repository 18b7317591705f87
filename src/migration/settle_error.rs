//! Why a key could not be settled, and what the request it was settled for
//! does then: go on as if the key were not on the old location, or fail.

use std::time::Duration;

use crate::backend::BackendError;

/// How long an old server known down must have gone without answering
/// before it is taken for gone: then a write to one of its keys goes to
/// the owner beside whatever copy it holds, rather than fail until the
/// server is back (which, for a server that died, is never).
pub const GONE_AFTER: Duration = Duration::from_secs(30);

/// Why a key could not be settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// The old location did not answer (its connection failed, or it is
    /// known down): a read may go on as a miss when it is known down. An
    /// old location that answers, even with an error, is up: `Failed`.
    #[error("old location: {0}")]
    OldDown(BackendError),
    /// The old location is known down and has not answered for
    /// [`GONE_AFTER`]: taken for gone.
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
    /// has gone `unanswered` for [`GONE_AFTER`].
    pub fn gone_if_unanswered_for(self, unanswered: Duration) -> SettleError {
        match self {
            SettleError::OldDown(error) if unanswered >= GONE_AFTER && known_down(&error) => {
                SettleError::OldGone(error)
            }
            other => other,
        }
    }

    /// Whether the request whose key this settle failed for may go on as if
    /// the key were not on the old location. A read may when that server is
    /// known down: it answers as the miss it would have been. A write only
    /// once the server is taken for gone: a write beside a copy on a server
    /// that is down for a moment leaves that copy stale, and it wins if the
    /// layout turns back before the mover removes it (a 30-minute nemesis
    /// saw a session go back to an older value so). A request that
    /// `must_settle` (a delete, a write while a reload settles) never.
    pub fn request_goes_on(&self, write: bool, must_settle: bool) -> bool {
        match self {
            _ if must_settle => false,
            SettleError::OldGone(_) => true,
            SettleError::OldDown(error) => !write && known_down(error),
            SettleError::Failed(_) => false,
        }
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
    use super::{SettleError, GONE_AFTER};
    use crate::backend::BackendError;
    use std::time::Duration;

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

    /// (error, unanswered for) -> may a read, a write, a delete go on?
    #[test]
    fn reads_go_on_beside_a_server_down_writes_only_beside_one_gone() {
        let moment = Duration::from_secs(2);
        let cases = [
            (SettleError::OldDown(down()), moment, [true, false, false]),
            (
                SettleError::OldDown(down()),
                GONE_AFTER,
                [true, true, false],
            ),
            (SettleError::OldDown(slow()), moment, [false, false, false]),
            (
                SettleError::OldDown(slow()),
                GONE_AFTER,
                [false, false, false],
            ),
            (
                SettleError::Failed(down()),
                GONE_AFTER,
                [false, false, false],
            ),
        ];
        for (error, unanswered, [read, write, delete]) in cases {
            let error = error.gone_if_unanswered_for(unanswered);
            let what = format!("{error:?} after {unanswered:?}");
            assert_eq!(error.request_goes_on(false, false), read, "read: {what}");
            assert_eq!(error.request_goes_on(true, false), write, "write: {what}");
            assert_eq!(error.request_goes_on(true, true), delete, "delete: {what}");
        }
    }
}
