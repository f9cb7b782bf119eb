//! The rules a topology must follow; the first broken one is reported with its key.

use std::time::Duration;

use super::source::{ReplaySpeed, SourceConfig};
use super::{Routing, Topology, TopologyError, WindowConfig};

type Check = Result<(), TopologyError>;

fn fail(key: impl Into<String>, problem: impl Into<String>) -> Check {
    Err(TopologyError::invalid(key, problem))
}

pub(super) fn validate(t: &Topology) -> Check {
    application_id(&t.application_id)?;
    symbols(t)?;
    topics(t)?;
    windows(&t.windows)?;
    super::candles::validate(&t.candles)?;
    let pct = t.jumps.threshold_pct;
    if !(pct > 0.0 && pct <= 100.0) {
        return fail(
            "jumps.threshold_pct",
            format!("is {pct}: write a percentage above 0 and at most 100, e.g. 2.0 for 2 %"),
        );
    }
    source(t)?;
    mongodb(t)?;
    processing(t)
}

fn kafka_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 249 || name == "." || name == ".." {
        return Some(format!(
            "{name:?} is not a usable Kafka name: 1 to 249 characters, not \".\" or \"..\""
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Some(format!(
            "{name:?} has characters Kafka does not allow: use ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    None
}

fn application_id(id: &str) -> Check {
    match kafka_name_problem(id) {
        Some(problem) => fail(
            "application_id",
            format!(
                "{problem} (it prefixes the consumer group, transactional ids and internal topics)"
            ),
        ),
        None => Ok(()),
    }
}

fn symbols(t: &Topology) -> Check {
    if t.symbols.is_empty() {
        return fail(
            "symbols",
            "is empty: list at least one trading pair, e.g. symbols = [\"BTCUSDT\"]",
        );
    }
    let max = Topology::MAX_SYMBOLS;
    if t.symbols.len() > max {
        return fail(
            "symbols",
            format!(
                "lists {} symbols, the cap is {max}: split them over several deployments",
                t.symbols.len()
            ),
        );
    }
    // Sorted copy: a quadratic scan of 100,000 symbols would take seconds.
    let mut sorted: Vec<_> = t.symbols.iter().collect();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
        return fail("symbols", format!("lists {} twice: remove one", pair[0]));
    }
    if !t.pin_symbols && !(t.symbols.len()..=max).contains(&t.max_symbols) {
        return fail(
            "max_symbols",
            format!(
                "is {}: write {} (the symbols listed, always kept) to {max}, e.g. {}",
                t.max_symbols,
                t.symbols.len(),
                Topology::DEFAULT_MAX_SYMBOLS.max(t.symbols.len())
            ),
        );
    }
    Ok(())
}

/// A per-symbol mapping must name exactly the configured symbols.
fn routing(t: &Topology, key: &str, routing: &Routing, example: &str) -> Check {
    let Routing::PerSymbol(map) = routing else {
        return Ok(());
    };
    if let Some(missing) = t.symbols.iter().find(|s| !map.contains_key(*s)) {
        return fail(
            key,
            format!(
                "has no entry for {missing}: add {missing} = \"{example}\" (every symbol needs one)"
            ),
        );
    }
    if let Some(extra) = map.keys().find(|s| !t.symbols.contains(s)) {
        return fail(
            format!("{key}.{extra}"),
            format!("{extra} is not in `symbols`: add it there, or remove this entry"),
        );
    }
    Ok(())
}

fn topics(t: &Topology) -> Check {
    let topics = &t.topics;
    routing(t, "topics.raw", &topics.raw, "btc")?;
    match &topics.raw {
        Routing::Shared(name) => {
            if let Some(problem) = kafka_name_problem(name) {
                return fail("topics.raw", problem);
            }
        }
        Routing::PerSymbol(map) => {
            for (symbol, name) in map {
                if let Some(problem) = kafka_name_problem(name) {
                    return fail(format!("topics.raw.{symbol}"), problem);
                }
            }
        }
    }
    let raw = topics.raw.names();
    let own = [
        ("topics.moving_average", &topics.moving_average),
        ("topics.volatility", &topics.volatility),
        ("topics.jumps", &topics.jumps),
        ("topics.candles", &topics.candles),
        ("topics.dead_letter", &topics.dead_letter),
    ];
    for (i, (key, name)) in own.iter().enumerate() {
        if let Some(problem) = kafka_name_problem(name) {
            return fail(*key, problem);
        }
        if raw.contains(&name.as_str()) {
            return fail(
                *key,
                format!("{name:?} is also a raw topic: give it a topic of its own"),
            );
        }
        if let Some((other, _)) = own[..i].iter().find(|(_, n)| n == name) {
            return fail(
                *key,
                format!(
                    "{name:?} is also {other}: every derived topic and the dead-letter topic need their own"
                ),
            );
        }
    }
    if let Some(n) = topics.partitions
        && !(1..=10_000).contains(&n)
    {
        return fail(
            "topics.partitions",
            format!("is {n}: write 1 to 10000, e.g. 3 (the reference's count)"),
        );
    }
    let repartition = t.repartition_topic();
    if raw.contains(&repartition.as_str()) || own.iter().any(|(_, n)| **n == repartition) {
        return fail(
            "application_id",
            format!(
                "{repartition:?}, enrich's repartition topic, is also a raw, derived or dead-letter \
                 topic: rename that topic or change application_id"
            ),
        );
    }
    Ok(())
}

fn windows(windows: &[WindowConfig]) -> Check {
    if windows.is_empty() {
        return fail(
            "windows",
            "is empty: configure at least one, e.g. [[windows]] with kind = \"count\" and size = 20",
        );
    }
    if windows.len() > WindowConfig::MAX_WINDOWS {
        return fail(
            "windows",
            format!(
                "lists {} windows, the cap is {} (every symbol keeps each one, and each emits \
                 two events per tick): remove some",
                windows.len(),
                WindowConfig::MAX_WINDOWS
            ),
        );
    }
    for (i, w) in windows.iter().enumerate() {
        let key = |field: &str| format!("windows[{i}].{field}");
        match *w {
            WindowConfig::Count { size, min_count } => {
                if size == 0 || size > WindowConfig::MAX_COUNT_SIZE {
                    return fail(
                        key("size"),
                        format!(
                            "is {size}: a count window holds 1 to {} ticks (the cap), e.g. size = 20",
                            WindowConfig::MAX_COUNT_SIZE
                        ),
                    );
                }
                if min_count == 0 || min_count > size {
                    return fail(
                        key("min_count"),
                        format!(
                            "is {min_count}: it must lie in 1..={size} (the window's size); leave it out for {size}"
                        ),
                    );
                }
            }
            WindowConfig::Time {
                span, min_count, ..
            } => {
                if span < Duration::from_millis(1) {
                    return fail(key("span"), "must be at least 1ms, e.g. span = \"5m\"");
                }
                if span > WindowConfig::MAX_SPAN {
                    return fail(
                        key("span"),
                        format!(
                            "is {}: the cap is 168h (7 days), as a time window holds every tick \
                             of its span; e.g. span = \"24h\"",
                            crate::duration::format_duration(span)
                        ),
                    );
                }
                if min_count == 0 {
                    return fail(key("min_count"), "must be at least 1; leave it out for 2");
                }
            }
        }
        let label = w.label();
        if let Some(j) = windows[..i].iter().position(|v| v.label() == label) {
            return fail(
                format!("windows[{i}]"),
                format!("is the same window ({label}) as windows[{j}]: remove one"),
            );
        }
    }
    let count_ticks: u64 = windows
        .iter()
        .map(|w| match w {
            WindowConfig::Count { size, .. } => u64::from(*size),
            WindowConfig::Time { .. } => 0,
        })
        .sum();
    if count_ticks > WindowConfig::MAX_COUNT_TICKS {
        return fail(
            "windows",
            format!(
                "count windows of {count_ticks} ticks in all (their sizes summed), the cap is {} \
                 (24 bytes per tick and symbol once full): make some smaller",
                WindowConfig::MAX_COUNT_TICKS
            ),
        );
    }
    Ok(())
}

fn positive(key: &str, d: Duration, example: &str) -> Check {
    if d.is_zero() {
        return fail(key, format!("must be longer than 0, e.g. {example}"));
    }
    Ok(())
}

fn url(key: &str, url: &str, schemes: [&str; 2], example: &str) -> Check {
    let host = schemes.iter().find_map(|s| url.strip_prefix(s));
    match host {
        Some(host)
            if !host.is_empty() && !host.starts_with('/') && !url.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => fail(
            key,
            format!(
                "{url:?} is not a {} or {} URL: write e.g. {example:?}",
                schemes[0], schemes[1]
            ),
        ),
    }
}

/// A plain (unencrypted) `base_url` is refused unless the topology says
/// `allow_plain_transport = true`: without TLS anyone on the path reads and rewrites prices.
fn transport(url: &str, plain: &str, allowed: bool, secure_example: &str) -> Check {
    if url.starts_with(plain) && !allowed {
        return fail(
            "source.base_url",
            format!(
                "{url:?} is plain {plain} (no TLS): write e.g. {secure_example:?}, or, for a \
                 local test server only, set source.allow_plain_transport = true"
            ),
        );
    }
    Ok(())
}

fn fraction(key: &str, v: f64, lo: f64, hi: f64, example: &str) -> Check {
    if !(v >= lo && v <= hi) {
        return fail(
            key,
            format!("is {v}: it must lie in [{lo}, {hi}], e.g. {example}"),
        );
    }
    Ok(())
}

fn source(t: &Topology) -> Check {
    match &t.source {
        SourceConfig::BinanceRest(s) => {
            url(
                "source.base_url",
                &s.base_url,
                ["https://", "http://"],
                "https://api.binance.com",
            )?;
            transport(
                &s.base_url,
                "http://",
                s.allow_plain_transport,
                "https://api.binance.com",
            )?;
            positive("source.interval", s.interval, "interval = \"3s\"")?;
            positive(
                "source.request_timeout",
                s.request_timeout,
                "request_timeout = \"5s\"",
            )?;
            if s.breaker.failures == 0 {
                return fail(
                    "source.breaker.failures",
                    "must be at least 1, e.g. failures = 5",
                );
            }
            positive(
                "source.breaker.open_for",
                s.breaker.open_for,
                "open_for = \"60s\"",
            )
        }
        SourceConfig::BinanceWs(s) => {
            url(
                "source.base_url",
                &s.base_url,
                ["wss://", "ws://"],
                "wss://stream.binance.com:9443",
            )?;
            transport(
                &s.base_url,
                "ws://",
                s.allow_plain_transport,
                "wss://stream.binance.com:9443",
            )?;
            if s.streams.is_empty() {
                return fail(
                    "source.streams",
                    "is empty: write e.g. streams = [\"trade\"]",
                );
            }
            for (i, stream) in s.streams.iter().enumerate() {
                if s.streams[..i].contains(stream) {
                    return fail(
                        "source.streams",
                        format!("lists {:?} twice: remove one", stream.name()),
                    );
                }
            }
            Ok(())
        }
        SourceConfig::Replay(s) => {
            if s.path.as_os_str().is_empty() {
                return fail(
                    "source.path",
                    "is empty: name the recording, e.g. path = \"data/ticks.jsonl\"",
                );
            }
            match s.speed {
                ReplaySpeed::Factor(f) if !(f.is_finite() && f > 0.0) => fail(
                    "source.speed",
                    format!("is {f}: write a factor above 0 (1.0 = as recorded) or \"max\""),
                ),
                _ => Ok(()),
            }
        }
        SourceConfig::Synthetic(s) => {
            let tps = s.ticks_per_second;
            if !(tps.is_finite() && tps > 0.0) {
                return fail(
                    "source.ticks_per_second",
                    format!("is {tps}: write a rate above 0, e.g. ticks_per_second = 10.0"),
                );
            }
            for (symbol, price) in &s.initial_prices {
                let key = format!("source.initial_prices.{symbol}");
                if !t.symbols.contains(symbol) {
                    return fail(
                        key,
                        format!("{symbol} is not in `symbols`: add it there, or remove this entry"),
                    );
                }
                if !(price.is_finite() && *price > 0.0) {
                    return fail(
                        key,
                        format!("is {price}: a starting price must be finite and above 0"),
                    );
                }
            }
            fraction(
                "source.volatility",
                s.volatility,
                0.0,
                1.0,
                "volatility = 0.001 (0.1 % per tick)",
            )?;
            fraction(
                "source.jump_probability",
                s.jump_probability,
                0.0,
                1.0,
                "jump_probability = 0.001",
            )?;
            let size = s.jump_size_pct;
            if !(size > 0.0 && size < 100.0) {
                return fail(
                    "source.jump_size_pct",
                    format!(
                        "is {size}: a jump size is a percentage above 0 and below 100, e.g. 3.0"
                    ),
                );
            }
            Ok(())
        }
    }
}

fn collection_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.contains('$') || name.contains('\0') || name.starts_with("system.") {
        return Some(format!(
            "{name:?} is not a usable MongoDB collection name: non-empty, no '$', not starting with \"system.\""
        ));
    }
    None
}

fn mongodb(t: &Topology) -> Check {
    let m = &t.mongodb;
    let bad = |c: char| "/\\. \"$*<>:|?\0".contains(c);
    if m.database.is_empty() || m.database.len() > 63 || m.database.contains(bad) {
        return fail(
            "mongodb.database",
            format!(
                "{:?} is not a usable MongoDB database name: 1 to 63 bytes, none of / \\ . space \" $ * < > : | ?",
                m.database
            ),
        );
    }
    let c = &m.collections;
    routing(t, "mongodb.collections.prices", &c.prices, "btc")?;
    let prices = c.prices.names();
    for name in &prices {
        if let Some(problem) = collection_problem(name) {
            return fail("mongodb.collections.prices", problem);
        }
    }
    let own = [
        ("mongodb.collections.moving_averages", &c.moving_averages),
        ("mongodb.collections.volatility", &c.volatility),
        ("mongodb.collections.jumps", &c.jumps),
        ("mongodb.collections.candles", &c.candles),
    ];
    for (i, (key, name)) in own.iter().enumerate() {
        if let Some(problem) = collection_problem(name) {
            return fail(*key, problem);
        }
        if prices.contains(&name.as_str()) {
            return fail(
                *key,
                format!("{name:?} is also a prices collection: give it its own"),
            );
        }
        if let Some((other, _)) = own[..i].iter().find(|(_, n)| n == name) {
            return fail(
                *key,
                format!("{name:?} is also {other}: give each kind its own collection"),
            );
        }
    }
    if m.batch_size == 0 || m.batch_size > 100_000 {
        return fail(
            "mongodb.batch_size",
            format!(
                "is {}: write 1 to 100000 documents per bulk write, e.g. 1000",
                m.batch_size
            ),
        );
    }
    positive(
        "mongodb.batch_interval",
        m.batch_interval,
        "batch_interval = \"100ms\"",
    )
}

fn processing(t: &Topology) -> Check {
    let p = &t.processing;
    positive(
        "processing.commit_interval",
        p.commit_interval,
        "commit_interval = \"100ms\" (Kafka Streams' exactly-once default)",
    )?;
    if p.state_dir.as_os_str().is_empty() {
        return fail(
            "processing.state_dir",
            "is empty: write e.g. state_dir = \"./data/state\"",
        );
    }
    if p.max_task_idle > Duration::from_secs(60) {
        return fail(
            "processing.max_task_idle",
            format!(
                "is {:?}: at most 1 min (it delays every record while an input lags), e.g. \"100ms\"",
                p.max_task_idle
            ),
        );
    }
    if p.give_up_after < Duration::from_secs(10) {
        return fail(
            "processing.give_up_after",
            format!(
                "is {:?}: at least 10 s, so a broker restart is ridden out, e.g. \"10m\"",
                p.give_up_after
            ),
        );
    }
    const MAX: usize = 1 << 20;
    if !(64..=MAX).contains(&p.max_record_bytes) {
        return fail(
            "processing.max_record_bytes",
            format!(
                "is {}: write 64 to {MAX} bytes, e.g. 1024",
                p.max_record_bytes
            ),
        );
    }
    Ok(())
}
