//! `effective-policy`: GetEffectivePolicy with the seeded connector keys, in open loop (a
//! fixed schedule) or closed loop (as fast as `--concurrency` callers get answers).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use portcullis_proto::policystore::v1::GetEffectivePolicyRequest;
use portcullis_proto::policystore::v1::policy_service_client::PolicyServiceClient;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::LoadArgs;
use crate::cpu::{Snapshot, Usage};

/// Highest latency the histogram records exactly (longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 60_000_000;

/// The connector keys of a keys file, as `authorization` values. Blank lines and `#`
/// comments are skipped; the key is a line's last tab-separated field.
pub fn parse_keys(text: &str) -> Result<Vec<AsciiMetadataValue>> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.rsplit('\t').next().unwrap_or(line).trim();
        let value = MetadataValue::try_from(format!("Bearer {key}"))
            .with_context(|| format!("line {}: the key is not valid metadata", n + 1))?;
        keys.push(value);
    }
    if keys.is_empty() {
        bail!("no keys");
    }
    Ok(keys)
}

fn read_keys(path: &Path) -> Result<Vec<AsciiMetadataValue>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_keys(&text).with_context(|| format!("in {}", path.display()))
}

/// What was measured.
#[derive(Debug)]
pub struct Stats {
    /// Latency of answered calls (successes and errors), in microseconds.
    pub latency: Histogram<u64>,
    /// Successful calls.
    pub ok: u64,
    /// Failed calls by gRPC code (or `bad-response`).
    pub errors: BTreeMap<String, u64>,
    /// Open loop: calls not sent because `--max-in-flight` were outstanding.
    pub dropped: u64,
}

impl Stats {
    fn new() -> Result<Stats> {
        Ok(Stats {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("creating the histogram")?,
            ok: 0,
            errors: BTreeMap::new(),
            dropped: 0,
        })
    }

    fn record(&mut self, latency: Duration, outcome: Result<(), String>) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros.clamp(1, MAX_LATENCY_US));
        match outcome {
            Ok(()) => self.ok += 1,
            Err(code) => *self.errors.entry(code).or_insert(0) += 1,
        }
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.dropped
    }
}

type Shared = Arc<Mutex<Stats>>;

fn with_stats<R>(stats: &Shared, f: impl FnOnce(&mut Stats) -> R) -> R {
    f(&mut stats.lock().unwrap_or_else(PoisonError::into_inner))
}

/// The connections.
async fn connect(server: &str, connections: usize, timeout: Duration) -> Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("--server {server:?}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to {server}"))?,
        );
    }
    Ok(channels)
}

/// One GetEffectivePolicy call with `key`; `Err(code)` for a failure.
async fn call(channel: Channel, key: AsciiMetadataValue) -> Result<(), String> {
    let mut request = tonic::Request::new(GetEffectivePolicyRequest::default());
    request.metadata_mut().insert("authorization", key);
    match PolicyServiceClient::new(channel).get_effective_policy(request).await {
        Ok(response) => {
            let answer = response.into_inner();
            if answer.cluster_id.is_empty() || answer.policy.is_none() {
                Err("bad-response".to_owned())
            } else {
                Ok(())
            }
        }
        Err(status) => Err(format!("{:?}", status.code())),
    }
}

/// Runs `effective-policy`.
pub async fn run(args: &LoadArgs) -> Result<()> {
    let keys = Arc::new(read_keys(&args.keys)?);
    let channels = Arc::new(connect(&args.server, args.connections, args.timeout).await?);
    // One call first: a wrong key file or server fails here, not as a wall of errors.
    if let (Some(channel), Some(key)) = (channels.first(), keys.first())
        && let Err(code) = call(channel.clone(), key.clone()).await
    {
        bail!("the first GetEffectivePolicy call failed: {code}");
    }
    let stats: Shared = Arc::new(Mutex::new(Stats::new()?));
    let start = Instant::now();
    let measure_start = start + args.warmup;
    let end = measure_start + args.duration;
    let cpu = {
        let (pid, comms) = (args.server_pid, args.watch_comm.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_start).await;
            let snapshot = Snapshot::take(pid, &comms);
            let begun = Instant::now();
            tokio::time::sleep_until(end).await;
            snapshot.usage_since(begun.elapsed().as_secs_f64())
        })
    };
    match args.rate {
        Some(rate) if args.closed_loop => bail!("--rate {rate} and --closed-loop exclude each other"),
        Some(rate) => {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("--rate must be a positive number");
            }
            open_loop(args, rate, &keys, &channels, &stats, start, measure_start, end).await?;
        }
        None => closed_loop(args, &keys, &channels, &stats, measure_start, end).await?,
    }
    let usage = cpu.await.unwrap_or_default();
    let stats = Arc::try_unwrap(stats)
        .map_err(|_| anyhow::anyhow!("calls still running after the drain"))?
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    report(args, &stats, &usage);
    Ok(())
}

/// Starts call `i` at `start + i / rate` whatever happened to the earlier ones; latency
/// counts from that intended time.
#[allow(clippy::too_many_arguments)]
async fn open_loop(
    args: &LoadArgs,
    rate: f64,
    keys: &Arc<Vec<AsciiMetadataValue>>,
    channels: &Arc<Vec<Channel>>,
    stats: &Shared,
    start: Instant,
    measure_start: Instant,
    end: Instant,
) -> Result<()> {
    let limit = u32::try_from(args.max_in_flight.max(1)).unwrap_or(u32::MAX);
    let in_flight = Arc::new(Semaphore::new(limit as usize));
    let mut i: u64 = 0;
    loop {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        if intended >= end {
            break;
        }
        if intended > Instant::now() {
            tokio::time::sleep_until(intended).await;
        }
        let record = intended >= measure_start;
        let (Some(key), Some(channel)) = (keys.get(index(i, keys.len())), channels.get(index(i, channels.len())))
        else {
            bail!("no keys or no connections");
        };
        match in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                let (key, channel, stats) = (key.clone(), channel.clone(), stats.clone());
                tokio::spawn(timed_call(channel, key, intended, record, stats, permit));
            }
            Err(_) => {
                if record {
                    with_stats(stats, |s| s.dropped += 1);
                }
            }
        }
        i += 1;
    }
    // Every permit back: every call answered (or timed out).
    let _all = in_flight
        .acquire_many(limit)
        .await
        .context("waiting for the calls in flight")?;
    Ok(())
}

fn index(i: u64, len: usize) -> usize {
    usize::try_from(i % len.max(1) as u64).unwrap_or(0)
}

async fn timed_call(
    channel: Channel,
    key: AsciiMetadataValue,
    intended: Instant,
    record: bool,
    stats: Shared,
    _permit: OwnedSemaphorePermit,
) {
    let outcome = call(channel, key).await;
    if record {
        let latency = intended.elapsed();
        with_stats(&stats, |s| s.record(latency, outcome));
    }
}

/// `--concurrency` callers, each with its own share of the keys, back to back.
async fn closed_loop(
    args: &LoadArgs,
    keys: &Arc<Vec<AsciiMetadataValue>>,
    channels: &Arc<Vec<Channel>>,
    stats: &Shared,
    measure_start: Instant,
    end: Instant,
) -> Result<()> {
    let callers = args.concurrency.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..callers {
        let (keys, channels, stats) = (keys.clone(), channels.clone(), stats.clone());
        tasks.spawn(async move {
            let mut i = caller as u64;
            let channel = channels.get(index(caller as u64, channels.len())).cloned();
            let Some(channel) = channel else { return };
            loop {
                let started = Instant::now();
                if started >= end {
                    return;
                }
                let Some(key) = keys.get(index(i, keys.len())).cloned() else {
                    return;
                };
                let outcome = call(channel.clone(), key).await;
                if started >= measure_start {
                    let latency = started.elapsed();
                    with_stats(&stats, |s| s.record(latency, outcome));
                }
                i += callers as u64;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a caller failed")?;
    }
    Ok(())
}

fn millis(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}%"))
}

fn report(args: &LoadArgs, stats: &Stats, usage: &Usage) {
    let seconds = args.duration.as_secs_f64().max(f64::EPSILON);
    let h = &stats.latency;
    let offered = match args.rate {
        Some(rate) => format!("{rate:.0}/s"),
        None => format!("closed loop x{}", args.concurrency),
    };
    let achieved = stats.ok as f64 / seconds;
    let errors = if stats.errors.is_empty() && stats.dropped == 0 {
        "0".to_owned()
    } else {
        let mut parts: Vec<String> = stats.errors.iter().map(|(code, n)| format!("{code}: {n}")).collect();
        if stats.dropped > 0 {
            parts.push(format!("dropped: {}", stats.dropped));
        }
        format!("{} ({})", stats.error_count(), parts.join(", "))
    };
    println!("offered      {offered}");
    println!("achieved     {achieved:.0}/s ok ({} ok in {seconds:.1} s)", stats.ok);
    println!(
        "latency ms   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n = {})",
        millis(h.value_at_quantile(0.50)),
        millis(h.value_at_quantile(0.90)),
        millis(h.value_at_quantile(0.99)),
        millis(h.value_at_quantile(0.999)),
        millis(h.max()),
        h.len()
    );
    println!("errors       {errors}");
    let comms: Vec<String> = usage
        .comms
        .iter()
        .map(|(c, v)| format!("{c} {}", percent(Some(*v))))
        .collect();
    println!(
        "cpu          server {}  generator {}  {}  machine {} (100% = one core)",
        percent(usage.server),
        percent(usage.generator),
        comms.join("  "),
        percent(usage.machine)
    );
    let comm_cells: Vec<String> = usage.comms.iter().map(|(_, v)| percent(Some(*v))).collect();
    println!(
        "row | {} | {offered} | {achieved:.0}/s | {} | {} | {} | {errors} | {} | {} | {} |",
        args.label,
        millis(h.value_at_quantile(0.50)),
        millis(h.value_at_quantile(0.99)),
        millis(h.value_at_quantile(0.999)),
        percent(usage.server),
        if comm_cells.is_empty() {
            "-".to_owned()
        } else {
            comm_cells.join(" / ")
        },
        percent(usage.machine)
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn keys_are_the_last_field_of_each_line() {
        let text = "# tenant\tcluster\tkey\n\nbench-00000\tc1\tpck_a_b\nbench-00001\tc2\tpck_c_d\n";
        let keys = parse_keys(text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].to_str().unwrap(), "Bearer pck_a_b");
        assert_eq!(keys[1].to_str().unwrap(), "Bearer pck_c_d");
        assert!(parse_keys("# only a comment\n").is_err());
    }

    #[test]
    fn stats_count_outcomes_and_clamp_latency() {
        let mut stats = Stats::new().unwrap();
        stats.record(Duration::from_micros(500), Ok(()));
        stats.record(Duration::from_secs(120), Err("Unavailable".to_owned()));
        stats.dropped = 3;
        assert_eq!(stats.ok, 1);
        assert_eq!(stats.error_count(), 4);
        assert_eq!(stats.latency.len(), 2);
        assert!(stats.latency.max() >= MAX_LATENCY_US - MAX_LATENCY_US / 1000);
    }
}
