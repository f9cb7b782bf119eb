//! The in-process side of ingest: raw ticks into an [`InMemoryBroker`]'s raw topics, for
//! `tickstream run`. Placed and encoded exactly as on Kafka ([`crate::transport`]); a topic at
//! its capacity makes [`TickTransport::send_batch`] wait for its readers (back-pressure on the
//! source). A produce is acknowledged when it returns, so there is nothing to flush; closing the
//! raw topics at the end of the source is the wiring's job (it knows when every producer ended).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tickstream_model::RawTick;
use tickstream_model::clock::now_ms;
use tickstream_streams::{InMemoryBroker, StoredRecord};

use crate::kafka::SinkError;
use crate::metrics::IngestMetrics;
use crate::transport::{RawRecords, TickTransport, TransportWatch};

/// Raw ticks onto in-process topics.
pub struct MemoryTickSink {
    broker: Arc<InMemoryBroker>,
    records: RawRecords,
    metrics: IngestMetrics,
    /// Produced counters by symbol: no label lookup per record.
    produced: BTreeMap<String, IntCounter>,
    delivered: u64,
}

impl MemoryTickSink {
    /// A producer for `topology`'s raw topics on `broker` (which must have them: create them
    /// first, and subscribe their readers, see [`InMemoryBroker`]).
    pub fn new(
        broker: Arc<InMemoryBroker>,
        topology: &tickstream_model::Topology,
        metrics: &IngestMetrics,
    ) -> Self {
        Self {
            broker,
            records: RawRecords::new(topology),
            metrics: metrics.clone(),
            produced: BTreeMap::new(),
            delivered: 0,
        }
    }

    fn count(&mut self, symbol: &str) {
        if let Some(counter) = self.produced.get(symbol) {
            counter.inc();
            return;
        }
        let counter = self.metrics.produced_counter(symbol);
        counter.inc();
        self.produced.insert(symbol.to_owned(), counter);
    }
}

/// The in-process transport is always there: ready while the process runs.
pub struct AlwaysReady;

impl TransportWatch for AlwaysReady {
    fn check(&mut self) -> Result<bool, SinkError> {
        Ok(true)
    }
}

impl TickTransport for MemoryTickSink {
    type Watch = AlwaysReady;

    fn watch(&self) -> AlwaysReady {
        AlwaysReady
    }

    async fn send_batch(&mut self, ticks: &[RawTick]) -> Result<(), SinkError> {
        // One atomic produce per topic, in the ticks' order within it.
        let now = now_ms();
        let mut by_topic: BTreeMap<String, Vec<StoredRecord>> = BTreeMap::new();
        for tick in ticks {
            let (record, value) = self.records.encode(tick)?;
            let stored = StoredRecord {
                key: Some(record.key.to_vec()),
                value: value.to_vec(),
                // As librdkafka stamps a record: its creation time.
                timestamp: Some(now),
                headers: Vec::new(),
            };
            match by_topic.get_mut(record.topic) {
                Some(batch) => batch.push(stored),
                None => {
                    by_topic.insert(record.topic.to_owned(), vec![stored]);
                }
            }
        }
        for (topic, records) in by_topic {
            let symbols: Vec<String> = records
                .iter()
                .filter_map(|r| r.key.as_deref())
                .map(|key| String::from_utf8_lossy(key).into_owned())
                .collect();
            self.broker
                .produce_async(&topic, records)
                .await
                .map_err(|source| SinkError::InProcess {
                    topic: topic.clone(),
                    source,
                })?;
            self.delivered += symbols.len() as u64;
            for symbol in &symbols {
                self.count(symbol);
            }
        }
        Ok(())
    }

    async fn flush(&mut self, _timeout: Duration) -> Result<(), SinkError> {
        Ok(())
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }
}

#[cfg(test)]
mod tests {
    use tickstream_model::{Symbol, Topology};

    use super::*;

    fn tick(symbol: &str, price: f64) -> RawTick {
        RawTick {
            symbol: Symbol::new(symbol).expect("a valid symbol"),
            price,
            ts: Some(1_700_000_000_000),
            source: Some("test".into()),
            qty: None,
            trade_id: None,
            buyer_maker: None,
        }
    }

    #[tokio::test]
    async fn ticks_land_keyed_on_their_raw_topic_and_an_unknown_symbol_stops_ingest() {
        let topology = Topology::from_str(
            r#"
            symbols = ["BTCUSDT", "ETHUSDT"]
            [topics]
            raw = "prices.raw"
            "#,
        )
        .expect("a valid topology");
        let broker = InMemoryBroker::new();
        broker.create_topic("prices.raw", 1);
        broker.subscribe("reader", "prices.raw").expect("subscribe");
        let metrics = IngestMetrics::new("test");
        let mut sink = MemoryTickSink::new(Arc::clone(&broker), &topology, &metrics);
        sink.send_batch(&[tick("BTCUSDT", 1.5), tick("ETHUSDT", 2.5)])
            .await
            .expect("sent");
        assert_eq!(sink.delivered(), 2);
        let stored = broker.read("prices.raw", 0, 0, 10).expect("read");
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].key.as_deref(), Some(&b"BTCUSDT"[..]));
        assert_eq!(
            stored[1].value,
            tick("ETHUSDT", 2.5).encode(topology.topics.raw_format)
        );
        assert_eq!(metrics.produced_counter("ETHUSDT").get(), 1);

        let error = sink
            .send_batch(&[tick("DOGEUSDT", 0.1)])
            .await
            .expect_err("no raw topic for DOGEUSDT");
        assert!(
            matches!(&error, SinkError::NoTopic { symbol } if symbol == "DOGEUSDT"),
            "{error}"
        );
    }
}
