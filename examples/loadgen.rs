//! A load generator for RLS v3 servers (floodgate, or `examples/null_server`).
//!
//! Opens `--connections` HTTP/2 connections to a loopback address and keeps
//! `--concurrency` requests in flight across them (closed loop), or paces
//! them at `--rate` requests per second in total (open loop, for latency at
//! a given load). Stops after `--duration` seconds or `--requests` requests,
//! whichever comes first; both are bounded.
//!
//! Each request carries the `--descriptor`s given (default one,
//! `bench_key=*`). In a descriptor, the value `*` is replaced by a key index
//! that cycles through `--keys` distinct values (`k0`, `k1`, ...): `--keys 1`
//! is one hot key, `--keys 1000000` a million counters. Indices are handed
//! out in order, so `--keys N --requests N` touches each key exactly once
//! (with D descriptors holding `*`, `--requests N/D` does).
//!
//! Prints requests/s, latency percentiles (p50/p90/p99/p99.9, measured from
//! send to answer with an HDR histogram), and the share of OK, OVER_LIMIT and
//! failed answers; the last line, `RESULT key=value ...`, is for scripts.
//!
//! ```text
//! cargo run --release --example loadgen -- --addr 127.0.0.1:8081 \
//!     --domain bench --descriptor 'bench_key=*' --keys 1 \
//!     --connections 4 --concurrency 64 --duration 10
//! ```
//!
//! The generator shares the machine with the server it measures: give it
//! few threads (`--threads`, default 1) and compare targets within one run.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use floodgate::proto::{
    Code, Entry, RateLimitDescriptor, RateLimitRequest, RateLimitServiceClient,
};
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};

/// The longest run allowed, whatever `--duration` says.
const MAX_DURATION_SECS: f64 = 3_600.0;

/// Load generator for RLS v3 servers on loopback.
#[derive(Debug, Parser)]
struct Args {
    /// The server's gRPC address (`host:port` or `http://host:port`); must be loopback.
    #[arg(long, default_value = "127.0.0.1:8081")]
    addr: String,
    /// HTTP/2 connections to open.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight at once, spread over the connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Stop after this many seconds (at most one hour).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests in total (warm-up included).
    #[arg(long)]
    requests: Option<u64>,
    /// Send at most this many requests per second in total (open loop);
    /// without it, each of `--concurrency` workers sends as fast as answers come.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// The request's domain.
    #[arg(long, default_value = "bench")]
    domain: String,
    /// One descriptor as `key=value[,key=value...]`, a value of `*` being the
    /// cycling key index; repeat for several descriptors per request.
    #[arg(long = "descriptor", default_value = "bench_key=*")]
    descriptors: Vec<String>,
    /// Distinct values `*` cycles through (1 = one hot key).
    #[arg(long, default_value_t = 1)]
    keys: u64,
    /// The request's `hits_addend` (0 means 1).
    #[arg(long, default_value_t = 0)]
    hits_addend: u32,
    /// Worker threads of the generator's runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Per-request timeout in milliseconds (a timeout counts as an error).
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
}

/// One descriptor template: entries whose value is fixed or the key index.
#[derive(Clone, Debug)]
struct Template {
    entries: Vec<(String, Option<String>)>,
}

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let entries = text
            .split(',')
            .map(|pair| match pair.split_once('=') {
                Some(("", _)) => Err(format!("empty key in {text:?}")),
                Some((key, "*")) => Ok((key.to_owned(), None)),
                Some((key, value)) => Ok((key.to_owned(), Some(value.to_owned()))),
                None => Err(format!("{pair:?} is not key=value in {text:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Template { entries })
    }

    fn varies(&self) -> bool {
        self.entries.iter().any(|(_, value)| value.is_none())
    }

    fn build(&self, index: u64) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: self
                .entries
                .iter()
                .map(|(key, value)| Entry {
                    key: key.clone(),
                    value: value.clone().unwrap_or_else(|| format!("k{index}")),
                })
                .collect(),
            ..RateLimitDescriptor::default()
        }
    }
}

/// What one worker saw.
struct Tally {
    latency: Histogram<u64>,
    ok: u64,
    over_limit: u64,
    other_code: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Result<Tally, String> {
        Ok(Tally {
            // Nanoseconds, 1 ns to 60 s, 3 significant digits.
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .map_err(|e| format!("histogram: {e}"))?,
            ok: 0,
            over_limit: 0,
            other_code: 0,
            errors: 0,
            first_error: None,
        })
    }

    fn merge(&mut self, other: Tally) -> Result<(), String> {
        self.latency
            .add(&other.latency)
            .map_err(|e| format!("histogram: {e}"))?;
        self.ok += other.ok;
        self.over_limit += other.over_limit;
        self.other_code += other.other_code;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }

    fn total(&self) -> u64 {
        self.ok + self.over_limit + self.other_code + self.errors
    }
}

/// What all workers share.
struct Plan {
    domain: String,
    templates: Vec<Template>,
    varying: u64,
    keys: u64,
    hits_addend: u32,
    timeout: Duration,
    /// Tickets handed out; a ticket is one request and picks its key indices.
    tickets: AtomicU64,
    /// Tickets allowed in total (warm-up plus measured), if bounded by count.
    max_tickets: Option<u64>,
    measure_from: Instant,
    deadline: Instant,
    /// Per worker, the pause between two sends in rate mode.
    interval: Option<Duration>,
}

impl Plan {
    fn request(&self, ticket: u64) -> RateLimitRequest {
        let mut slot = 0u64;
        let descriptors = self
            .templates
            .iter()
            .map(|template| {
                let index = ticket.wrapping_mul(self.varying).wrapping_add(slot) % self.keys;
                if template.varies() {
                    slot += 1;
                }
                template.build(index)
            })
            .collect();
        RateLimitRequest {
            domain: self.domain.clone(),
            descriptors,
            hits_addend: self.hits_addend,
        }
    }
}

async fn worker(
    mut client: RateLimitServiceClient<Channel>,
    plan: Arc<Plan>,
    start_offset: Duration,
) -> Result<Tally, String> {
    let mut tally = Tally::new()?;
    let mut next_send = Instant::now() + start_offset;
    loop {
        if let Some(interval) = plan.interval {
            tokio::time::sleep_until(next_send.into()).await;
            next_send += interval;
        }
        let sent = Instant::now();
        if sent >= plan.deadline {
            break;
        }
        let ticket = plan.tickets.fetch_add(1, Ordering::Relaxed);
        if plan.max_tickets.is_some_and(|max| ticket >= max) {
            break;
        }
        let mut request = tonic::Request::new(plan.request(ticket));
        request.set_timeout(plan.timeout);
        let answer = client.should_rate_limit(request).await;
        let done = Instant::now();
        if sent < plan.measure_from {
            continue;
        }
        let nanos = u64::try_from((done - sent).as_nanos()).unwrap_or(u64::MAX);
        tally.latency.saturating_record(nanos.max(1));
        match answer {
            Ok(response) => match Code::try_from(response.get_ref().overall_code) {
                Ok(Code::Ok) => tally.ok += 1,
                Ok(Code::OverLimit) => tally.over_limit += 1,
                _ => tally.other_code += 1,
            },
            Err(status) => {
                tally.errors += 1;
                if tally.first_error.is_none() {
                    tally.first_error = Some(status.to_string());
                }
            }
        }
    }
    Ok(tally)
}

/// The address, if it is on loopback: this tool must not load anyone else's server.
fn loopback_address(addr: &str) -> Result<SocketAddr, String> {
    let host_port = addr
        .strip_prefix("http://")
        .unwrap_or(addr)
        .trim_end_matches('/');
    let resolved: Vec<SocketAddr> = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr:?}: {e}"))?
        .collect();
    match resolved.iter().find(|a| a.ip().is_loopback()) {
        Some(found) if resolved.iter().all(|a| a.ip().is_loopback()) => Ok(*found),
        _ => Err(format!(
            "{addr:?} is not a loopback address; loadgen only targets this machine"
        )),
    }
}

fn percentile_us(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1_000.0
}

async fn run(args: Args) -> Result<(), String> {
    let target = loopback_address(&args.addr)?;
    if args.connections == 0 || args.concurrency == 0 || args.keys == 0 {
        return Err("--connections, --concurrency and --keys must be at least 1".into());
    }
    if !(args.duration > 0.0
        && args.warmup >= 0.0
        && args.duration + args.warmup <= MAX_DURATION_SECS)
    {
        return Err(format!(
            "--duration must be positive and --duration + --warmup at most {MAX_DURATION_SECS} s"
        ));
    }
    let interval = match args.rate {
        None => None,
        Some(rate) if rate > 0.0 && rate.is_finite() => {
            Some(Duration::from_secs_f64(args.concurrency as f64 / rate))
        }
        Some(_) => return Err("--rate must be positive".into()),
    };
    let templates = args
        .descriptors
        .iter()
        .map(|text| Template::parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    let varying = templates.iter().filter(|t| t.varies()).count().max(1) as u64;

    let endpoint = Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| format!("bad address: {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        // One `connect` per channel: one HTTP/2 connection each.
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {target}: {e}"))?;
        channels.push(channel);
    }

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let deadline = measure_from + Duration::from_secs_f64(args.duration);
    let plan = Arc::new(Plan {
        domain: args.domain.clone(),
        templates,
        varying,
        keys: args.keys,
        hits_addend: args.hits_addend,
        timeout: Duration::from_millis(args.timeout_ms),
        tickets: AtomicU64::new(0),
        max_tickets: args.requests,
        measure_from,
        deadline,
        interval,
    });
    let mut workers = Vec::with_capacity(args.concurrency);
    for w in 0..args.concurrency {
        let client = RateLimitServiceClient::new(channels[w % channels.len()].clone());
        // Spread rate-mode workers evenly over one interval.
        let offset = interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(w as f64 / args.concurrency as f64)
        });
        workers.push(tokio::spawn(worker(client, Arc::clone(&plan), offset)));
    }
    let mut tally = Tally::new()?;
    for handle in workers {
        let worker_tally = handle.await.map_err(|e| format!("worker failed: {e}"))??;
        tally.merge(worker_tally)?;
    }
    // Count mode may end before the deadline; answers to requests sent just
    // before the deadline are counted within it.
    let elapsed = Instant::now()
        .min(deadline)
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-9);

    let total = tally.total();
    let rps = total as f64 / elapsed;
    let share = |n: u64| {
        if total == 0 {
            0.0
        } else {
            100.0 * n as f64 / total as f64
        }
    };
    let h = &tally.latency;
    let (p50, p90, p99, p999, max) = (
        percentile_us(h, 0.50),
        percentile_us(h, 0.90),
        percentile_us(h, 0.99),
        percentile_us(h, 0.999),
        h.max() as f64 / 1_000.0,
    );
    println!(
        "target       {target} (domain {}, {} descriptor(s), {} key(s))",
        args.domain,
        plan.templates.len(),
        args.keys
    );
    println!(
        "load         {} connection(s), {} in flight{}",
        args.connections,
        args.concurrency,
        args.rate
            .map_or(String::new(), |r| format!(", paced at {r:.0} req/s"))
    );
    println!("requests     {total} in {elapsed:.2} s = {rps:.0} req/s");
    println!(
        "latency µs   p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  p99.9 {p999:.1}  max {max:.1}"
    );
    println!(
        "answers      OK {:.2}%  OVER_LIMIT {:.2}%  other code {:.2}%  errors {:.2}% ({})",
        share(tally.ok),
        share(tally.over_limit),
        share(tally.other_code),
        share(tally.errors),
        tally.errors
    );
    if let Some(error) = &tally.first_error {
        println!("first error  {error}");
    }
    println!(
        "RESULT rps={rps:.0} p50_us={p50:.1} p90_us={p90:.1} p99_us={p99:.1} p999_us={p999:.1} \
         requests={total} ok={} over_limit={} other={} errors={}",
        tally.ok, tally.over_limit, tally.other_code, tally.errors
    );
    Ok(())
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build();
    let result = runtime
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|runtime| runtime.block_on(run(args)));
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}
