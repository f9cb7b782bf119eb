//! Riding out a broker outage: how long it has lasted, when to give up, what to say.
//!
//! A commit that fails, or a consumer that reports every broker down, starts an outage; the
//! first success ends it. Meanwhile the instance is not ready, retries with backoff and logs
//! at WARN once (then DEBUG); an outage longer than `give_up_after` is an error a person must
//! look at, and the process exits naming it.

use std::fmt::Display;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::StreamsError;

pub(crate) struct Outage {
    give_up_after: Duration,
    since: Option<Instant>,
    /// Retries so far in this outage: the backoff grows with them.
    attempts: u32,
    /// A commit failed: only a commit ends the outage. A broker that answers metadata while
    /// every commit fails (a record it refuses for good) must still run into the bound.
    commits_failing: bool,
}

impl Outage {
    pub(crate) fn new(give_up_after: Duration) -> Self {
        Self {
            give_up_after,
            since: None,
            attempts: 0,
            commits_failing: false,
        }
    }

    /// A commit failed (see [`Self::failed`]).
    pub(crate) fn commit_failed(&mut self, error: &dyn Display) -> Result<(), StreamsError> {
        self.commits_failing = true;
        self.failed(
            "committing (aborting and reprocessing from the last committed positions)",
            error,
        )
    }

    /// The failing batch went with its revoked tasks: nothing is left whose commit must prove
    /// the broker back, so the next probe it answers ends the outage. Without this an
    /// instance left with no partitions after an outage (its session timed out meanwhile)
    /// stayed not ready for good: it has nothing to commit.
    pub(crate) fn batch_abandoned(&mut self) {
        self.commits_failing = false;
    }

    /// The broker answered a probe: the outage is over unless commits are what fails.
    pub(crate) fn probe_answered(&mut self) -> bool {
        !self.commits_failing && self.recovered()
    }

    pub(crate) fn is_on(&self) -> bool {
        self.since.is_some()
    }

    /// Something failed that a reachable broker would have done: note it, and fail once the
    /// outage has lasted longer than `give_up_after`.
    pub(crate) fn failed(&mut self, what: &str, error: &dyn Display) -> Result<(), StreamsError> {
        let since = *self.since.get_or_insert_with(Instant::now);
        self.attempts = self.attempts.saturating_add(1);
        if self.attempts == 1 {
            warn!(%error, "{what} failed; retrying with backoff until the broker answers");
        } else {
            debug!(%error, attempt = self.attempts, "{what} failed again");
        }
        let lasted = since.elapsed();
        if lasted > self.give_up_after {
            return Err(StreamsError::Outage {
                what: what.to_owned(),
                lasted_secs: lasted.as_secs(),
                last_error: error.to_string(),
            });
        }
        Ok(())
    }

    /// How long to wait before the next retry: the one retry rule's backoff (100 ms doubling
    /// to 5 s, [`super::dead_letter::retry_delay`]).
    pub(crate) fn backoff(&self) -> Duration {
        super::dead_letter::retry_delay(self.attempts)
    }

    /// Something worked: the outage, if any, is over. Returns whether one was.
    pub(crate) fn recovered(&mut self) -> bool {
        self.commits_failing = false;
        match self.since.take() {
            Some(since) => {
                info!(
                    lasted_ms = since.elapsed().as_millis() as u64,
                    "the broker answers again"
                );
                self.attempts = 0;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_given_up_only_after_its_bound_and_ends_with_a_success() {
        let mut outage = Outage::new(Duration::from_secs(3600));
        assert!(!outage.is_on());
        outage
            .failed("committing", &"broker down")
            .expect("within bound");
        assert!(outage.is_on());
        assert_eq!(outage.backoff(), Duration::from_millis(100));
        outage
            .failed("committing", &"broker down")
            .expect("within bound");
        assert_eq!(outage.backoff(), Duration::from_millis(200));
        assert!(outage.recovered());
        assert!(!outage.recovered());

        outage
            .commit_failed(&"message timed out")
            .expect("within bound");
        assert!(
            !outage.probe_answered(),
            "only a commit ends a commit failure"
        );
        outage.batch_abandoned();
        assert!(outage.probe_answered(), "unless its batch is gone");
        assert!(!outage.is_on());

        let mut short = Outage::new(Duration::ZERO);
        short.since = Some(Instant::now() - Duration::from_millis(5));
        let error = short
            .failed("committing", &"all brokers down")
            .expect_err("over");
        assert!(error.to_string().contains("all brokers down"), "{error}");
    }
}
