//! The wall clock every processor reads: time since the Unix epoch, as Kafka timestamps and
//! tick `ts` fields count it. One place, so "now" means the same thing everywhere (and a clock
//! set before 1970 reads as the epoch instead of failing).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch; zero for a clock set before it.
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Wall-clock epoch milliseconds (a Kafka record timestamp's unit).
pub fn now_ms() -> i64 {
    i64::try_from(since_epoch().as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2024_and_agrees_with_since_epoch() {
        let ms = now_ms();
        assert!(ms > 1_704_067_200_000, "{ms} is before 2024-01-01");
        let again = since_epoch().as_millis() as i64;
        assert!((0..60_000).contains(&(again - ms)), "{ms} then {again}");
    }
}
