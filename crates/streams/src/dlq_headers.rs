//! Header names on dead-letter records, and the one place that says what such a record
//! carries. Both transports write them; the record's key and value are the original bytes.

use crate::processor::{Record, Rejection};

pub const ERROR_CODE: &str = "tickstream.error.code";
pub const ERROR_MESSAGE: &str = "tickstream.error.message";
pub const SOURCE_TOPIC: &str = "tickstream.source.topic";
pub const SOURCE_PARTITION: &str = "tickstream.source.partition";
pub const SOURCE_OFFSET: &str = "tickstream.source.offset";
pub const APPLICATION: &str = "tickstream.application";

/// The headers of the dead-letter record for `record`, which `rejection` refused.
pub(crate) fn for_rejection(
    record: &Record<'_>,
    rejection: &Rejection,
    application: &str,
) -> [(&'static str, String); 6] {
    headers(
        &rejection.code,
        &rejection.message,
        record.topic,
        record.partition,
        record.offset,
        application,
    )
}

/// The dead-letter headers of a record refused with `code` and `message`, by name.
pub fn headers(
    code: &str,
    message: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    application: &str,
) -> [(&'static str, String); 6] {
    [
        (ERROR_CODE, code.to_owned()),
        (ERROR_MESSAGE, message.to_owned()),
        (SOURCE_TOPIC, topic.to_owned()),
        (SOURCE_PARTITION, partition.to_string()),
        (SOURCE_OFFSET, offset.to_string()),
        (APPLICATION, application.to_owned()),
    ]
}
