//! `tern calls`: list, filter, export and prune call records from the
//! command line, reading the store (origin/src/calls.rs) or a running
//! origin's API (origin/src/calls_client.rs), printed as a table, JSON lines
//! or CSV.

use std::io::Write as _;

use anyhow::Context as _;
use edge_signaling::record::CallRecord;

use crate::edge::calls::{prune, query, Query, DAY_MS};
use crate::edge::now_ms;
use crate::store::Kv;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON record per line (the same documents as `GET /v1/calls`).
    Jsonl,
    /// Comma-separated, one call per row, with a header.
    Csv,
}

#[derive(clap::Args)]
pub struct CallsArgs {
    /// The store to read (an embedded store's origin must be stopped: the
    /// file is locked while open; use --url instead).
    #[command(flatten)]
    store: crate::cmd::StoreArgs,
    /// Ask a running origin (`http://host:port`) through `GET /v1/calls`
    /// instead of opening a store (--data-dir and --kv are then unused).
    #[arg(long, conflicts_with = "prune_older_than_days")]
    url: Option<String>,
    /// The origin's calls token, for --url.
    #[arg(long, env = "TERN_CALLS_TOKEN", hide_env_values = true)]
    calls_token: Option<String>,
    /// Only calls in this room.
    #[arg(long)]
    room: Option<String>,
    /// Only calls this identity took part in.
    #[arg(long)]
    identity: Option<String>,
    /// Only calls still going at or after this time: unix ms, or an age
    /// such as `90m`, `24h`, `7d`.
    #[arg(long, value_parser = parse_time)]
    since: Option<u64>,
    /// Only calls that started before this time (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    until: Option<u64>,
    /// Most calls to print (newest first).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Continue after this call id (the `next` printed by a previous run).
    #[arg(long)]
    cursor: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Instead of listing: delete ended calls older than this many days.
    #[arg(long)]
    prune_older_than_days: Option<u64>,
}

/// Unix ms, or an age (`<n>s|m|h|d`) counted back from now.
fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: use unix milliseconds or an age like 90m, 24h, 7d"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => DAY_MS,
        _ => return Err(format!("{s:?}: the unit of an age is s, m, h or d")),
    };
    Ok(now_ms().saturating_sub(n.saturating_mul(unit_ms)))
}

pub fn run(args: CallsArgs) -> anyhow::Result<()> {
    let q = Query {
        room: args.room.clone(),
        identity: args.identity.clone(),
        since_ms: args.since,
        until_ms: args.until,
        limit: Some(args.limit),
        cursor: args.cursor.clone(),
    };
    let page = match &args.url {
        Some(url) => {
            let token = args.calls_token.as_deref().context(
                "--url needs the origin's calls token: --calls-token or TERN_CALLS_TOKEN",
            )?;
            crate::cmd::calls_client::fetch_page(url, token, &q)?
        }
        None => {
            let kv = open_store(&args)?;
            if let Some(days) = args.prune_older_than_days {
                let n = prune(&kv, days * DAY_MS, now_ms())?;
                kv.flush()?;
                eprintln!("deleted {n} call record(s) older than {days} day(s)");
                return Ok(());
            }
            query(&kv, &q, now_ms())?
        }
    };
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Jsonl => {
            for c in &page.calls {
                serde_json::to_writer(&mut out, c)?;
                writeln!(out)?;
            }
        }
        Format::Csv => write_csv(&mut out, &page.calls)?,
        Format::Table => write_table(&mut out, &page.calls)?,
    }
    if let Some(next) = &page.next_cursor {
        eprintln!("more calls: --cursor {next}");
    }
    Ok(())
}

/// The store `--kv` / `--data-dir` name, which must exist already.
fn open_store(args: &CallsArgs) -> anyhow::Result<Kv> {
    let dir = args.store.data_dir_or(crate::cmd::DEFAULT_DATA_DIR);
    if args.store.url(&dir).is_missing() {
        anyhow::bail!("no store in {} (see --data-dir)", dir.display());
    }
    args.store
        .open(&dir)
        .context("if an origin is running on it, use --url with its address")
}

/// `2026-11-26T01:02:03Z` (UTC) from unix ms.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn duration(c: &CallRecord) -> String {
    match c.ended_ms {
        Some(e) => format!("{:.1}s", e.saturating_sub(c.started_ms) as f64 / 1000.0),
        None => "open".into(),
    }
}

fn identities(c: &CallRecord) -> String {
    let mut v: Vec<&str> = c.participants.iter().map(|p| p.identity.as_str()).collect();
    v.dedup();
    v.join(" ")
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_default()
}

/// The columns both the table and the CSV show.
fn row(c: &CallRecord) -> Vec<String> {
    vec![
        c.call.clone(),
        c.room.clone(),
        utc(c.started_ms),
        duration(c),
        c.end_reason.clone().unwrap_or_default(),
        identities(c),
        c.relays.join(">"),
        c.reroutes.len().to_string(),
        c.quality.packets_lost.to_string(),
        opt(c.quality.loss_pct),
        opt(c.quality.jitter_ms_max),
        opt(c.quality.rtt_ms_max),
    ]
}

const HEADER: [&str; 12] = [
    "call",
    "room",
    "started",
    "duration",
    "end",
    "identities",
    "relays",
    "reroutes",
    "lost",
    "loss_pct",
    "jitter_ms_max",
    "rtt_ms_max",
];

fn write_table(out: &mut impl std::io::Write, calls: &[CallRecord]) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = calls.iter().map(row).collect();
    let mut width: Vec<usize> = HEADER.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn std::io::Write, cells: &[&str]| -> std::io::Result<()> {
        let padded: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", padded.join("  ").trim_end())
    };
    let upper: Vec<String> = HEADER.iter().map(|h| h.to_uppercase()).collect();
    line(out, &upper.iter().map(String::as_str).collect::<Vec<_>>())?;
    for r in &rows {
        line(out, &r.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    Ok(())
}

/// RFC 4180 quoting: only when needed.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_csv(out: &mut impl std::io::Write, calls: &[CallRecord]) -> std::io::Result<()> {
    writeln!(out, "{}", HEADER.join(","))?;
    for c in calls {
        let cells: Vec<String> = row(c).iter().map(|s| csv_field(s)).collect();
        writeln!(out, "{}", cells.join(","))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_764_118_923_456), "2025-11-26T01:02:03Z");
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn times_are_unix_ms_or_ages() {
        assert_eq!(parse_time("1234"), Ok(1234));
        let t = parse_time("2h").unwrap();
        let expect = now_ms() - 2 * 3_600_000;
        assert!(t.abs_diff(expect) < 5_000);
        assert!(parse_time("2w").is_err());
        assert!(parse_time("soon").is_err());
    }
}
