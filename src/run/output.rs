//! The embedded mode's sink: every record of the raw, derived and dead-letter topics appended
//! to `<data dir>/<topic>.jsonl`, fed to the live view, and written to MongoDB when asked.
//!
//! It reads every partition as the reader group `<application_id>-sink` and commits a batch once
//! it is written (files flushed, MongoDB acknowledged), which releases it from the transport.
//! Records that cannot be stored in MongoDB — unmappable, or refused by it — are dead-lettered
//! as the Kafka sink does: into the dead-letter file, with the reason in the headers. (Into the
//! file rather than the dead-letter topic: this sink is that topic's reader, and waiting for
//! room in a topic only it drains would never end.) It ends when all its topics have ended.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use tickstream_model::{
    DecodeOptions, DerivedEvent, EventKind, Jump, MovingAverage, Topology, Volatility,
};
use tickstream_sink::{DocumentMapper, MONGODB_REJECTED, MongoWriter, SinkDocument};
use tickstream_streams::private_fs::append_private_file;
use tickstream_streams::{InMemoryBroker, Record, Shutdown, StoredRecord, dlq_headers};
use tracing::warn;

use super::view::LiveView;

/// Records polled per partition per turn.
const BATCH: usize = 1_000;
/// The longest an idle sink sleeps before looking again.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Between attempts while MongoDB is away.
const MONGODB_RETRY: Duration = Duration::from_secs(1);

/// What a topic holds, for the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Raw,
    Derived(EventKind),
    DeadLetters,
}

struct FollowedTopic {
    name: String,
    content: Content,
    /// Per partition: read to the end of the closed topic.
    ended: Vec<bool>,
    file: BufWriter<File>,
}

/// A record on its way to MongoDB: where it came from, for the dead-letter file if refused.
struct Origin {
    topic: String,
    partition: i32,
    offset: i64,
    record: StoredRecord,
}

/// One turn's reading: documents for MongoDB, and the positions to commit once written.
#[derive(Default)]
struct Turn {
    read: usize,
    documents: Vec<SinkDocument>,
    origins: Vec<Origin>,
    /// Records this sink could not map for MongoDB.
    dead_letters: Vec<StoredRecord>,
    commits: Vec<(String, i32, i64)>,
}

pub struct Output {
    topics: Vec<FollowedTopic>,
    /// Where this sink's own dead letters go: the dead-letter topic's file.
    dead_letters: usize,
    /// The reader group, also the application named in this sink's dead letters (as the
    /// Kafka sink names itself): `<application_id>-sink`.
    group: String,
    decode: DecodeOptions,
    mongo: Option<(MongoWriter, DocumentMapper)>,
}

impl Output {
    /// Opens (appending) one JSON Lines file per topic in `data_dir`, subscribes to the topics,
    /// and connects to MongoDB when a URI is given — failing now, not later, if it does not
    /// answer.
    pub async fn open(
        data_dir: &Path,
        topology: &Arc<Topology>,
        broker: &InMemoryBroker,
        mongodb_uri: Option<&str>,
    ) -> anyhow::Result<Self> {
        let group = format!("{}-sink", topology.application_id);
        let mut topics = Vec::new();
        let mut follow = |name: &str, content: Content| -> anyhow::Result<()> {
            let path: PathBuf = data_dir.join(format!("{name}.jsonl"));
            // Results are the owner's only (0600), whatever the umask.
            let file = append_private_file(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            broker
                .subscribe(&group, name)
                .with_context(|| format!("following {name}"))?;
            let partitions = broker.partition_count(name)?;
            topics.push(FollowedTopic {
                name: name.to_owned(),
                content,
                ended: vec![false; partitions],
                file: BufWriter::new(file),
            });
            Ok(())
        };
        for topic in topology.raw_topics() {
            follow(topic, Content::Raw)?;
        }
        for kind in EventKind::ALL {
            follow(topology.topic(kind), Content::Derived(kind))?;
        }
        follow(&topology.topics.dead_letter, Content::DeadLetters)?;
        let dead_letters = topics.len() - 1;
        let mongo = match mongodb_uri {
            Some(uri) => {
                let writer = MongoWriter::connect(uri, topology).await?;
                writer.ensure_indexes().await?;
                Some((writer, DocumentMapper::new(topology)))
            }
            None => None,
        };
        Ok(Self {
            topics,
            dead_letters,
            group,
            decode: topology.decode_options(),
            mongo,
        })
    }

    /// Follows the topics until all of them ended, writing and committing as it goes; leaves
    /// the group at the end (also on error, so producers never wait for a sink that is gone).
    /// `stop` only cuts MongoDB retries short. Blocking: MongoDB writes wait on the runtime
    /// through `handle`.
    pub fn follow(
        mut self,
        broker: &InMemoryBroker,
        view: &Mutex<LiveView>,
        stop: &Shutdown,
        handle: &tokio::runtime::Handle,
    ) -> anyhow::Result<()> {
        let result = self.follow_to_the_end(broker, view, stop, handle);
        broker.leave(&self.group);
        result
    }

    fn follow_to_the_end(
        &mut self,
        broker: &InMemoryBroker,
        view: &Mutex<LiveView>,
        stop: &Shutdown,
        handle: &tokio::runtime::Handle,
    ) -> anyhow::Result<()> {
        loop {
            let seen = broker.generation();
            let mut turn = self.read_turn(broker, view)?;
            if let Some((writer, _)) = &self.mongo {
                let refused = write_to_mongodb(writer, &turn.documents, handle, stop)?;
                turn.dead_letters
                    .extend(refused.into_iter().map(|(index, message)| {
                        turn.origins[index].dead_letter(MONGODB_REJECTED, &message, &self.group)
                    }));
            }
            self.write_dead_letters(&turn.dead_letters, view)?;
            for (topic, partition, next_offset) in &turn.commits {
                broker.commit(&self.group, topic, *partition, *next_offset)?;
            }
            if self.topics.iter().all(|t| t.ended.iter().all(|e| *e)) {
                return Ok(());
            }
            if turn.read == 0 {
                broker.wait_for_change(seen, IDLE_WAIT);
            }
        }
    }

    /// Polls every partition once: lines written and flushed, the view fed, documents mapped.
    fn read_turn(
        &mut self,
        broker: &InMemoryBroker,
        view: &Mutex<LiveView>,
    ) -> anyhow::Result<Turn> {
        let mut turn = Turn::default();
        let mut view = view.lock().unwrap_or_else(PoisonError::into_inner);
        for topic in &mut self.topics {
            for partition in 0..topic.ended.len() {
                if topic.ended[partition] {
                    continue;
                }
                let fetched = broker
                    .poll(&self.group, &topic.name, partition as i32, BATCH)
                    .with_context(|| format!("reading {}", topic.name))?;
                topic.ended[partition] = fetched.end_of_partition;
                for (i, stored) in fetched.records.iter().enumerate() {
                    write_line(&mut topic.file, topic.content, stored)
                        .with_context(|| format!("writing {}.jsonl", topic.name))?;
                    show(&mut view, topic.content, &self.decode, stored);
                    let Some((_, mapper)) = &self.mongo else {
                        continue;
                    };
                    if topic.content == Content::DeadLetters {
                        continue;
                    }
                    let origin = Origin {
                        topic: topic.name.clone(),
                        partition: partition as i32,
                        offset: fetched.first_offset + i as i64,
                        record: stored.clone(),
                    };
                    match mapper.map(&origin.as_record()) {
                        Ok(document) => {
                            turn.documents.push(document);
                            turn.origins.push(origin);
                        }
                        Err(e) => turn.dead_letters.push(origin.dead_letter(
                            e.code,
                            &e.message,
                            &self.group,
                        )),
                    }
                }
                turn.read += fetched.records.len();
                turn.commits
                    .push((topic.name.clone(), partition as i32, fetched.next_offset()));
            }
            topic
                .file
                .flush()
                .with_context(|| format!("writing {}.jsonl", topic.name))?;
        }
        Ok(turn)
    }

    /// This sink's own dead letters, beside those of enrich in the dead-letter file.
    fn write_dead_letters(
        &mut self,
        records: &[StoredRecord],
        view: &Mutex<LiveView>,
    ) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let topic = &mut self.topics[self.dead_letters];
        let mut view = view.lock().unwrap_or_else(PoisonError::into_inner);
        for record in records {
            write_line(&mut topic.file, Content::DeadLetters, record)?;
            view.on_dead_letter();
        }
        topic
            .file
            .flush()
            .with_context(|| format!("writing {}.jsonl", topic.name))
    }
}

impl Origin {
    fn as_record(&self) -> Record<'_> {
        Record {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp: self.record.timestamp,
            key: self.record.key.as_deref(),
            value: Some(&self.record.value),
        }
    }

    /// The record unchanged, with the reason in the dead-letter headers after its own.
    fn dead_letter(&self, code: &str, message: &str, application: &str) -> StoredRecord {
        let reasons = dlq_headers::headers(
            code,
            message,
            &self.topic,
            self.partition,
            self.offset,
            application,
        );
        let mut record = self.record.clone();
        record
            .headers
            .extend(reasons.map(|(name, value)| (name.to_owned(), value)));
        record
    }
}

/// Writes one batch, retrying while MongoDB is away (nothing is dropped) until `stop`; returns
/// the documents MongoDB refused for their content, as (index in `documents`, reason).
fn write_to_mongodb(
    writer: &MongoWriter,
    documents: &[SinkDocument],
    handle: &tokio::runtime::Handle,
    stop: &Shutdown,
) -> anyhow::Result<Vec<(usize, String)>> {
    if documents.is_empty() {
        return Ok(Vec::new());
    }
    loop {
        match handle.block_on(writer.write_batch(documents)) {
            Ok(report) => {
                return Ok(report
                    .rejected
                    .into_iter()
                    .map(|r| {
                        warn!(
                            code = r.code,
                            "MongoDB refused a document, dead-lettered: {}", r.message
                        );
                        (r.index, r.message)
                    })
                    .collect());
            }
            Err(e) if !stop.is_requested() => {
                warn!("MongoDB write failed, retrying in {MONGODB_RETRY:?}: {e}");
                std::thread::sleep(MONGODB_RETRY);
            }
            Err(e) => return Err(e).context("writing the last batch to MongoDB"),
        }
    }
}
/// Values are JSON already; a dead letter may be anything, so it is wrapped with its reason.
fn write_line(
    file: &mut impl Write,
    content: Content,
    record: &StoredRecord,
) -> std::io::Result<()> {
    if content == Content::DeadLetters {
        let headers: serde_json::Map<String, serde_json::Value> = record
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let line = serde_json::json!({
            "headers": headers,
            "value": String::from_utf8_lossy(&record.value),
        });
        writeln!(file, "{line}")
    } else {
        file.write_all(&record.value)?;
        file.write_all(b"\n")
    }
}

fn show(view: &mut LiveView, content: Content, decode: &DecodeOptions, record: &StoredRecord) {
    match content {
        Content::Raw => {
            if let Ok(tick) = decode.decode(&record.value) {
                view.on_tick(&tick);
            }
        }
        Content::Derived(EventKind::MovingAverage) => {
            if let Ok(event) = MovingAverage::decode(&record.value) {
                view.on_moving_average(&event);
            }
        }
        Content::Derived(EventKind::Volatility) => {
            if let Ok(event) = Volatility::decode(&record.value) {
                view.on_volatility(&event);
            }
        }
        Content::Derived(EventKind::Jump) => {
            if let Ok(event) = Jump::decode(&record.value) {
                view.on_jump(event);
            }
        }
        Content::DeadLetters => view.on_dead_letter(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_record_is_dead_lettered_unchanged_with_the_reason_after_its_own_headers() {
        let origin = Origin {
            topic: "prices.raw".to_owned(),
            partition: 2,
            offset: 41,
            record: StoredRecord {
                key: Some(b"BTCUSDT".to_vec()),
                value: b"{\"symbol\":\"BTCUSDT\"}".to_vec(),
                timestamp: Some(7),
                headers: vec![("trace".to_owned(), "abc".to_owned())],
            },
        };
        let letter = origin.dead_letter(MONGODB_REJECTED, "document too large", "app-sink");
        assert_eq!(letter.value, origin.record.value);
        assert_eq!(letter.key, origin.record.key);
        assert_eq!(letter.headers[0], ("trace".to_owned(), "abc".to_owned()));
        for (name, value) in [
            (dlq_headers::ERROR_CODE, MONGODB_REJECTED),
            (dlq_headers::ERROR_MESSAGE, "document too large"),
            (dlq_headers::SOURCE_TOPIC, "prices.raw"),
            (dlq_headers::SOURCE_PARTITION, "2"),
            (dlq_headers::SOURCE_OFFSET, "41"),
            (dlq_headers::APPLICATION, "app-sink"),
        ] {
            assert!(
                letter
                    .headers
                    .contains(&(name.to_owned(), value.to_owned())),
                "{name}={value} in {:?}",
                letter.headers
            );
        }
        let mut line = Vec::new();
        write_line(&mut line, Content::DeadLetters, &letter).expect("write to memory");
        let line: serde_json::Value = serde_json::from_slice(&line).expect("one JSON object");
        assert_eq!(line["headers"][dlq_headers::ERROR_CODE], MONGODB_REJECTED);
    }
}
