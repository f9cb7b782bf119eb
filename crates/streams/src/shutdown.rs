//! One shutdown design for every process, and its contract.
//!
//! * **One token.** `main` creates one [`Shutdown`] and hands a clone to every long-running
//!   loop (ingest's produce loop, the streams task loop, the sink's loop, the HTTP endpoints,
//!   `tickstream run`'s stages). Whatever asks to stop — SIGTERM, SIGINT, the `q` key, a stage
//!   that failed — calls [`Shutdown::request`]; every loop sees the same request. Async loops
//!   await [`Shutdown::requested`]; blocking loops check [`Shutdown::is_requested`] between
//!   records and at least every poll interval.
//! * **One order.** Every loop stops in the same four steps, and says so in its log:
//!   1. *stop sources*: no new input is taken (ingest stops fetching, enrich and the Kafka sink
//!      stop polling their topics);
//!   2. *drain*: what was already taken is finished (ingest flushes its producer, the sink
//!      writes its in-flight batch, enrich finishes the record in hand; in-process, the sink
//!      reads its inputs to their end, which enrich closes once it committed);
//!   3. *commit*: offsets, outputs and state of what was processed become durable together;
//!   4. *close*: tasks and stores are closed and the clients leave their groups.
//! * **One deadline.** `main` allows the loops a fixed time from the request to return (the
//!   binary's `SHUTDOWN_DEADLINE`); past it the runtime is shut down with
//!   `Runtime::shutdown_timeout` and the process exits with its own exit code, so a stuck
//!   commit cannot hold the process forever. What was not committed by then is redone on the
//!   next start (exactly-once: from the last commit).

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::info;

/// The process's request to stop: cheap to clone, one per process (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every loop holding this token (or a clone) to stop. Idempotent.
    pub fn request(&self) {
        self.token.cancel();
    }

    /// Whether stopping was asked for: what blocking loops check between records.
    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once stopping is asked for (at once if it was already).
    pub fn requested(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// [`Self::requested`] as a future that owns its token: for spawned tasks and APIs that
    /// take `impl Future + 'static`.
    pub fn requested_owned(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// The process's one signal handler: requests shutdown on the first SIGTERM or SIGINT,
    /// logging which. The handlers are installed before this returns, so no signal is missed
    /// in between; call it once, inside the runtime. (A second signal is not special: the
    /// deadline in `main` bounds how long stopping takes.)
    pub fn request_on_signals(&self) -> std::io::Result<()> {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let shutdown = self.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
                () = shutdown.requested() => return,
            };
            info!(
                signal = name,
                "stopping: sources stop, then drain, commit, close"
            );
            shutdown.request();
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_one_request_and_late_waiters_complete_at_once() {
        let shutdown = Shutdown::new();
        let loop_token = shutdown.clone();
        let waiter = tokio::spawn(shutdown.requested_owned());
        assert!(!loop_token.is_requested());
        shutdown.request();
        waiter.await.expect("the waiter completes on the request");
        assert!(loop_token.is_requested());
        loop_token.requested().await;
        shutdown.request();
        assert!(shutdown.is_requested(), "a second request changes nothing");
    }
}
