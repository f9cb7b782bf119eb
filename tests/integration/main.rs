//! Integration tests against the real services: Apache Kafka (KRaft) and MongoDB (replica set).
//!
//! `make test` starts both (`make services-up`) and exports where they listen
//! (`TICKSTREAM_KAFKA_BROKERS`, `TICKSTREAM_MONGODB_URI`; defaults match the scripts'). These
//! tests never skip: with a service down they fail, fast, saying which service and how to start
//! it. Run one with e.g. `cargo test --test integration kafka_smoke::transactions`.

mod counting_app;
mod deploy;
mod enrich;
mod enrich_freeze;
mod enrich_repartition;
mod http_hostile;
mod ingest;
mod ingest_hostile;
mod kafka_smoke;
mod mongodb_smoke;
mod outages;
mod processes;
mod run;
mod secrets;
mod sink;
mod sink_dlq_headers;
mod sink_ids;
mod sink_late_topics;
mod streams_runtime;
mod support;
mod topics;
mod topology_limits;
