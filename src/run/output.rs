//! The embedded mode's sink: every record of the raw, derived and dead-letter topics appended
//! to `<data dir>/<topic>.jsonl`, fed to the live view, and written to MongoDB when asked.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use tickstream_model::{
    DecodeOptions, DerivedEvent, EventKind, Jump, MovingAverage, Topology, Volatility,
};
use tickstream_sink::{DocumentMapper, MongoWriter, SinkDocument};
use tickstream_streams::private_fs::append_private_file;
use tickstream_streams::{InMemoryBroker, Record, StoredRecord};
use tracing::warn;

use super::view::LiveView;

/// Records read per topic per turn.
const BATCH: usize = 1_000;

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
    next_offset: i64,
    file: BufWriter<File>,
}

pub struct Output {
    topics: Vec<FollowedTopic>,
    decode: DecodeOptions,
    mongo: Option<(MongoWriter, DocumentMapper)>,
}

impl Output {
    /// Opens (appending) one JSON Lines file per topic in `data_dir`, and MongoDB when a URI is
    /// given — failing now, not later, if it does not answer.
    pub async fn open(
        data_dir: &Path,
        topology: &Arc<Topology>,
        dead_letter_topic: &str,
        mongodb_uri: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut topics = Vec::new();
        let mut follow = |name: &str, content: Content| -> anyhow::Result<()> {
            let path: PathBuf = data_dir.join(format!("{name}.jsonl"));
            // Results are the owner's only (0600), whatever the umask.
            let file = append_private_file(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            topics.push(FollowedTopic {
                name: name.to_owned(),
                content,
                next_offset: 0,
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
        follow(dead_letter_topic, Content::DeadLetters)?;
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
            decode: topology.decode_options(),
            mongo,
        })
    }

    /// Follows the topics until `shutdown`, then drains what is left. Blocking: MongoDB writes
    /// wait on the runtime through `handle`.
    pub fn follow(
        mut self,
        broker: Arc<InMemoryBroker>,
        view: Arc<Mutex<LiveView>>,
        shutdown: Arc<AtomicBool>,
        handle: tokio::runtime::Handle,
    ) -> anyhow::Result<()> {
        loop {
            let stopping = shutdown.load(Ordering::Relaxed);
            let mut documents = Vec::new();
            let mut read = 0;
            for topic in &mut self.topics {
                let records = broker
                    .read(&topic.name, 0, topic.next_offset, BATCH)
                    .with_context(|| format!("reading {}", topic.name))?;
                let mut view = view.lock().unwrap_or_else(PoisonError::into_inner);
                for (i, stored) in records.iter().enumerate() {
                    let offset = topic.next_offset + i as i64;
                    write_line(&mut topic.file, topic.content, stored)
                        .with_context(|| format!("writing {}.jsonl", topic.name))?;
                    show(&mut view, topic.content, &self.decode, stored);
                    if let (Some((_, mapper)), Content::Raw | Content::Derived(_)) =
                        (&self.mongo, topic.content)
                    {
                        let record = Record {
                            topic: &topic.name,
                            partition: 0,
                            offset,
                            timestamp: stored.timestamp,
                            key: stored.key.as_deref(),
                            value: Some(&stored.value),
                        };
                        match mapper.map(&record) {
                            Ok(document) => documents.push(document),
                            Err(e) => {
                                warn!(topic = %topic.name, offset, "not stored in MongoDB: {e}")
                            }
                        }
                    }
                }
                topic.next_offset += records.len() as i64;
                topic
                    .file
                    .flush()
                    .with_context(|| format!("writing {}.jsonl", topic.name))?;
                read += records.len();
            }
            if let Some((writer, _)) = &self.mongo {
                write_to_mongodb(writer, &documents, &handle, &shutdown)?;
            }
            if read == 0 {
                if stopping {
                    return Ok(());
                }
                broker.wait_for_append(Duration::from_millis(100));
            }
        }
    }
}

/// Writes one batch, retrying while MongoDB is away (nothing is dropped), until shutdown.
fn write_to_mongodb(
    writer: &MongoWriter,
    documents: &[SinkDocument],
    handle: &tokio::runtime::Handle,
    shutdown: &AtomicBool,
) -> anyhow::Result<()> {
    if documents.is_empty() {
        return Ok(());
    }
    loop {
        match handle.block_on(writer.write_batch(documents)) {
            Ok(report) => {
                for rejected in &report.rejected {
                    warn!("MongoDB refused a document: {rejected:?}");
                }
                return Ok(());
            }
            Err(e) if !shutdown.load(Ordering::Relaxed) => {
                warn!("MongoDB write failed, retrying in 1 s: {e}");
                std::thread::sleep(Duration::from_secs(1));
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
