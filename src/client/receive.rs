//! Taking a backend's answer off its channel, waiting or not.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::backend::{BackendError, BackendResult};
use crate::protocol::Reply;

/// A backend's answer, if it has come; a dropped sender is a lost connection.
pub(in crate::client) fn poll_receiver<T>(
    rx: &mut oneshot::Receiver<Result<T, BackendError>>,
    cx: Option<&mut Context<'_>>,
) -> Option<Result<T, BackendError>> {
    let closed = || {
        Err(BackendError::ConnectionLost {
            backend: "?".into(),
            reason: "reply dropped".into(),
        })
    };
    match cx {
        Some(cx) => match Pin::new(rx).poll(cx) {
            Poll::Ready(result) => Some(result.unwrap_or_else(|_| closed())),
            Poll::Pending => None,
        },
        None => match rx.try_recv() {
            Ok(result) => Some(result),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(closed()),
        },
    }
}

pub(in crate::client) fn result_reply(result: BackendResult) -> Reply {
    result.unwrap_or_else(|e| e.to_reply())
}
