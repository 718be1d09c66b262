//! [`Pending`]: one result being computed on another thread (the trained heads' thread, see
//! `heads_worker.rs`), held by the captures of the evaluation that asked for it until it is needed.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

/// A result being computed on the heads thread.
#[derive(Debug)]
pub struct Pending<T> {
    /// In a mutex only so that the captures holding it can be shared; one thread waits on it.
    result: Mutex<Receiver<Result<T, String>>>,
}

impl<T> Pending<T> {
    /// The sender the job delivers its result to, and the pending result.
    pub(super) fn new() -> (SyncSender<Result<T, String>>, Pending<T>) {
        let (done, result) = sync_channel(1);
        (done, Pending { result: Mutex::new(result) })
    }

    /// Blocks until the job has run.
    pub fn wait(&self) -> Result<T, String> {
        let result = self.result.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        result.recv().unwrap_or_else(|_| Err("the heads worker stopped".into()))
    }
}
