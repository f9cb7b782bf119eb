//! The minimal example processor: a per-key counter. The runtime's own tests and benchmarks
//! run it, and it shows everything a processor does — read state, write state, emit, reject.

use crate::processor::{ProcessError, Processor, ProcessorContext, Record, Rejection};

/// Counts records per key and emits `<value>@<count>` to its output topic under the same key,
/// so the output shows both that each input arrived once and what the state said when it did.
/// Records without a key are rejected (`missing_key`) and go to the dead-letter topic.
pub struct CountingProcessor {
    output: String,
}

impl CountingProcessor {
    pub fn new(output: impl Into<String>) -> Self {
        Self {
            output: output.into(),
        }
    }
}

impl Processor for CountingProcessor {
    type State = u64;

    fn process(
        &mut self,
        record: &Record<'_>,
        ctx: &mut ProcessorContext<'_, u64>,
    ) -> Result<(), ProcessError> {
        let key = record.key.ok_or_else(|| {
            Rejection::new("missing_key", "counting needs a key: produce with one")
        })?;
        let count = ctx.store().get(key)?.copied().unwrap_or(0) + 1;
        ctx.store().put(key, count)?;
        let mut emitted = record.value.unwrap_or_default().to_vec();
        emitted.extend_from_slice(format!("@{count}").as_bytes());
        ctx.send(&self.output, Some(key), &emitted);
        Ok(())
    }
}
