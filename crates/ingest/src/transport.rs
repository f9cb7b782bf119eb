//! Where ingest's ticks go: the one produce loop ([`crate::pipeline::run`]) is written over
//! [`TickTransport`], with two implementations — Kafka ([`crate::KafkaTickSink`], for the
//! `ingest` processor) and the in-process transport ([`crate::MemoryTickSink`], for
//! `tickstream run`). Both place a tick the same way ([`RawRecord`]): on the raw topic the
//! topology gives its symbol, key = the symbol, value = the tick in the topology's
//! `raw_format`; a tick whose symbol has no raw topic stops ingest on both ([`SinkError::NoTopic`]).

use std::time::Duration;

use tickstream_model::{RawTick, RecordFormat, Topology};

use crate::kafka::SinkError;

/// A destination for raw ticks, as the produce loop needs it.
pub trait TickTransport: Send {
    /// Watches the transport's health apart from the sends (which may be waiting meanwhile).
    type Watch: TransportWatch;

    /// The watch the loop checks every turn.
    fn watch(&self) -> Self::Watch;

    /// Takes every tick of the batch, waiting while the transport is full (back-pressure on
    /// the source, never unbounded growth); fails on the first failure reported so far.
    fn send_batch(
        &mut self,
        ticks: &[RawTick],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Waits up to `timeout` for every tick taken to be acknowledged (the drain step of the
    /// shutdown order).
    fn flush(&mut self, timeout: Duration) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Ticks acknowledged so far.
    fn delivered(&self) -> u64;
}

/// Readiness and giving up, checked by the loop while it fetches or sends.
pub trait TransportWatch: Send {
    /// Whether the transport takes ticks now (readiness); `Err` once it has been unreachable
    /// for `processing.give_up_after`. Never blocks.
    fn check(&mut self) -> Result<bool, SinkError>;
}

/// How a tick becomes a record, the same on every transport.
pub(crate) struct RawRecord<'t> {
    pub(crate) topic: &'t str,
    pub(crate) key: &'t [u8],
}

/// Places ticks of `topology` and encodes them into a reusable buffer.
pub(crate) struct RawRecords {
    topology: Topology,
    format: RecordFormat,
    buffer: Vec<u8>,
}

impl RawRecords {
    pub(crate) fn new(topology: &Topology) -> Self {
        Self {
            topology: topology.clone(),
            format: topology.topics.raw_format,
            buffer: Vec::with_capacity(128),
        }
    }

    /// Where `tick` goes, and its value (valid until the next call).
    pub(crate) fn encode<'s>(
        &'s mut self,
        tick: &'s RawTick,
    ) -> Result<(RawRecord<'s>, &'s [u8]), SinkError> {
        let symbol = tick.symbol.as_str();
        let topic = self
            .topology
            .raw_topic_for(symbol)
            .ok_or_else(|| SinkError::NoTopic {
                symbol: symbol.to_owned(),
            })?;
        self.buffer.clear();
        tick.encode_into(self.format, &mut self.buffer);
        let record = RawRecord {
            topic,
            key: symbol.as_bytes(),
        };
        Ok((record, &self.buffer))
    }
}
