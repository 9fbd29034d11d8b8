//! The load driver every measuring subcommand shares: it runs a per-call async closure in
//! open loop (a fixed schedule) or closed loop (as fast as `--concurrency` callers get
//! answers), records latency and outcomes, reads CPU use, and reports.
//!
//! Open loop: call *i* is due at `start + i / rate` whatever happened to the earlier ones,
//! and its latency counts from that intended time (no coordinated omission). The schedule
//! waits with [`PreciseSleep`] (a high-resolution timer), not tokio's millisecond timer,
//! which would add up to a millisecond of the generator's own lateness to every latency.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use hdrhistogram::Histogram;
use portcullis_kit::ClientConfig;
use serde_json::json;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::cpu::{Snapshot, Usage};
use crate::timer::PreciseSleep;

/// Highest latency the histogram records exactly (longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 60_000_000;

/// The outcome of one call: `Err` carries the gRPC code name, the HTTP status (`http-401`),
/// or e.g. `bad-response`.
pub type Outcome = Result<(), String>;

/// The load flags every measuring subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct LoadOptions {
    /// Open loop: requests per second, started on schedule whatever the server does.
    #[arg(long, conflicts_with = "closed_loop", required_unless_present = "closed_loop")]
    pub rate: Option<f64>,
    /// Closed loop: `--concurrency` callers, each sending its next request when the last
    /// one is answered (measures the maximum rate).
    #[arg(long)]
    pub closed_loop: bool,
    /// Callers in closed loop.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to measure: `30s`, `2m`, `500ms` or plain seconds.
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// Load sent before measuring (same rate), not recorded.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    pub warmup: Duration,
    /// Connections to the server. HTTP/2 (gRPC, webhook `--protocol h2`): requests are
    /// multiplexed over them in turn; webhook `--protocol http1.1`: a pool of keep-alive
    /// connections, one request in flight on each (a call waits for a free one).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Open loop: requests in flight beyond this are not sent and count as dropped.
    #[arg(long, default_value_t = 20_000)]
    pub max_in_flight: usize,
    /// Per-request deadline.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    pub timeout: Duration,
    /// Worker threads of the generator's runtime (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The server's process id: its CPU use during the measurement is reported.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Also report the summed CPU use of every process with this command name
    /// (e.g. `postgres`); repeatable.
    #[arg(long)]
    pub watch_comm: Vec<String>,
    /// A label for the result line (e.g. `before`, `after`).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Never let the generator's thread sleep (with `--threads 1`, the default): in open
    /// loop, wait for each call's time by polling (yielding to the runtime); in closed loop,
    /// keep one task yielding while the callers wait for answers. The generator's core stays busy (its CPU reads 100%), which
    /// spares it the cost of waking up for every call, and spares the server the cost of
    /// waking it: an answer written to an idle generator's socket makes the server's core
    /// send the generator's core an interrupt (large in a VM). A client on another machine
    /// costs the server neither.
    #[arg(long)]
    pub spin: bool,
    /// Print the result as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How the load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// A fixed schedule of `rate` calls per second.
    Open {
        /// Calls per second.
        rate: f64,
    },
    /// `concurrency` callers back to back.
    Closed {
        /// Callers.
        concurrency: usize,
    },
}

impl LoadOptions {
    /// The mode the flags ask for.
    pub fn mode(&self) -> Result<Mode> {
        match self.rate {
            Some(rate) if self.closed_loop => bail!("--rate {rate} and --closed-loop exclude each other"),
            Some(rate) if !(rate.is_finite() && rate > 0.0) => bail!("--rate must be a positive number"),
            Some(rate) => Ok(Mode::Open { rate }),
            None if self.closed_loop => Ok(Mode::Closed {
                concurrency: self.concurrency.max(1),
            }),
            None => bail!("give --rate R or --closed-loop"),
        }
    }
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
    /// The slowest latency (µs) of the calls started in each [`WINDOW`] of the measurement,
    /// by window index: shows when the tail happened (one stall or many, periodic or not).
    pub slowest_by_window: BTreeMap<u64, u64>,
    /// Open loop: the largest delay (µs), against its schedule, with which the generator sent
    /// a call of each window: a slow window with late sends is the generator's (or the
    /// machine's) stall, not the server's.
    pub send_lateness_by_window: BTreeMap<u64, u64>,
    /// Open loop: how late (µs) against its schedule the generator sent each recorded call;
    /// empty in closed loop. Its tail is the generator's own share of the latency tail.
    pub send_lateness: Histogram<u64>,
    /// Successful and failed calls by server (index in [`Connections::servers`]): how the
    /// work split over replicas.
    pub by_server: Vec<ServerCount>,
}

/// The calls one server answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCount {
    /// Successful calls.
    pub ok: u64,
    /// Failed calls (any code).
    pub errors: u64,
}

/// The span of time [`Stats::slowest_by_window`] groups calls by.
pub const WINDOW: Duration = Duration::from_millis(100);

/// How many of the slowest windows the reports list.
const SLOWEST_WINDOWS_SHOWN: usize = 5;

/// The index of the [`WINDOW`] that `since_start` falls in.
fn window_of(since_start: Duration) -> u64 {
    u64::try_from(since_start.as_nanos() / WINDOW.as_nanos()).unwrap_or(u64::MAX)
}

impl Stats {
    fn new(servers: usize) -> Result<Stats> {
        Ok(Stats {
            by_server: vec![ServerCount::default(); servers.max(1)],
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("creating the histogram")?,
            ok: 0,
            errors: BTreeMap::new(),
            dropped: 0,
            slowest_by_window: BTreeMap::new(),
            send_lateness_by_window: BTreeMap::new(),
            send_lateness: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("creating the histogram")?,
        })
    }

    /// Records that a call due `since_start` after the measurement began was sent `late`.
    fn record_lateness(&mut self, since_start: Duration, late: Duration) {
        let micros = micros(late);
        self.send_lateness.saturating_record(micros.clamp(1, MAX_LATENCY_US));
        let latest = self.send_lateness_by_window.entry(window_of(since_start)).or_insert(0);
        *latest = (*latest).max(micros);
    }

    /// Records a call to server `server` started `since_start` after the measurement began.
    fn record(&mut self, server: usize, since_start: Duration, latency: Duration, outcome: Outcome) {
        let micros = micros(latency);
        self.latency.saturating_record(micros.clamp(1, MAX_LATENCY_US));
        let slowest = self.slowest_by_window.entry(window_of(since_start)).or_insert(0);
        *slowest = (*slowest).max(micros);
        let count = self.by_server.get_mut(server);
        match outcome {
            Ok(()) => {
                self.ok += 1;
                if let Some(count) = count {
                    count.ok += 1;
                }
            }
            Err(code) => {
                *self.errors.entry(code).or_insert(0) += 1;
                if let Some(count) = count {
                    count.errors += 1;
                }
            }
        }
    }

    /// The slowest windows, slowest first: (start of the window after the measurement
    /// began, its slowest latency, how late the generator sent in it when known).
    pub fn slowest_windows(&self, n: usize) -> Vec<(Duration, Duration, Option<Duration>)> {
        let mut windows: Vec<(u64, u64)> = self.slowest_by_window.iter().map(|(w, us)| (*w, *us)).collect();
        windows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        windows
            .into_iter()
            .take(n)
            .map(|(w, us)| {
                let start = WINDOW.saturating_mul(u32::try_from(w).unwrap_or(u32::MAX));
                let late = self.send_lateness_by_window.get(&w).map(|l| Duration::from_micros(*l));
                (start, Duration::from_micros(us), late)
            })
            .collect()
    }

    /// Failed and dropped calls.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.dropped
    }
}

type Shared = Arc<Mutex<Stats>>;

fn with_stats<R>(stats: &Shared, f: impl FnOnce(&mut Stats) -> R) -> R {
    f(&mut stats.lock().unwrap_or_else(PoisonError::into_inner))
}

/// The generator's connections (a gRPC [`Channel`] by default, or any transport), spread
/// over one or more servers (replicas of one service): connection `k` goes to server
/// `k % servers`.
#[derive(Debug, Clone)]
pub struct Connections<C = Channel> {
    /// The servers, as given.
    pub servers: Vec<String>,
    channels: Vec<C>,
    /// For each connection, the index of its server.
    server_of: Vec<usize>,
}

impl<C: Clone> Connections<C> {
    /// Connections that all go to one server.
    pub fn to_one(server: impl Into<String>, channels: Vec<C>) -> Self {
        let server_of = vec![0; channels.len()];
        Connections {
            servers: vec![server.into()],
            channels,
            server_of,
        }
    }

    /// Connection `i` (taken in turn) and the index of its server.
    fn get(&self, i: u64) -> Option<(C, usize)> {
        let at = index(i, self.channels.len());
        Some((
            self.channels.get(at)?.clone(),
            self.server_of.get(at).copied().unwrap_or(0),
        ))
    }
}

/// `--connections` HTTP/2 connections (the kit's client builder), spread over `servers` in
/// turn (at least one each), each call with `--timeout`; no keepalive pings (they would add
/// traffic to what is measured).
pub async fn connect(servers: &[String], options: &LoadOptions) -> Result<Connections> {
    if servers.is_empty() {
        bail!("no --server given");
    }
    let mut configs = Vec::with_capacity(servers.len());
    for server in servers {
        configs.push(
            ClientConfig::new(server)
                .with_context(|| format!("--server {server:?}"))?
                .connect_timeout(Duration::from_secs(5))
                .request_timeout(options.timeout)
                .keepalive(None),
        );
    }
    let count = options.connections.max(servers.len());
    let mut channels = Vec::with_capacity(count);
    let mut server_of = Vec::with_capacity(count);
    for k in 0..count {
        let at = k % servers.len();
        let (Some(config), Some(server)) = (configs.get(at), servers.get(at)) else {
            bail!("no server for connection {k}");
        };
        channels.push(
            config
                .connect()
                .await
                .with_context(|| format!("connecting to {server}"))?,
        );
        server_of.push(at);
    }
    Ok(Connections {
        servers: servers.to_vec(),
        channels,
        server_of,
    })
}

fn index(i: u64, len: usize) -> usize {
    usize::try_from(i % len.max(1) as u64).unwrap_or(0)
}

/// Runs the load: `call(i, channel)` makes call number `i` over `channel` (the connections
/// are used in turn; any transport: a gRPC [`Channel`], an HTTPS connection or pool). One
/// call is made first on each server, unrecorded, so that a wrong server or key fails with its
/// reason (`what` names the method) instead of a wall of errors.
pub async fn drive<C, F, Fut>(options: &LoadOptions, connections: Connections<C>, what: &str, call: F) -> Result<Report>
where
    C: Clone + Send + Sync + 'static,
    F: Fn(u64, C) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let mode = options.mode()?;
    // Connections 0..servers are one per server.
    for (k, server) in connections.servers.iter().enumerate() {
        let Some((channel, _)) = connections.get(k as u64) else {
            bail!("no connections");
        };
        if let Err(code) = call(0, channel).await {
            bail!("the first {what} call failed: {code} (server {server})");
        }
    }
    let servers = connections.servers.clone();
    let (call, channels) = (Arc::new(call), Arc::new(connections));
    let stats: Shared = Arc::new(Mutex::new(Stats::new(servers.len())?));
    let start = Instant::now();
    let measure_start = start + options.warmup;
    let end = measure_start + options.duration;
    let cpu = {
        let (pid, comms) = (options.server_pid, options.watch_comm.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(measure_start)).await;
            let snapshot = Snapshot::take(pid, &comms);
            let begun = Instant::now();
            tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
            snapshot.usage_since(begun.elapsed().as_secs_f64())
        })
    };
    let window = Window {
        start,
        measure_start,
        end,
    };
    let schedule = match mode {
        Mode::Open { rate } => Some((
            "schedule",
            open_loop(options, rate, call, channels, &stats, window).await?,
        )),
        Mode::Closed { concurrency } => {
            closed_loop(concurrency, options.spin, call, channels, &stats, window).await?;
            options.spin.then_some((
                "generator",
                "polled for answers instead of sleeping (its CPU includes the wait)",
            ))
        }
    };
    let usage = cpu.await.unwrap_or_default();
    let stats = Arc::try_unwrap(stats)
        .map_err(|_| anyhow!("calls still running after the drain"))?
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    let notes = schedule
        .map(|(what, how)| (what.to_owned(), how.to_owned()))
        .into_iter()
        .collect();
    Ok(Report {
        label: options.label.clone(),
        servers,
        mode,
        seconds: options.duration.as_secs_f64().max(f64::EPSILON),
        stats,
        usage,
        notes,
    })
}

/// The run's time marks.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    measure_start: Instant,
    end: Instant,
}

/// Starts call `i` at `start + i / rate` (waiting with [`PreciseSleep`]); latency counts
/// from that intended time. Returns how calls were sent on time, as the run ended (a timer
/// that failed during the run fell back to tokio's).
async fn open_loop<C, F, Fut>(
    options: &LoadOptions,
    rate: f64,
    call: Arc<F>,
    channels: Arc<Connections<C>>,
    stats: &Shared,
    window: Window,
) -> Result<&'static str>
where
    C: Clone + Send + Sync + 'static,
    F: Fn(u64, C) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let limit = u32::try_from(options.max_in_flight.max(1)).unwrap_or(u32::MAX);
    let in_flight = Arc::new(Semaphore::new(limit as usize));
    let mut sleep = PreciseSleep::new();
    // Calls started back to back without waiting (the schedule is behind): after this many
    // the loop yields, so that answers are read and the runtime's I/O is polled.
    let mut without_wait = 0_u32;
    let mut i: u64 = 0;
    loop {
        let intended = window.start + Duration::from_secs_f64(i as f64 / rate);
        if intended >= window.end {
            break;
        }
        if intended > Instant::now() {
            if options.spin {
                while Instant::now() < intended {
                    tokio::task::yield_now().await;
                }
            } else {
                sleep.until(intended).await;
            }
            without_wait = 0;
        } else {
            without_wait += 1;
            if without_wait >= 64 {
                tokio::task::yield_now().await;
                without_wait = 0;
            }
        }
        let record = intended >= window.measure_start;
        let Some((channel, server)) = channels.get(i) else {
            bail!("no connections");
        };
        match in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                let pending = call(i, channel);
                let stats = stats.clone();
                tokio::spawn(async move {
                    // The call is sent when this task first runs.
                    let late = intended.elapsed();
                    let outcome = pending.await;
                    if record {
                        let latency = intended.elapsed();
                        let since_start = intended.saturating_duration_since(window.measure_start);
                        with_stats(&stats, |s| {
                            s.record_lateness(since_start, late);
                            s.record(server, since_start, latency, outcome);
                        });
                    }
                    // The stats first: the run takes them back as soon as every permit is
                    // (on a multi-thread runtime, before this task would end).
                    drop(stats);
                    drop(permit);
                });
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
    Ok(if options.spin {
        "calls sent on time by polling (the generator's CPU includes the wait)"
    } else if sleep.is_precise() {
        "calls sent on time by a high-resolution timer"
    } else {
        "calls sent on time by tokio's timer (up to 1 ms late)"
    })
}

/// `concurrency` callers back to back; caller `c` makes calls `c`, `c + concurrency`, ...
/// With `spin`, one more task yields until the end, so that the runtime polls its I/O
/// instead of sleeping while every caller waits.
async fn closed_loop<C, F, Fut>(
    concurrency: usize,
    spin: bool,
    call: Arc<F>,
    channels: Arc<Connections<C>>,
    stats: &Shared,
    window: Window,
) -> Result<()>
where
    C: Clone + Send + Sync + 'static,
    F: Fn(u64, C) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    if spin {
        tasks.spawn(async move {
            while Instant::now() < window.end {
                tokio::task::yield_now().await;
            }
        });
    }
    for caller in 0..concurrency {
        let (call, channels, stats) = (call.clone(), channels.clone(), stats.clone());
        tasks.spawn(async move {
            let mut i = caller as u64;
            let Some((channel, server)) = channels.get(i) else {
                return;
            };
            loop {
                let started = Instant::now();
                if started >= window.end {
                    return;
                }
                let outcome = call(i, channel.clone()).await;
                if started >= window.measure_start {
                    let latency = started.elapsed();
                    let since_start = started.saturating_duration_since(window.measure_start);
                    with_stats(&stats, |s| s.record(server, since_start, latency, outcome));
                }
                i += concurrency as u64;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a caller failed")?;
    }
    Ok(())
}

/// The result of a run.
#[derive(Debug)]
pub struct Report {
    /// `--label`.
    pub label: String,
    /// The servers loaded (the order of [`Stats::by_server`]).
    pub servers: Vec<String>,
    /// How the load was offered.
    pub mode: Mode,
    /// The measured window, in seconds.
    pub seconds: f64,
    /// Latency and outcomes.
    pub stats: Stats,
    /// CPU use over the window.
    pub usage: Usage,
    /// Extra facts about the run (e.g. the request size), printed first.
    pub notes: Vec<(String, String)>,
}

/// A histogram of microseconds as `p50 X  p90 X  p99 X  p99.9 X  max X`, in milliseconds.
fn quantiles_text(h: &Histogram<u64>) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        millis(h.value_at_quantile(0.50)),
        millis(h.value_at_quantile(0.90)),
        millis(h.value_at_quantile(0.99)),
        millis(h.value_at_quantile(0.999)),
        millis(h.max())
    )
}

/// A histogram of microseconds as the fields of a JSON object, in milliseconds.
fn quantiles_json(h: &Histogram<u64>) -> serde_json::Map<String, serde_json::Value> {
    let ms = |micros: u64| json!(micros as f64 / 1000.0);
    serde_json::Map::from_iter([
        ("p50".to_owned(), ms(h.value_at_quantile(0.50))),
        ("p90".to_owned(), ms(h.value_at_quantile(0.90))),
        ("p99".to_owned(), ms(h.value_at_quantile(0.99))),
        ("p99_9".to_owned(), ms(h.value_at_quantile(0.999))),
        ("max".to_owned(), ms(h.max())),
    ])
}

/// `d` in whole microseconds (saturating).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `part` in percent of `whole` (0 when `whole` is 0).
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn millis(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}%"))
}

impl Report {
    /// `10000/s` or `closed loop x64`.
    pub fn offered(&self) -> String {
        match self.mode {
            Mode::Open { rate } => format!("{rate:.0}/s"),
            Mode::Closed { concurrency } => format!("closed loop x{concurrency}"),
        }
    }

    /// Successful calls per second of the window.
    pub fn achieved(&self) -> f64 {
        self.stats.ok as f64 / self.seconds
    }

    /// `0`, or the count and its breakdown: `12 (Unavailable: 10, dropped: 2)`.
    pub fn errors_text(&self) -> String {
        let stats = &self.stats;
        if stats.errors.is_empty() && stats.dropped == 0 {
            return "0".to_owned();
        }
        let mut parts: Vec<String> = stats.errors.iter().map(|(code, n)| format!("{code}: {n}")).collect();
        if stats.dropped > 0 {
            parts.push(format!("dropped: {}", stats.dropped));
        }
        format!("{} ({})", stats.error_count(), parts.join(", "))
    }

    /// The human report, ending with a `row | ...` line for a markdown table: label,
    /// offered, achieved, p50, p99, p99.9 (ms), errors, CPU of server, generator, watched
    /// commands, machine.
    pub fn text(&self) -> String {
        let h = &self.stats.latency;
        let (offered, achieved, errors, usage) = (self.offered(), self.achieved(), self.errors_text(), &self.usage);
        let mut lines: Vec<String> = self.notes.iter().map(|(k, v)| format!("{k:<12} {v}")).collect();
        lines.push(format!("offered      {offered}"));
        lines.push(format!(
            "achieved     {achieved:.0}/s ok ({} ok in {:.1} s)",
            self.stats.ok, self.seconds
        ));
        lines.push(format!("latency ms   {}  (n = {})", quantiles_text(h), h.len()));
        let late = &self.stats.send_lateness;
        if !late.is_empty() {
            lines.push(format!(
                "sent late ms {}  (the generator's own delay, in the latencies above)",
                quantiles_text(late)
            ));
        }
        let slowest: Vec<String> = self
            .stats
            .slowest_windows(SLOWEST_WINDOWS_SHOWN)
            .iter()
            .map(|(at, max, late)| {
                let late = late.map_or_else(String::new, |l| format!(" (sent up to {} ms late)", millis(micros(l))));
                format!("at {:.1} s {} ms{late}", at.as_secs_f64(), millis(micros(*max)))
            })
            .collect();
        lines.push(format!(
            "slowest      per {} ms window: {}",
            WINDOW.as_millis(),
            slowest.join(", ")
        ));
        lines.push(format!("errors       {errors}"));
        for (server, count) in self.servers.iter().zip(&self.stats.by_server) {
            lines.push(format!(
                "per server   {server} ok {} errors {} ({:.1}% of ok)",
                count.ok,
                count.errors,
                share(count.ok, self.stats.ok)
            ));
        }
        let comms: Vec<String> = usage
            .comms
            .iter()
            .map(|(c, v)| format!("{c} {}", percent(Some(*v))))
            .collect();
        let steal = usage
            .steal_ms
            .map_or_else(String::new, |ms| format!("  steal {ms:.0} ms"));
        lines.push(format!(
            "cpu          server {}  generator {}  {}  machine {}{steal} (100% = one core)",
            percent(usage.server),
            percent(usage.generator),
            comms.join("  "),
            percent(usage.machine)
        ));
        let comm_cells: Vec<String> = usage.comms.iter().map(|(_, v)| percent(Some(*v))).collect();
        lines.push(format!(
            "row | {} | {offered} | {achieved:.0}/s | {} | {} | {} | {errors} | {} | {} | {} | {} |",
            self.label,
            millis(h.value_at_quantile(0.50)),
            millis(h.value_at_quantile(0.99)),
            millis(h.value_at_quantile(0.999)),
            percent(usage.server),
            percent(usage.generator),
            if comm_cells.is_empty() {
                "-".to_owned()
            } else {
                comm_cells.join(" / ")
            },
            percent(usage.machine)
        ));
        lines.join("\n")
    }

    /// The report as one JSON object (latencies in milliseconds, CPU in percent of one
    /// core, `null` when unknown).
    pub fn json(&self) -> serde_json::Value {
        let h = &self.stats.latency;
        let mut latency = quantiles_json(h);
        latency.insert("n".to_owned(), json!(h.len()));
        let (rate, concurrency) = match self.mode {
            Mode::Open { rate } => (Some(rate), None),
            Mode::Closed { concurrency } => (None, Some(concurrency)),
        };
        let notes: serde_json::Map<String, serde_json::Value> =
            self.notes.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let comms: serde_json::Map<String, serde_json::Value> =
            self.usage.comms.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        json!({
            "label": self.label,
            "offered": self.offered(),
            "rate": rate,
            "concurrency": concurrency,
            "seconds": self.seconds,
            "ok": self.stats.ok,
            "achieved_per_s": self.achieved(),
            "errors": self.stats.errors,
            "dropped": self.stats.dropped,
            "latency_ms": latency,
            "sent_late_ms": (!self.stats.send_lateness.is_empty()).then(|| quantiles_json(&self.stats.send_lateness)),
            "slowest_windows": self
                .stats
                .slowest_windows(SLOWEST_WINDOWS_SHOWN)
                .iter()
                .map(|(at, max, late)| json!({
                    "at_s": at.as_secs_f64(),
                    "max_ms": max.as_secs_f64() * 1000.0,
                    "sent_late_ms": late.map(|l| l.as_secs_f64() * 1000.0),
                }))
                .collect::<Vec<_>>(),
            "cpu_percent": {
                "server": self.usage.server,
                "generator": self.usage.generator,
                "machine": self.usage.machine,
                "steal_ms": self.usage.steal_ms,
                "comms": comms,
            },
            "notes": notes,
            "per_server": self
                .servers
                .iter()
                .zip(&self.stats.by_server)
                .map(|(server, count)| json!({"server": server, "ok": count.ok, "errors": count.errors}))
                .collect::<Vec<_>>(),
        })
    }

    /// Prints the report on stdout, as text or as one line of JSON.
    pub fn print(&self, as_json: bool) {
        if as_json {
            println!("{}", self.json());
        } else {
            println!("{}", self.text());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn stats_count_outcomes_and_clamp_latency() {
        let mut stats = Stats::new(1).unwrap();
        stats.record(0, Duration::ZERO, Duration::from_micros(500), Ok(()));
        stats.record(
            0,
            Duration::ZERO,
            Duration::from_secs(120),
            Err("Unavailable".to_owned()),
        );
        stats.dropped = 3;
        assert_eq!(stats.ok, 1);
        assert_eq!(stats.error_count(), 4);
        assert_eq!(stats.latency.len(), 2);
        assert!(stats.latency.max() >= MAX_LATENCY_US - MAX_LATENCY_US / 1000);
    }

    #[test]
    fn reports_render_as_text_and_json() {
        let mut stats = Stats::new(1).unwrap();
        for i in 0..10 {
            stats.record(0, Duration::from_millis(150 * i), Duration::from_micros(1500), Ok(()));
        }
        stats.record(
            0,
            Duration::from_millis(1420),
            Duration::from_micros(900),
            Err("Unavailable".to_owned()),
        );
        let report = Report {
            label: "x".to_owned(),
            servers: vec!["http://a".to_owned()],
            mode: Mode::Open { rate: 5.0 },
            seconds: 2.0,
            stats,
            usage: Usage::default(),
            notes: vec![("review".to_owned(), "10 bytes".to_owned())],
        };
        assert_eq!(report.offered(), "5/s");
        assert_eq!(report.errors_text(), "1 (Unavailable: 1)");
        let text = report.text();
        assert!(text.starts_with("review       10 bytes\n"), "{text}");
        assert!(text.contains("achieved     5/s ok (10 ok in 2.0 s)"), "{text}");
        assert!(
            text.contains("slowest      per 100 ms window: at 0.0 s 1.50 ms, at 0.1 s 1.50 ms, at 0.3 s 1.50 ms,"),
            "{text}"
        );
        assert!(text.ends_with("row | x | 5/s | 5/s | 1.50 | 1.50 | 1.50 | 1 (Unavailable: 1) | - | - | - | - |"));
        let json = report.json();
        assert_eq!(json["ok"], 10);
        assert_eq!(json["rate"], 5.0);
        assert_eq!(json["concurrency"], serde_json::Value::Null);
        assert_eq!(json["errors"]["Unavailable"], 1);
        assert_eq!(json["latency_ms"]["n"], 11);
        assert_eq!(json["notes"]["review"], "10 bytes");
        assert_eq!(json["slowest_windows"].as_array().map(Vec::len), Some(5));
        assert_eq!(json["slowest_windows"][0]["sent_late_ms"], serde_json::Value::Null);
        assert_eq!(json["sent_late_ms"], serde_json::Value::Null, "no lateness recorded");
        assert!(!text.contains("sent late ms"), "{text}");
        assert_eq!(
            json["per_server"],
            serde_json::json!([{"server": "http://a", "ok": 10, "errors": 1}])
        );
        assert!(
            text.contains("per server   http://a ok 10 errors 1 (100.0% of ok)"),
            "{text}"
        );
    }

    #[test]
    fn the_generator_s_send_lateness_is_reported_as_a_distribution() {
        let mut stats = Stats::new(1).unwrap();
        for i in 0..100 {
            let late = if i == 99 { 7_000 } else { 20 };
            stats.record_lateness(Duration::from_millis(i), Duration::from_micros(late));
            stats.record(0, Duration::from_millis(i), Duration::from_micros(late + 100), Ok(()));
        }
        let report = Report {
            label: "x".to_owned(),
            servers: vec!["http://a".to_owned()],
            mode: Mode::Open { rate: 100.0 },
            seconds: 1.0,
            stats,
            usage: Usage::default(),
            notes: Vec::new(),
        };
        let text = report.text();
        assert!(
            text.contains("sent late ms p50 0.02  p90 0.02  p99 0.02  p99.9 7.00  max 7.00"),
            "{text}"
        );
        let json = report.json();
        assert_eq!(json["sent_late_ms"]["p50"], 0.02);
        // The histogram keeps three significant digits.
        let max = json["sent_late_ms"]["max"].as_f64().unwrap();
        assert!((7.0..7.01).contains(&max), "{max}");
    }

    #[test]
    fn calls_are_counted_by_server() {
        let mut stats = Stats::new(2).unwrap();
        stats.record(0, Duration::ZERO, Duration::from_micros(10), Ok(()));
        stats.record(1, Duration::ZERO, Duration::from_micros(10), Ok(()));
        stats.record(1, Duration::ZERO, Duration::from_micros(10), Ok(()));
        stats.record(
            1,
            Duration::ZERO,
            Duration::from_micros(10),
            Err("Unavailable".to_owned()),
        );
        // An index beyond the servers (never made by the driver) still counts in the totals.
        stats.record(7, Duration::ZERO, Duration::from_micros(10), Ok(()));
        assert_eq!(stats.ok, 4);
        assert_eq!(
            stats.by_server,
            vec![ServerCount { ok: 1, errors: 0 }, ServerCount { ok: 2, errors: 1 }]
        );
        assert!((share(1, 4) - 25.0).abs() < 1e-9);
        assert_eq!(share(1, 0), 0.0);
    }

    #[test]
    fn slowest_windows_keep_each_window_s_maximum_slowest_first() {
        let mut stats = Stats::new(1).unwrap();
        // Window 0 (0-100 ms): 2 ms and 40 ms; window 12 (1.2 s): 7 ms; window 35: 40 ms.
        stats.record(0, Duration::from_millis(10), Duration::from_millis(2), Ok(()));
        stats.record(0, Duration::from_millis(99), Duration::from_millis(40), Ok(()));
        stats.record(0, Duration::from_millis(1234), Duration::from_millis(7), Ok(()));
        stats.record(0, Duration::from_millis(3500), Duration::from_millis(40), Ok(()));
        stats.record_lateness(Duration::from_millis(3550), Duration::from_millis(30));
        stats.record_lateness(Duration::from_millis(3560), Duration::from_millis(5));
        assert_eq!(stats.slowest_by_window.len(), 3);
        assert_eq!(
            stats.slowest_windows(2),
            vec![
                (Duration::ZERO, Duration::from_millis(40), None),
                (
                    Duration::from_millis(3500),
                    Duration::from_millis(40),
                    Some(Duration::from_millis(30))
                ),
            ]
        );
        assert_eq!(stats.slowest_windows(9).len(), 3);
        assert_eq!(
            stats.slowest_windows(9)[2],
            (Duration::from_millis(1200), Duration::from_millis(7), None)
        );
    }
}
