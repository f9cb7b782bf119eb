//! `tickstream query`: what the sink stored, as a table (default) or JSON (`--json`).

use anyhow::Context;
use serde::Serialize;
use tickstream_sink::Queries;
use tickstream_sink::query::format_ts;

use crate::common::{MongoArgs, TopologyArg};

/// Options of `tickstream query`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArg,
    #[command(flatten)]
    pub mongodb: MongoArgs,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub question: Question,
}

#[derive(Debug, clap::Subcommand)]
pub enum Question {
    /// The last price of every symbol.
    Latest,
    /// Min / max / average / count over the last N prices of a symbol.
    Stats {
        symbol: String,
        #[arg(long, default_value_t = 100)]
        last: u64,
    },
    /// Stored jump events among the last N prices of a symbol.
    Jumps {
        symbol: String,
        #[arg(long, default_value_t = 100)]
        last: u64,
        /// Only jumps with |change_pct| >= this percentage.
        #[arg(long)]
        threshold: Option<f64>,
    },
    /// The newest moving average and volatility per window of a symbol.
    Analytics { symbol: String },
    /// The last N candles of a symbol and interval (a `[[candles]]` interval), oldest first.
    Candles {
        symbol: String,
        /// The interval's label, as the topology writes it: `1m`, `15s`, `1h`, `1d`.
        #[arg(long)]
        interval: String,
        #[arg(long, default_value_t = 60)]
        last: u64,
    },
}

pub async fn main(args: Args) -> anyhow::Result<()> {
    let topology = args.topology.load()?;
    let uri = args.mongodb.mongodb_uri.clone();
    let output = async move {
        // A bad URI's error says what is wrong without quoting it.
        let queries = Queries::connect(uri.expose(), &topology).await?;
        let context = || format!("querying MongoDB at {}", uri.redacted());
        anyhow::Ok(match &args.question {
            Question::Latest => {
                let rows = queries.latest().await.with_context(context)?;
                render(args.json, &rows, || {
                    table(
                        &["symbol", "price", "time"],
                        rows.iter()
                            .map(|r| vec![r.symbol.clone(), r.price.to_string(), format_ts(r.ts)])
                            .collect(),
                    )
                })?
            }
            Question::Stats { symbol, last } => {
                let stats = queries.stats(symbol, *last).await.with_context(context)?;
                render(args.json, &stats, || match &stats {
                    None => format!("no prices stored for {symbol}\n"),
                    Some(s) => table(
                        &["symbol", "count", "min", "max", "avg", "from", "to"],
                        vec![vec![
                            s.symbol.clone(),
                            s.count.to_string(),
                            s.min.to_string(),
                            s.max.to_string(),
                            s.avg.to_string(),
                            format_ts(s.first_ts),
                            format_ts(s.last_ts),
                        ]],
                    ),
                })?
            }
            Question::Jumps {
                symbol,
                last,
                threshold,
            } => {
                let report = queries
                    .jumps(symbol, *last, *threshold)
                    .await
                    .with_context(context)?;
                render(args.json, &report, || {
                    format!(
                        "{} jumps of {symbol} among its last {} prices\n{}",
                        report.jumps.len(),
                        report.prices,
                        table(
                            &["time", "from", "to", "change %"],
                            report
                                .jumps
                                .iter()
                                .map(|j| {
                                    vec![
                                        format_ts(j.ts),
                                        j.from.to_string(),
                                        j.to.to_string(),
                                        format!("{:+.4}", j.change_pct),
                                    ]
                                })
                                .collect(),
                        )
                    )
                })?
            }
            Question::Analytics { symbol } => {
                let rows = queries.analytics(symbol).await.with_context(context)?;
                let cell = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
                render(args.json, &rows, || {
                    table(
                        &["window", "moving average", "volatility", "count", "time"],
                        rows.iter()
                            .map(|r| {
                                let ma = r.moving_average.as_ref();
                                let vol = r.volatility.as_ref();
                                vec![
                                    r.window.clone(),
                                    cell(ma.map(|m| m.mean.to_string())),
                                    cell(vol.map(|v| v.stddev.to_string())),
                                    cell(ma.map(|m| m.count.to_string())),
                                    cell(ma.map(|m| format_ts(m.ts))),
                                ]
                            })
                            .collect(),
                    )
                })?
            }
            Question::Candles {
                symbol,
                interval,
                last,
            } => {
                let rows = queries
                    .candles(symbol, interval, *last)
                    .await
                    .with_context(context)?;
                let optional = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
                render(args.json, &rows, || {
                    if rows.is_empty() {
                        return format!("no {interval} candles stored for {symbol}\n");
                    }
                    table(
                        &[
                            "start", "open", "high", "low", "close", "trades", "volume", "vwap",
                        ],
                        rows.iter()
                            .map(|c| {
                                vec![
                                    format_ts(c.start),
                                    c.open.to_string(),
                                    c.high.to_string(),
                                    c.low.to_string(),
                                    c.close.to_string(),
                                    c.trades.to_string(),
                                    optional(c.volume),
                                    optional(c.vwap),
                                ]
                            })
                            .collect(),
                    )
                })?
            }
        })
    }
    .await?;
    print!("{output}");
    Ok(())
}

fn render<T: Serialize>(
    json: bool,
    value: &T,
    table: impl FnOnce() -> String,
) -> anyhow::Result<String> {
    if json {
        Ok(serde_json::to_string_pretty(value)? + "\n")
    } else {
        Ok(table())
    }
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut text = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        text += &line(row);
    }
    text
}
