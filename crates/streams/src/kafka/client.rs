//! The librdkafka settings of every Kafka client tickstream creates — the runtime's consumer,
//! restore consumer, producer and admin clients, the sink's consumer and dead-letter producer,
//! ingest's producer — built in one place, in one order:
//!
//! 1. `bootstrap.servers`;
//! 2. the client's own defaults (each client passes its own: idempotence, linger, compression
//!    and the like differ on purpose from one client to the next);
//! 3. the user's settings (`TICKSTREAM_KAFKA_CONFIG_*`, already checked by
//!    [`crate::KafkaSettings`]), which win over those defaults.
//!
//! A client that cannot run without some setting (the runtime's transactional and group
//! settings) sets it on the returned configuration afterwards, so it wins over the user's.

use std::time::Duration;

use rdkafka::ClientConfig;

/// `bootstrap.servers = brokers`, then `defaults`, then `user`'s settings, which win.
pub fn client_config(
    brokers: &str,
    defaults: &[(&str, &str)],
    user: &[(String, String)],
) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    for (key, value) in defaults {
        client.set(*key, *value);
    }
    for (key, value) in user {
        client.set(key, value);
    }
    client
}

/// Gives a client its bootstrap brokers again during an outage, at the first failed probe
/// (or retry), then after 2, 4, 8, … failures.
///
/// librdkafka 2.10–2.13 decommissions every broker a metadata response leaves out, and a KRaft
/// broker fenced for a moment (its controller does that to a broker that stalled past its
/// session, then re-admits it) answers one listing no broker at all: the client is left with
/// none, and the same "successful" response stopped its re-bootstrap timer, so it never
/// reconnects (confluentinc/librdkafka#5301, open; #5303 proposes re-bootstrapping then, as
/// this does). Such a client is healed at the first failure. A client whose broker is simply
/// down gets a handful of calls over the longest outage: each call there adds a duplicate of
/// the broker it knows (librdkafka skips only brokers it has *configured* already), which the
/// next metadata answer drops.
#[derive(Debug, Default)]
pub struct Rebootstrapper {
    failures: u32,
}

impl Rebootstrapper {
    /// A probe (or retry) failed: re-bootstraps `client` with `brokers` (its
    /// `bootstrap.servers`) when due; returns whether it did.
    pub fn failed<C: rdkafka::ClientContext>(
        &mut self,
        client: &rdkafka::client::Client<C>,
        brokers: &str,
    ) -> bool {
        let due = self.due();
        if due {
            rebootstrap(client, brokers);
        }
        due
    }

    /// The brokers answered: the next failure re-bootstraps at once.
    pub fn answered(&mut self) {
        self.failures = 0;
    }

    fn due(&mut self) -> bool {
        self.failures = self.failures.saturating_add(1);
        self.failures.is_power_of_two()
    }
}

/// Adds `brokers` to `client`'s brokers (`rd_kafka_brokers_add`).
fn rebootstrap<C: rdkafka::ClientContext>(client: &rdkafka::client::Client<C>, brokers: &str) {
    let Ok(list) = std::ffi::CString::new(brokers) else {
        return; // validated settings hold no NUL byte
    };
    // SAFETY: `client` keeps its handle alive for the call; `rd_kafka_brokers_add` copies the
    // list, which is a valid NUL-terminated string, and may be called from any thread.
    unsafe {
        rdkafka::bindings::rd_kafka_brokers_add(client.native_ptr(), list.as_ptr());
    }
}

/// `fetch.queue.backoff.ms` for every consumer here (a default: the user's setting wins).
///
/// librdkafka stops fetching a partition once the consumer's queue holds `queued.min.messages`
/// (100,000; for a consumer that polls one queue, that is every partition's records together)
/// and looks again only after this backoff, 1,000 ms by default. A processor that drains
/// 100,000 records in half a second then waits half a second for input: enrich was held at
/// ~105,000 ticks/s at 10 symbols with a core idle (BENCHMARKS.md, issue 16, seventh pass).
/// With 50 ms the queue is topped up before it runs dry. Its bounds are unchanged
/// (`queued.min.messages` plus one fetch, `queued.max.messages.kbytes`); it is fuller on
/// average, so enrich's peak RSS grew a little (95 → 111–123 MiB in that bench).
pub const FETCH_QUEUE_BACKOFF: Duration = Duration::from_millis(50);

/// A duration as a librdkafka `*.ms` value; librdkafka takes at most `i32::MAX` ms (~24 days).
pub fn kafka_millis(duration: Duration) -> String {
    duration.as_millis().min(i32::MAX as u128).to_string()
}

/// Implements rdkafka's `ClientContext` for a context type by handing librdkafka's log lines
/// and errors to the [`crate::ClientLog`] it holds, at the level they deserve:
/// `forward_client_log!(SinkContext, log)`, or with a path: `forward_client_log!(Counter, 0.log)`.
#[macro_export]
macro_rules! forward_client_log {
    ($context:ty, $($log:tt)+) => {
        impl ::rdkafka::ClientContext for $context {
            fn log(
                &self,
                level: ::rdkafka::config::RDKafkaLogLevel,
                facility: &str,
                message: &str,
            ) {
                self.$($log)+.log(level, facility, message);
            }

            fn error(&self, error: ::rdkafka::error::KafkaError, reason: &str) {
                self.$($log)+.error(&error, reason);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebootstraps_are_due_at_the_first_failure_then_ever_more_rarely() {
        let mut rebootstrapper = Rebootstrapper::default();
        let due = (1..=20).filter(|_| rebootstrapper.due()).count();
        assert_eq!(due, 5, "failures 1, 2, 4, 8 and 16 of 20");
        let mut rebootstrapper = Rebootstrapper::default();
        let schedule: Vec<bool> = (0..8).map(|_| rebootstrapper.due()).collect();
        assert_eq!(
            schedule,
            [true, true, false, true, false, false, false, true]
        );
        rebootstrapper.answered();
        assert!(rebootstrapper.due(), "an answer starts the schedule over");
    }

    #[test]
    fn the_users_settings_win_over_the_defaults() {
        let user = [("compression.type".to_owned(), "gzip".to_owned())];
        let config = client_config(
            "b:9092",
            &[("compression.type", "zstd"), ("acks", "all")],
            &user,
        );
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(config.get("compression.type"), Some("gzip"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(kafka_millis(Duration::from_secs(90)), "90000");
        assert_eq!(kafka_millis(Duration::MAX), i32::MAX.to_string());
    }
}
