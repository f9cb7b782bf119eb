//! The loop's contract over a scripted transport: no broker, no tasks.

use std::collections::VecDeque;

use super::*;

/// Answers polls from a script, then asks to stop; records what the loop asked of it.
struct Scripted {
    polls: VecDeque<Polled>,
    shutdown: Shutdown,
    /// The `max_wait` of every poll.
    waits: Vec<Duration>,
    /// Records taken since this transport's last commit.
    pending: usize,
    /// What each commit made durable, in order.
    commits: Vec<usize>,
    punctuations: usize,
    reachable: bool,
    refuse_commits: bool,
}

impl Scripted {
    fn new(shutdown: &Shutdown, polls: &[Polled]) -> Self {
        Self {
            polls: polls.iter().copied().collect(),
            shutdown: shutdown.clone(),
            waits: Vec::new(),
            pending: 0,
            commits: Vec::new(),
            punctuations: 0,
            reachable: true,
            refuse_commits: false,
        }
    }
}

impl StreamsTransport for Scripted {
    type Error = &'static str;

    fn poll(&mut self, max_wait: Duration) -> Result<Polled, Self::Error> {
        self.waits.push(max_wait);
        let polled = self.polls.pop_front().unwrap_or_default();
        if self.polls.is_empty() {
            self.shutdown.request();
        }
        self.pending += polled.records;
        Ok(polled)
    }

    fn punctuate(&mut self, _now_ms: i64) -> Result<(), Self::Error> {
        self.punctuations += 1;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), Self::Error> {
        if self.refuse_commits {
            return Err("the commit failed for good");
        }
        self.commits.push(std::mem::take(&mut self.pending));
        Ok(())
    }

    fn can_commit(&self) -> bool {
        self.reachable
    }
}

fn took(records: usize) -> Polled {
    Polled {
        records,
        ended: false,
    }
}

fn config(commit_interval: Duration, max_uncommitted_records: usize) -> StreamsConfig {
    let mut config = StreamsConfig::new("loop", "", &["in"]);
    config.commit_interval = commit_interval;
    config.max_uncommitted_records = max_uncommitted_records;
    config
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn a_commit_is_due_after_max_uncommitted_records_and_a_stop_commits_the_rest() {
    let (shutdown, health) = (Shutdown::new(), Health::default());
    let config = config(HOUR, 5);
    let mut transport = Scripted::new(&shutdown, &[took(3), took(3), took(1), took(4), took(2)]);
    let stopped = StreamLoop::new(&config, &shutdown, &health).run(&mut transport);
    assert_eq!(stopped, Ok(Stopped::Requested));
    assert_eq!(
        transport.commits,
        [6, 5, 2],
        "due at 5 taken; the stop commits the 2 left over"
    );
    assert_eq!(transport.punctuations, 5, "one punctuation check per turn");
    assert!(
        transport
            .waits
            .iter()
            .all(|w| *w > HOUR - Duration::from_secs(60)),
        "with nothing due a poll may wait (its own bound applies): {:?}",
        transport.waits
    );
}

#[test]
fn the_end_of_the_input_ends_the_loop_with_a_last_commit() {
    let (shutdown, health) = (Shutdown::new(), Health::default());
    let config = config(HOUR, 1_000);
    let end = Polled {
        records: 1,
        ended: true,
    };
    let mut transport = Scripted::new(&shutdown, &[took(2), end, took(7)]);
    let stopped = StreamLoop::new(&config, &shutdown, &health).run(&mut transport);
    assert_eq!(stopped, Ok(Stopped::InputEnded));
    assert_eq!(
        transport.commits,
        [3],
        "everything processed, committed once"
    );
    assert_eq!(transport.waits.len(), 2, "nothing is polled after the end");
    assert!(!shutdown.is_requested());
    assert!(health.is_alive());
}

#[test]
fn an_elapsed_interval_makes_a_commit_due_and_polls_do_not_wait_past_it() {
    let (shutdown, health) = (Shutdown::new(), Health::default());
    let config = config(Duration::ZERO, 1_000);
    let mut transport = Scripted::new(&shutdown, &[took(0), took(0), took(1)]);
    let stopped = StreamLoop::new(&config, &shutdown, &health).run(&mut transport);
    assert_eq!(stopped, Ok(Stopped::Requested));
    assert_eq!(
        transport.commits,
        [0, 0, 1, 0],
        "due every turn, idle or not, then the last commit"
    );
    assert!(transport.waits.iter().all(Duration::is_zero));
}

#[test]
fn a_stop_before_the_first_turn_polls_nothing_and_still_commits() {
    let (shutdown, health) = (Shutdown::new(), Health::default());
    shutdown.request();
    let config = config(HOUR, 5);
    let mut transport = Scripted::new(&shutdown, &[took(9)]);
    let stopped = StreamLoop::new(&config, &shutdown, &health).run(&mut transport);
    assert_eq!(stopped, Ok(Stopped::Requested));
    assert!(transport.waits.is_empty());
    assert_eq!(transport.commits, [0]);
}

#[test]
fn a_failed_commit_ends_the_loop_and_an_unreachable_broker_skips_the_last_commit() {
    let (shutdown, health) = (Shutdown::new(), Health::default());
    let config = config(HOUR, 2);
    let mut transport = Scripted::new(&shutdown, &[took(1), took(1), took(1)]);
    transport.refuse_commits = true;
    let stopped = StreamLoop::new(&config, &shutdown, &health).run(&mut transport);
    assert_eq!(stopped, Err("the commit failed for good"));
    assert_eq!(transport.waits.len(), 2, "no turn after the failure");

    let shutdown = Shutdown::new();
    let mut transport = Scripted::new(&shutdown, &[took(1)]);
    transport.reachable = false;
    let stopped = StreamLoop::new(&config, &shutdown, &health).run(&mut transport);
    assert_eq!(stopped, Ok(Stopped::Requested));
    assert!(
        transport.commits.is_empty(),
        "the batch is redone from the last commit instead"
    );
}
