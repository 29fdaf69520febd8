//! `warpdrive-ctl metrics`: scrapes the daemon's `/metrics` and prints the seed's dashboard in
//! the terminal: FUSE operations, the read-latency histogram as a bar chart, the cache,
//! readahead, backend I/O per backend and auth. `--watch` redraws it; `--json` is for scripts;
//! `--snapshot FILE` saves a scrape and `--since FILE` shows only what happened after it.

use std::io::{IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use warpdrive_config::Config;
use warpdrive_metrics::Snapshot;

use crate::exit;
use crate::fmt::{count, size as bytes};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 shown; 1 the metrics endpoint cannot be reached; 2 bad config."
)]
pub struct MetricsArgs {
    /// The metrics endpoint (default: the config's `metrics.listen`).
    #[arg(long)]
    url: Option<String>,
    /// Print JSON instead of the dashboard.
    #[arg(long)]
    json: bool,
    /// Redraw every `--interval` until interrupted, with rates since the previous redraw.
    #[arg(long)]
    watch: bool,
    /// How often `--watch` redraws.
    #[arg(long, default_value = "2s", value_parser = parse_interval)]
    interval: Duration,
    /// Save this scrape (all series, JSON) to FILE, for a later `--since FILE`.
    #[arg(long, value_name = "FILE")]
    snapshot: Option<PathBuf>,
    /// Show only what happened since the snapshot in FILE (counters and histograms as
    /// differences; gauges as they are now).
    #[arg(long, value_name = "FILE")]
    since: Option<PathBuf>,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    warpdrive_config::parse_duration(s)
}

/// `host:port` and path of the endpoint.
fn endpoint(config: &Config, url: Option<&str>) -> Result<(String, String)> {
    let Some(u) = url else {
        let mut a = config.metrics.listen;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        return Ok((a.to_string(), "/metrics".into()));
    };
    let u = url::Url::parse(u).with_context(|| format!("--url {u} is not a URL"))?;
    if u.scheme() != "http" {
        bail!("--url must be http:// (the daemon serves plain HTTP on loopback)");
    }
    let host = u.host_str().context("--url has no host")?;
    let port = u.port().unwrap_or(80);
    Ok((format!("{host}:{port}"), u.path().to_string()))
}

/// `GET path` from `addr`, the body as text.
fn fetch(addr: &str, path: &str) -> Result<String> {
    let timeout = Duration::from_secs(5);
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).with_context(|| {
        format!("cannot reach the metrics endpoint at {addr}: is warpdrive-mount running with this config?")
    })?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).context("reading the metrics")?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("not an HTTP response")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200") {
        bail!("{addr}{path} answered `{status}`");
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

/// Decodes a chunked HTTP body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The dashboard's figures (what `--json` prints).
#[derive(Debug, Serialize)]
struct Dashboard {
    /// Whether the figures are differences since a snapshot (`--since`) or totals.
    since_snapshot: bool,
    uptime_seconds: f64,
    version: String,
    commit: String,
    fuse_operations: Vec<(String, f64)>,
    fuse_errors: Vec<FuseError>,
    read_latency: Latency,
    read_bytes: f64,
    cache: CacheView,
    readahead: Readahead,
    backends: Vec<BackendView>,
    /// The shared tier, when the daemon has one (its series exist).
    shared: Option<SharedView>,
    /// Seconds readers spent blocked on each backend (data stalls).
    stalls: Vec<(String, f64)>,
    /// Epoch plans kept (their series exist).
    plans: Vec<PlanView>,
    auth: Vec<AuthView>,
}

/// One plan's figures.
#[derive(Debug, Serialize)]
struct PlanView {
    job: String,
    rank: String,
    ahead: f64,
    late: f64,
    failed: f64,
    lead_bytes: f64,
    lead_seconds: f64,
    blocked_seconds: f64,
}

#[derive(Debug, Serialize)]
struct SharedView {
    hits: f64,
    absent: f64,
    invalid: f64,
    failed: f64,
    hit_rate: Option<f64>,
    read_bytes: f64,
    written_bytes: f64,
    chunks_written: f64,
    lease_waits: f64,
    mean_lease_wait_seconds: Option<f64>,
    /// Bytes read from the tier instead of the origin, per backend.
    origin_bytes_avoided: Vec<(String, f64)>,
}

#[derive(Debug, Serialize)]
struct FuseError {
    op: String,
    errno: String,
    count: f64,
}

#[derive(Debug, Serialize)]
struct Latency {
    count: f64,
    mean_seconds: f64,
    /// The seed's rows: ≤100µs, ≤500µs, ≤1ms, ≤5ms, ≤50ms, >50ms.
    rows: Vec<(String, f64)>,
}

#[derive(Debug, Serialize)]
struct CacheView {
    hit_blocks: f64,
    hit_bytes: f64,
    miss_blocks: f64,
    miss_bytes: f64,
    hit_rate: Option<f64>,
    evicted_blocks: f64,
    corrupt_blocks: f64,
    used_bytes: f64,
    capacity_bytes: f64,
    disk_bytes: f64,
    disk_free_bytes: f64,
    share_of_disk: Option<f64>,
    objects: f64,
    passthrough_opens: f64,
    keep_cache_opens: f64,
    disk_failures: f64,
}

#[derive(Debug, Serialize)]
struct Readahead {
    prefetch_hits: f64,
    prefetch_wasted: f64,
    in_flight_bytes: f64,
    window_resets: f64,
}

#[derive(Debug, Serialize)]
struct BackendView {
    name: String,
    read_bytes: f64,
    get: f64,
    head: f64,
    list: f64,
    errors: Vec<(String, f64)>,
    retries: f64,
    mean_first_byte_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
struct AuthView {
    backend: String,
    refreshes: f64,
    failures: f64,
    token_expiry_seconds: Option<f64>,
}

const ROWS: [(&str, f64); 5] = [
    ("≤100µs", 0.0001),
    ("≤500µs", 0.0005),
    ("≤1ms", 0.001),
    ("≤5ms", 0.005),
    ("≤50ms", 0.05),
];

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then_some(a / b)
}

fn dashboard(s: &Snapshot, since: bool) -> Dashboard {
    let v = |n: &str| s.value(n, &[]);
    let ops = s
        .label_values("warpdrive_fuse_operations_total", "op")
        .into_iter()
        .map(|op| {
            let n = s.value("warpdrive_fuse_operations_total", &[("op", &op)]);
            (op, n)
        })
        .filter(|(_, n)| *n > 0.0)
        .collect::<Vec<_>>();
    let mut fuse_errors = Vec::new();
    for op in s.label_values("warpdrive_fuse_errors_total", "op") {
        for errno in s.label_values("warpdrive_fuse_errors_total", "errno") {
            let n = s.value(
                "warpdrive_fuse_errors_total",
                &[("op", &op), ("errno", &errno)],
            );
            if n > 0.0 {
                fuse_errors.push(FuseError {
                    op: op.clone(),
                    errno,
                    count: n,
                });
            }
        }
    }
    let buckets = s.buckets("warpdrive_fuse_read_latency_seconds", &[]);
    let at = |le: f64| {
        buckets
            .iter()
            .find(|(b, _)| (b - le).abs() < 1e-12)
            .map_or(0.0, |(_, n)| *n)
    };
    let count = v("warpdrive_fuse_read_latency_seconds_count");
    let mut rows = Vec::new();
    let mut below = 0.0;
    for (name, le) in ROWS {
        let c = at(le);
        rows.push((name.to_string(), (c - below).max(0.0)));
        below = c;
    }
    rows.push((">50ms".into(), (count - below).max(0.0)));
    let hit_bytes = v("warpdrive_cache_hit_bytes_total");
    let miss_bytes = v("warpdrive_cache_miss_bytes_total");
    let backends = s
        .label_values("warpdrive_backend_requests_total", "backend")
        .into_iter()
        .map(|b| {
            let l = [("backend", b.as_str())];
            let req = |op: &str| {
                s.value(
                    "warpdrive_backend_requests_total",
                    &[("backend", &b), ("op", op)],
                )
            };
            let errors = s
                .label_values("warpdrive_backend_errors_total", "kind")
                .into_iter()
                .map(|k| {
                    let n = s.value(
                        "warpdrive_backend_errors_total",
                        &[("backend", &b), ("kind", &k)],
                    );
                    (k, n)
                })
                .filter(|(_, n)| *n > 0.0)
                .collect();
            BackendView {
                read_bytes: s.value("warpdrive_backend_read_bytes_total", &l),
                get: req("get"),
                head: req("head"),
                list: req("list"),
                errors,
                retries: s.value("warpdrive_backend_retries_total", &l),
                mean_first_byte_seconds: ratio(
                    s.value("warpdrive_backend_first_byte_seconds_sum", &l),
                    s.value("warpdrive_backend_first_byte_seconds_count", &l),
                ),
                name: b,
            }
        })
        .collect();
    let auth = s
        .label_values("warpdrive_auth_refreshes_total", "backend")
        .into_iter()
        .map(|b| {
            let l = [("backend", b.as_str())];
            let expiry = s
                .series
                .keys()
                .any(|k| {
                    k.starts_with("warpdrive_auth_token_expiry_seconds{")
                        && k.contains(&format!("backend=\"{b}\""))
                })
                .then(|| s.value("warpdrive_auth_token_expiry_seconds", &l));
            AuthView {
                refreshes: s.value("warpdrive_auth_refreshes_total", &l),
                failures: s.value("warpdrive_auth_refresh_failures_total", &l),
                token_expiry_seconds: expiry,
                backend: b,
            }
        })
        .collect();
    let build = s
        .series
        .keys()
        .find(|k| k.starts_with("warpdrive_build_info{"))
        .cloned()
        .unwrap_or_default();
    let label = |name: &str| {
        build
            .split(&format!("{name}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_string()
    };
    let disk = v("warpdrive_cache_disk_bytes");
    Dashboard {
        since_snapshot: since,
        uptime_seconds: v("warpdrive_uptime_seconds"),
        version: label("version"),
        commit: label("commit"),
        fuse_operations: ops,
        fuse_errors,
        read_latency: Latency {
            count,
            mean_seconds: ratio(v("warpdrive_fuse_read_latency_seconds_sum"), count).unwrap_or(0.0),
            rows,
        },
        read_bytes: v("warpdrive_fuse_read_size_bytes_sum"),
        cache: CacheView {
            hit_blocks: v("warpdrive_cache_hit_blocks_total"),
            hit_bytes,
            miss_blocks: v("warpdrive_cache_miss_blocks_total"),
            miss_bytes,
            hit_rate: ratio(hit_bytes, hit_bytes + miss_bytes),
            evicted_blocks: v("warpdrive_cache_evicted_blocks_total"),
            corrupt_blocks: v("warpdrive_cache_corrupt_blocks_total"),
            used_bytes: v("warpdrive_cache_used_bytes"),
            capacity_bytes: v("warpdrive_cache_capacity_bytes"),
            disk_bytes: disk,
            disk_free_bytes: v("warpdrive_cache_disk_free_bytes"),
            share_of_disk: ratio(v("warpdrive_cache_used_bytes"), disk),
            objects: v("warpdrive_cache_objects"),
            passthrough_opens: v("warpdrive_cache_passthrough_opens_total"),
            keep_cache_opens: v("warpdrive_cache_keep_cache_opens_total"),
            disk_failures: v("warpdrive_cache_disk_failures_total"),
        },
        readahead: Readahead {
            prefetch_hits: v("warpdrive_prefetch_hits_total"),
            prefetch_wasted: v("warpdrive_prefetch_wasted_total"),
            in_flight_bytes: v("warpdrive_prefetch_in_flight_bytes"),
            window_resets: v("warpdrive_prefetch_window_resets_total"),
        },
        backends,
        shared: shared_view(s),
        stalls: s
            .label_values("warpdrive_read_wait_seconds_total", "backend")
            .into_iter()
            .map(|b| {
                let n = s.value("warpdrive_read_wait_seconds_total", &[("backend", &b)]);
                (b, n)
            })
            .collect(),
        plans: plan_views(s),
        auth,
    }
}

/// Every plan with series: (job, rank) pairs from the lead gauge, which each plan sets.
fn plan_views(s: &Snapshot) -> Vec<PlanView> {
    let mut out = Vec::new();
    for job in s.label_values("warpdrive_plan_lead_bytes", "job") {
        for rank in s.label_values("warpdrive_plan_lead_bytes", "rank") {
            let l = [("job", job.as_str()), ("rank", rank.as_str())];
            if !s.has("warpdrive_plan_lead_bytes", &l) {
                continue;
            }
            let entries = |o: &str| {
                s.value(
                    "warpdrive_plan_entries_total",
                    &[
                        ("job", job.as_str()),
                        ("rank", rank.as_str()),
                        ("outcome", o),
                    ],
                )
            };
            out.push(PlanView {
                job: job.clone(),
                rank: rank.clone(),
                ahead: entries("ahead"),
                late: entries("late"),
                failed: entries("failed"),
                lead_bytes: s.value("warpdrive_plan_lead_bytes", &l),
                lead_seconds: s.value("warpdrive_plan_lead_seconds", &l),
                blocked_seconds: s.value("warpdrive_plan_read_wait_seconds_total", &l),
            });
        }
    }
    out
}

fn shared_view(s: &Snapshot) -> Option<SharedView> {
    let req = |op: &str, r: &str| {
        s.value(
            "warpdrive_shared_requests_total",
            &[("op", op), ("result", r)],
        )
    };
    let present = !s
        .label_values("warpdrive_shared_requests_total", "op")
        .is_empty();
    if !present {
        return None;
    }
    let hits = req("get", "hit");
    let absent = req("get", "absent");
    let invalid = req("get", "invalid");
    let failed = req("get", "error") + req("get", "timeout") + req("get", "skipped");
    let waits: f64 = ["filled", "expired", "failed"]
        .iter()
        .map(|o| {
            s.value(
                "warpdrive_shared_lease_wait_seconds_count",
                &[("outcome", o)],
            )
        })
        .sum();
    let waited: f64 = ["filled", "expired", "failed"]
        .iter()
        .map(|o| s.value("warpdrive_shared_lease_wait_seconds_sum", &[("outcome", o)]))
        .sum();
    let avoided = s
        .label_values("warpdrive_shared_origin_bytes_avoided_total", "backend")
        .into_iter()
        .map(|b| {
            let n = s.value(
                "warpdrive_shared_origin_bytes_avoided_total",
                &[("backend", b.as_str())],
            );
            (b, n)
        })
        .collect();
    Some(SharedView {
        hits,
        absent,
        invalid,
        failed,
        hit_rate: ratio(hits, hits + absent + invalid + failed),
        read_bytes: s.value("warpdrive_shared_bytes_total", &[("direction", "read")]),
        written_bytes: s.value("warpdrive_shared_bytes_total", &[("direction", "written")]),
        chunks_written: req("put", "created"),
        lease_waits: waits,
        mean_lease_wait_seconds: ratio(waited, waits),
        origin_bytes_avoided: avoided,
    })
}

fn secs(s: f64) -> String {
    if s < 0.001 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn pct(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{:.1}%", r * 100.0))
}

fn render(d: &Dashboard, rate: Option<(f64, Duration)>) -> String {
    let mut o = String::new();
    let scope = if d.since_snapshot {
        "since the snapshot"
    } else {
        "since the daemon started"
    };
    o.push_str(&format!(
        "WarpDrive {} ({}), up {:.0} s; figures {scope}\n\n",
        d.version, d.commit, d.uptime_seconds
    ));
    o.push_str("FUSE operations\n");
    if d.fuse_operations.is_empty() {
        o.push_str("  none\n");
    }
    for (op, n) in &d.fuse_operations {
        o.push_str(&format!("  {op:<12} {:>12}\n", count(*n)));
    }
    for e in &d.fuse_errors {
        o.push_str(&format!(
            "  error {:<6} {:<8} {:>9}\n",
            e.op,
            e.errno,
            count(e.count)
        ));
    }
    let l = &d.read_latency;
    o.push_str(&format!(
        "\nRead latency: {} reads, mean {}, {} read{}\n",
        count(l.count),
        secs(l.mean_seconds),
        bytes(d.read_bytes),
        rate.map_or(String::new(), |(b, t)| format!(
            ", {}/s over the last {:.0} s",
            bytes(b / t.as_secs_f64()),
            t.as_secs_f64()
        ))
    ));
    let max = l.rows.iter().map(|(_, n)| *n).fold(0.0, f64::max);
    for (name, n) in &l.rows {
        let width = if max > 0.0 {
            (n / max * 40.0).round() as usize
        } else {
            0
        };
        o.push_str(&format!(
            "  {name:>7} {:<40} {:>10} {:>6}\n",
            "█".repeat(width),
            count(*n),
            pct(ratio(*n, l.count))
        ));
    }
    let c = &d.cache;
    o.push_str(&format!(
        "\nCache\n  hits      {:>10} ({} blocks)\n  misses    {:>10} ({} blocks)\n  hit rate  {:>10}\n  evictions {:>10} blocks, {} corrupt\n  used      {:>10} of {} cap; {} of the disk ({} free of {})\n  objects   {:>10}; opens: {} passthrough, {} keep-cache; disk failures {}\n",
        bytes(c.hit_bytes),
        count(c.hit_blocks),
        bytes(c.miss_bytes),
        count(c.miss_blocks),
        pct(c.hit_rate),
        count(c.evicted_blocks),
        count(c.corrupt_blocks),
        bytes(c.used_bytes),
        bytes(c.capacity_bytes),
        pct(c.share_of_disk),
        bytes(c.disk_free_bytes),
        bytes(c.disk_bytes),
        count(c.objects),
        count(c.passthrough_opens),
        count(c.keep_cache_opens),
        count(c.disk_failures),
    ));
    let r = &d.readahead;
    o.push_str(&format!(
        "\nReadahead\n  prefetch hits {}, wasted {} ({}), in flight {}, window resets {}\n",
        count(r.prefetch_hits),
        count(r.prefetch_wasted),
        pct(ratio(
            r.prefetch_wasted,
            r.prefetch_hits + r.prefetch_wasted
        )),
        bytes(r.in_flight_bytes),
        count(r.window_resets)
    ));
    o.push_str("\nBackend I/O\n");
    o.push_str(&format!(
        "  {:<16} {:>11} {:>8} {:>8} {:>8} {:>11}  errors\n",
        "backend", "read", "GETs", "HEADs", "LISTs", "first byte"
    ));
    for b in &d.backends {
        let errors = if b.errors.is_empty() {
            "0".to_string()
        } else {
            b.errors
                .iter()
                .map(|(k, n)| format!("{k} {}", count(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        o.push_str(&format!(
            "  {:<16} {:>11} {:>8} {:>8} {:>8} {:>11}  {errors}\n",
            b.name,
            bytes(b.read_bytes),
            count(b.get),
            count(b.head),
            count(b.list),
            b.mean_first_byte_seconds.map_or("-".into(), secs),
        ));
    }
    if let Some(t) = &d.shared {
        o.push_str(&format!(
            "\nShared tier\n  chunks: hits {} ({}), absent {}, refused {}, failed or skipped {}; read {}, written {} ({} chunks)\n  lease waits {} (mean {})\n",
            count(t.hits),
            pct(t.hit_rate),
            count(t.absent),
            count(t.invalid),
            count(t.failed),
            bytes(t.read_bytes),
            bytes(t.written_bytes),
            count(t.chunks_written),
            count(t.lease_waits),
            t.mean_lease_wait_seconds.map_or("-".into(), secs),
        ));
        for (b, n) in &t.origin_bytes_avoided {
            o.push_str(&format!("  {b:<16} origin bytes avoided {}\n", bytes(*n)));
        }
    }
    if !d.stalls.is_empty() {
        o.push_str("\nData stalls (readers blocked in read, waiting on a backend)\n");
        for (b, secs_blocked) in &d.stalls {
            // Reader-seconds blocked per second: near 0, the job is not I/O bound; 1 or more,
            // a reader (or several) spends its time waiting.
            let per = ratio(*secs_blocked, d.uptime_seconds);
            o.push_str(&format!(
                "  {b:<16} {} blocked ({} per second of {})\n",
                secs(*secs_blocked),
                per.map_or("-".into(), |r| format!("{r:.2} reader-seconds")),
                if d.since_snapshot {
                    "the window"
                } else {
                    "uptime"
                }
            ));
        }
    }
    if !d.plans.is_empty() {
        o.push_str("\nPlans\n");
        o.push_str(&format!(
            "  {:<20} {:>4} {:>8} {:>7} {:>6} {:>10} {:>8} {:>10}\n",
            "job", "rank", "ahead", "late", "failed", "lead", "lead s", "blocked"
        ));
        for p in &d.plans {
            o.push_str(&format!(
                "  {:<20} {:>4} {:>8} {:>7} {:>6} {:>10} {:>8.1} {:>10}\n",
                p.job,
                p.rank,
                count(p.ahead),
                count(p.late),
                count(p.failed),
                bytes(p.lead_bytes),
                p.lead_seconds,
                secs(p.blocked_seconds)
            ));
        }
    }
    o.push_str("\nAuth\n");
    for a in &d.auth {
        o.push_str(&format!(
            "  {:<16} refreshes {}, failures {}, token expires in {}\n",
            a.backend,
            count(a.refreshes),
            count(a.failures),
            a.token_expiry_seconds
                .map_or("- (no token)".into(), |s| format!("{s:.0} s"))
        ));
    }
    o
}

pub fn run(config: &Config, a: &MetricsArgs) -> Result<u8> {
    let (addr, path) = endpoint(config, a.url.as_deref())?;
    let since =
        match &a.since {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading the snapshot {}", f.display()))?;
                Some(serde_json::from_str::<Snapshot>(&text).with_context(|| {
                    format!("{} is not a snapshot from --snapshot", f.display())
                })?)
            }
            None => None,
        };
    let mut previous: Option<(Snapshot, Instant)> = None;
    loop {
        let now = Snapshot::parse(&fetch(&addr, &path)?);
        let taken = Instant::now();
        if let Some(f) = &a.snapshot {
            std::fs::write(f, serde_json::to_string_pretty(&now)?)
                .with_context(|| format!("writing the snapshot {}", f.display()))?;
        }
        let shown = match &since {
            Some(before) => now.delta(before),
            None => now.clone(),
        };
        let d = dashboard(&shown, since.is_some());
        if a.json {
            println!("{}", serde_json::to_string(&d)?);
        } else {
            let rate = previous.as_ref().map(|(p, t)| {
                let b = now.value("warpdrive_fuse_read_size_bytes_sum", &[])
                    - p.value("warpdrive_fuse_read_size_bytes_sum", &[]);
                (b.max(0.0), taken - *t)
            });
            let text = render(&d, rate);
            let mut out = std::io::stdout().lock();
            if a.watch && out.is_terminal() {
                // Clear the screen and redraw in place.
                write!(out, "\x1b[2J\x1b[H{text}")?;
            } else {
                if a.watch && previous.is_some() {
                    writeln!(out, "----")?;
                }
                write!(out, "{text}")?;
            }
            out.flush()?;
        }
        if !a.watch {
            return Ok(exit::OK);
        }
        previous = Some((now, taken));
        std::thread::sleep(a.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_rows_split_the_histogram() {
        let text = "\
# TYPE warpdrive_fuse_read_latency_seconds histogram
warpdrive_fuse_read_latency_seconds_bucket{le=\"0.0001\"} 5
warpdrive_fuse_read_latency_seconds_bucket{le=\"0.0005\"} 7
warpdrive_fuse_read_latency_seconds_bucket{le=\"0.001\"} 7
warpdrive_fuse_read_latency_seconds_bucket{le=\"0.005\"} 8
warpdrive_fuse_read_latency_seconds_bucket{le=\"0.05\"} 9
warpdrive_fuse_read_latency_seconds_bucket{le=\"+Inf\"} 10
warpdrive_fuse_read_latency_seconds_sum 0.2
warpdrive_fuse_read_latency_seconds_count 10
";
        let d = dashboard(&Snapshot::parse(text), false);
        let rows: Vec<f64> = d.read_latency.rows.iter().map(|(_, n)| *n).collect();
        assert_eq!(rows, vec![5.0, 2.0, 0.0, 1.0, 1.0, 1.0]);
        assert!((d.read_latency.mean_seconds - 0.02).abs() < 1e-12);
        let shown = render(&d, None);
        assert!(
            shown.contains("≤100µs") && shown.contains(">50ms"),
            "{shown}"
        );
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
