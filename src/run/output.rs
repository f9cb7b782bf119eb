//! The embedded mode's sink: the sink's own loop (`tickstream_sink::InProcessSink`) over the
//! in-process transport, with what only `run` has around it — every record of the raw, derived
//! and dead-letter topics appended to `<data dir>/<topic>.jsonl` and fed to the live view — and
//! MongoDB when asked (`--mongodb-uri`).
//!
//! The loop reads every partition as the reader group `<application_id>-sink`, dead-letters
//! what MongoDB cannot store (unmappable, or refused by it) into the dead-letter file, with the
//! reason in the headers, commits a batch once it is written (files flushed, MongoDB
//! acknowledged), which releases it from the transport, and ends when all its topics ended.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use tickstream_model::{
    Candle, DecodeOptions, DerivedEvent, EventKind, Jump, MovingAverage, Topology, Volatility,
};
use tickstream_sink::{InProcessSink, MongoWriter, RecordObserver};
use tickstream_streams::private_fs::append_private_file;
use tickstream_streams::{InMemoryBroker, Shutdown, StoredRecord};

use super::view::LiveView;

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
    file: BufWriter<File>,
}

pub struct Output {
    topology: Arc<Topology>,
    topics: Vec<FollowedTopic>,
    mongo: Option<MongoWriter>,
}

impl Output {
    /// Opens (appending) one JSON Lines file per topic in `data_dir`, subscribes the sink to
    /// the topics, and connects to MongoDB when a URI is given — failing now, not later, if it
    /// does not answer.
    pub async fn open(
        data_dir: &Path,
        topology: &Arc<Topology>,
        broker: &InMemoryBroker,
        mongodb_uri: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut topics = Vec::new();
        let mut open = |name: &str, content: Content| -> anyhow::Result<()> {
            let path: PathBuf = data_dir.join(format!("{name}.jsonl"));
            // Results are the owner's only (0600), whatever the umask.
            let file = append_private_file(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            topics.push(FollowedTopic {
                name: name.to_owned(),
                content,
                file: BufWriter::new(file),
            });
            Ok(())
        };
        for topic in topology.raw_topics() {
            open(topic, Content::Raw)?;
        }
        for kind in topology.event_kinds() {
            open(topology.topic(kind), Content::Derived(kind))?;
        }
        open(&topology.topics.dead_letter, Content::DeadLetters)?;
        InProcessSink::<ResultFiles>::subscribe(broker, topology)
            .context("following the topics")?;
        let mongo = match mongodb_uri {
            Some(uri) => {
                let writer = MongoWriter::connect(uri, topology).await?;
                writer.ensure_indexes().await?;
                Some(writer)
            }
            None => None,
        };
        Ok(Self {
            topology: Arc::clone(topology),
            topics,
            mongo,
        })
    }

    /// Follows the topics until all of them ended, writing and committing as it goes; leaves
    /// the group at the end (also on error, so producers never wait for a sink that is gone).
    /// `shutdown` does not cut the reads short (the stages upstream stop and close their
    /// topics); it bounds MongoDB's retries by the sink's shutdown grace.
    pub async fn follow(
        self,
        broker: Arc<InMemoryBroker>,
        view: Arc<Mutex<LiveView>>,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        let files = ResultFiles {
            dead_letters: self.topics.len() - 1,
            topics: self.topics,
            decode: self.topology.decode_options(),
            view,
        };
        InProcessSink::new(broker, &self.topology, self.mongo, files)?
            .run(shutdown)
            .await
            .context("the sink")
    }
}

/// The JSON Lines files and the live view, as the sink's loop hands them records.
struct ResultFiles {
    topics: Vec<FollowedTopic>,
    /// Index of the dead-letter topic's file, where the sink's own dead letters go too.
    dead_letters: usize,
    decode: DecodeOptions,
    view: Arc<Mutex<LiveView>>,
}

impl ResultFiles {
    fn view(&self) -> std::sync::MutexGuard<'_, LiveView> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `context` added to an I/O error, for the sink's error message.
fn writing(name: &str, error: std::io::Error) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("writing {name}.jsonl: {error}"))
}

impl RecordObserver for ResultFiles {
    fn on_record(&mut self, topic: &str, record: &StoredRecord) -> std::io::Result<()> {
        let Some(index) = self.topics.iter().position(|t| t.name == topic) else {
            return Ok(());
        };
        let content = self.topics[index].content;
        write_line(&mut self.topics[index].file, content, record).map_err(|e| writing(topic, e))?;
        show(&mut self.view(), content, &self.decode, record);
        Ok(())
    }

    fn on_dead_letter(&mut self, letter: &StoredRecord) -> std::io::Result<()> {
        let topic = &mut self.topics[self.dead_letters];
        write_line(&mut topic.file, Content::DeadLetters, letter)
            .map_err(|e| writing(&topic.name, e))?;
        self.view().on_dead_letter();
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for topic in &mut self.topics {
            topic.file.flush().map_err(|e| writing(&topic.name, e))?;
        }
        Ok(())
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
        Content::Derived(EventKind::Candle) => {
            if let Ok(candle) = Candle::decode(&record.value) {
                view.on_candle(candle);
            }
        }
        Content::DeadLetters => view.on_dead_letter(),
    }
}

#[cfg(test)]
mod tests {
    use tickstream_sink::MONGODB_REJECTED;
    use tickstream_streams::dlq_headers;

    use super::*;

    #[test]
    fn a_dead_letter_line_keeps_the_value_and_every_header() {
        let letter = StoredRecord {
            key: Some(b"BTCUSDT".to_vec()),
            value: b"{\"symbol\":\"BTCUSDT\"}".to_vec(),
            timestamp: Some(7),
            headers: vec![
                ("trace".to_owned(), "abc".to_owned()),
                (
                    dlq_headers::ERROR_CODE.to_owned(),
                    MONGODB_REJECTED.to_owned(),
                ),
            ],
        };
        let mut line = Vec::new();
        write_line(&mut line, Content::DeadLetters, &letter).expect("write to memory");
        let line: serde_json::Value = serde_json::from_slice(&line).expect("one JSON object");
        assert_eq!(line["headers"][dlq_headers::ERROR_CODE], MONGODB_REJECTED);
        assert_eq!(line["headers"]["trace"], "abc");
        assert_eq!(line["value"], "{\"symbol\":\"BTCUSDT\"}");
    }
}
