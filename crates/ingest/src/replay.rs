//! The replay source: a JSON Lines file of raw ticks (one [`RawTick`] JSON object per line, in
//! either record format; blank lines ignored), as fast as possible or at the recorded pace
//! times a factor (paced by `ts`; ticks without `ts` go out at once).
//!
//! Lines that are not valid ticks are logged with their line number, counted
//! (`tickstream_ingest_malformed_responses_total`) and skipped. Reads are synchronous: the file
//! is local and each batch reads at most [`MAX_BATCH`] lines.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use tickstream_model::topology::{ReplaySource, ReplaySpeed};
use tickstream_model::{DecodeOptions, RawTick};
use tokio::time::{Duration, Instant, sleep_until};
use tracing::warn;

use crate::limits::deadline_after;
use crate::metrics::IngestMetrics;

use crate::source::SourceError;

/// What "later than any replay can run" means for a tick whose due time overflows: 30 years.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// Ticks per batch at most.
pub const MAX_BATCH: usize = 10_000;

/// Replays a recorded file.
pub struct ReplayReader {
    path: PathBuf,
    reader: BufReader<File>,
    line: String,
    line_no: u64,
    speed: ReplaySpeed,
    options: DecodeOptions,
    /// (first recorded ts, when it was replayed): the pace's origin.
    origin: Option<(i64, Instant)>,
    pending: Option<RawTick>,
    metrics: IngestMetrics,
}

impl ReplayReader {
    /// Opens the file now, so an unreadable file is a start-up error.
    pub fn open(
        config: &ReplaySource,
        options: DecodeOptions,
        metrics: &IngestMetrics,
    ) -> Result<Self, SourceError> {
        let file = File::open(&config.path).map_err(|source| SourceError::ReplayFile {
            path: config.path.clone(),
            source,
        })?;
        Ok(Self {
            path: config.path.clone(),
            reader: BufReader::with_capacity(1 << 16, file),
            line: String::new(),
            line_no: 0,
            speed: config.speed,
            options,
            origin: None,
            pending: None,
            metrics: metrics.clone(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next ticks; `None` at the end of the file.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<RawTick>>, SourceError> {
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH {
            let tick = match self.pending.take() {
                Some(tick) => tick,
                None => match self.read_tick()? {
                    Some(tick) => tick,
                    None => break,
                },
            };
            if let Some(due) = self.due(&tick)
                && due > Instant::now()
            {
                self.pending = Some(tick);
                if !batch.is_empty() {
                    return Ok(Some(batch));
                }
                // Kept in `pending` while sleeping: a cancelled call loses no tick.
                sleep_until(due).await;
                continue;
            }
            batch.push(tick);
        }
        Ok((!batch.is_empty()).then_some(batch))
    }

    /// When `tick` is due at the configured pace; `None`: now.
    fn due(&mut self, tick: &RawTick) -> Option<Instant> {
        let ReplaySpeed::Factor(factor) = self.speed else {
            return None;
        };
        let ts = tick.ts?;
        let (first_ts, started) = *self.origin.get_or_insert((ts, Instant::now()));
        let recorded = Duration::from_millis(ts.saturating_sub(first_ts).max(0) as u64);
        // A corrupt `ts` (a gap of millennia) or a tiny factor must not overflow the clock:
        // such a tick is due as late as can be represented, never a panic.
        let wait =
            Duration::try_from_secs_f64(recorded.as_secs_f64() / factor).unwrap_or(Duration::MAX);
        Some(deadline_after(started, wait, FAR_FUTURE))
    }

    /// The next valid tick of the file, skipping (and counting) bad lines.
    fn read_tick(&mut self) -> Result<Option<RawTick>, SourceError> {
        loop {
            self.line.clear();
            let read = self.reader.read_line(&mut self.line).map_err(|source| {
                SourceError::ReplayFile {
                    path: self.path.clone(),
                    source,
                }
            })?;
            if read == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            let text = self.line.trim();
            if text.is_empty() {
                continue;
            }
            match self.options.decode(text.as_bytes()) {
                Ok(mut tick) => {
                    if tick.source.is_none() {
                        tick.source = Some("replay".into());
                    }
                    return Ok(Some(tick));
                }
                Err(reason) => {
                    self.metrics.malformed_responses.inc();
                    warn!(
                        file = %self.path.display(),
                        line = self.line_no,
                        %reason,
                        "skipping a replay line that is not a valid raw tick"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn replay(lines: &str, speed: ReplaySpeed) -> (ReplayReader, IngestMetrics, PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "tickstream-replay-{}-{}.jsonl",
            std::process::id(),
            crate::metrics::now_ms() ^ lines.len() as i64
        ));
        let mut file = File::create(&path).expect("temp file");
        file.write_all(lines.as_bytes()).expect("write");
        let metrics = IngestMetrics::new("test");
        let reader = ReplayReader::open(
            &ReplaySource {
                path: path.clone(),
                speed,
            },
            DecodeOptions::new(),
            &metrics,
        )
        .expect("opens");
        (reader, metrics, path)
    }

    #[tokio::test]
    async fn max_speed_reads_every_valid_line_and_counts_bad_ones() {
        let (mut reader, metrics, path) = replay(
            "{\"symbol\":\"BTCUSDT\",\"price\":1.5,\"ts\":10,\"source\":\"binance\"}\n\
             not json\n\
             \n\
             {\"symbol\": \"ETHUSDT\", \"price\": 2}\n",
            ReplaySpeed::Max,
        );
        let batch = reader.next_batch().await.expect("reads").expect("a batch");
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].ts, Some(10));
        assert_eq!(batch[0].source.as_deref(), Some("binance"));
        assert_eq!(batch[1].source.as_deref(), Some("replay"));
        assert_eq!(metrics.malformed_responses.get(), 1);
        assert!(reader.next_batch().await.expect("reads").is_none());
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test(start_paused = true)]
    async fn paced_replay_keeps_recorded_gaps_divided_by_the_factor() {
        let (mut reader, _metrics, path) = replay(
            "{\"symbol\":\"BTCUSDT\",\"price\":1,\"ts\":1000}\n\
             {\"symbol\":\"BTCUSDT\",\"price\":2,\"ts\":1000}\n\
             {\"symbol\":\"BTCUSDT\",\"price\":3,\"ts\":5000}\n",
            ReplaySpeed::Factor(2.0),
        );
        let start = Instant::now();
        let first = reader.next_batch().await.expect("reads").expect("a batch");
        assert_eq!(first.len(), 2, "same ts: one batch");
        let second = reader.next_batch().await.expect("reads").expect("a batch");
        assert_eq!(second[0].price, 3.0);
        // 4 s recorded at 2x: 2 s (the paused clock advances exactly).
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_of_millennia_or_a_tiny_factor_never_overflows_the_clock() {
        let (mut reader, _metrics, path) = replay(
            "{\"symbol\":\"BTCUSDT\",\"price\":1,\"ts\":0}\n\
             {\"symbol\":\"BTCUSDT\",\"price\":2,\"ts\":9223372036854775807}\n",
            ReplaySpeed::Factor(1e-300),
        );
        let first = reader.next_batch().await.expect("reads").expect("a batch");
        assert_eq!(first.len(), 1);
        // The second tick waits in `pending`, due as late as the clock goes.
        let tick = reader.pending.take().expect("the second tick waits");
        let due = reader.due(&tick).expect("paced");
        assert!(due > Instant::now() + Duration::from_secs(365 * 24 * 60 * 60));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let error = ReplayReader::open(
            &ReplaySource {
                path: "/nonexistent/ticks.jsonl".into(),
                speed: ReplaySpeed::Max,
            },
            DecodeOptions::new(),
            &IngestMetrics::new("test"),
        )
        .err()
        .expect("an error");
        assert!(
            error.to_string().contains("/nonexistent/ticks.jsonl"),
            "{error}"
        );
    }
}
