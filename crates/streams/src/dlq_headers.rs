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
    [
        (ERROR_CODE, rejection.code.to_string()),
        (ERROR_MESSAGE, rejection.message.clone()),
        (SOURCE_TOPIC, record.topic.to_owned()),
        (SOURCE_PARTITION, record.partition.to_string()),
        (SOURCE_OFFSET, record.offset.to_string()),
        (APPLICATION, application.to_owned()),
    ]
}
