//! Batched exact counting: the requests of concurrent callers share one
//! script call.
//!
//! Each of the store's connections has a *lane*: a queue and a task that
//! sends what the queue holds as one call of `redis.lua` (at most
//! [`MAX_BATCH`] requests), waits for the answer, hands each request its
//! line, and starts over. A lane has at most one batch in flight, and no
//! timer: a request that finds its lane idle is sent at once, alone (the
//! latency of one unbatched call); one that arrives while a batch is in
//! flight waits for that batch's answer, then goes out with everything
//! that queued meanwhile. So a request waits **at most one script call on
//! its lane** before its own is sent, and its whole wait is bounded by the
//! store's timeout like any call. Under load, batches grow by themselves to
//! the number of requests that arrive during one round trip.
//!
//! What batching keeps: the script evaluates the requests of a batch one
//! after another, each atomically and all-or-nothing, each seeing the hits
//! of the requests before it, exactly as if each were its own call; a
//! request whose key holds another type is answered with its own error
//! ([`StoreError::Rejected`]) and its batch-mates are unaffected. A request
//! whose caller stopped waiting (timed out) before its batch left is
//! dropped, not counted.
//!
//! On a single node and on a Sentinel's master there is a lane per
//! connection and requests take them in turn. In a cluster a script call's
//! keys must share one slot: there are [`CLUSTER_LANES`] lanes, a request
//! part (one hash tag: one descriptor's limits) queues on its tag's lane,
//! and a lane sends one call per tag among what it drained, in parallel.
//! So a hot descriptor's requests share calls in a cluster too, while
//! distinct descriptors that happen to share a lane each get their own.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::script::{Call, Request, batch_cmd, bytes, invoke_on};
use super::{Shared, TimeSource};
use crate::store::StoreError;

/// Most requests in one script call.
pub(super) const MAX_BATCH: usize = 128;

/// Lanes in a cluster, where a request's lane is chosen by its hash tag.
pub(super) const CLUSTER_LANES: usize = 16;

/// Requests a lane's queue holds before callers wait to enqueue.
const QUEUE: usize = 4096;

/// A request's line of its batch's answer.
pub(super) struct Answer {
    text: Arc<Vec<u8>>,
    line: Range<usize>,
    /// The nanoseconds of Redis's now (0 with the caller's clock).
    pub(super) now_nanos: i128,
}

impl Answer {
    /// The answer of a call of one request.
    pub(super) fn whole(text: Vec<u8>) -> Result<Answer, StoreError> {
        split(text, 1).map(|mut answers| answers.remove(0))
    }

    /// The request's line.
    pub(super) fn line(&self) -> &[u8] {
        &self.text[self.line.clone()]
    }
}

/// The script's answer for `requests` requests: its header line (Redis's
/// now's nanoseconds), then a line each.
fn split(text: Vec<u8>, requests: usize) -> Result<Vec<Answer>, StoreError> {
    let text = Arc::new(text);
    let mut lines = text.split(|&byte| byte == b'\n');
    let now_nanos = lines
        .next()
        .and_then(|header| std::str::from_utf8(header).ok()?.parse().ok());
    let mut answers = Vec::with_capacity(requests);
    let mut start = text.iter().position(|&byte| byte == b'\n').map(|at| at + 1);
    for line in lines {
        let Some(from) = start else { break };
        let line = from..from + line.len();
        start = Some(line.end + 1);
        answers.push(line);
    }
    match now_nanos {
        Some(now_nanos) if answers.len() == requests => Ok(answers
            .into_iter()
            .map(|line| Answer {
                text: Arc::clone(&text),
                line,
                now_nanos,
            })
            .collect()),
        _ => Err(StoreError::Unavailable(format!(
            "unexpected script answer for {requests} requests: {:?}",
            String::from_utf8_lossy(&text)
        ))),
    }
}

struct Job {
    request: Request,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

/// Batches sent and requests they carried, since the store was created.
#[derive(Debug, Default)]
pub(super) struct BatchStats {
    batches: AtomicU64,
    requests: AtomicU64,
}

impl BatchStats {
    /// `(batches, requests)` so far.
    pub(super) fn get(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        )
    }
}

/// The lanes of one store.
pub(super) struct Batcher {
    lanes: Box<[mpsc::Sender<Job>]>,
    next: AtomicUsize,
    pub(super) stats: Arc<BatchStats>,
    /// Redis Cluster: a request's lane is its hash tag's.
    cluster: bool,
}

impl Batcher {
    /// Starts `lanes` lanes on the current Tokio runtime; `None` outside
    /// one (every request is then its own call).
    pub(super) fn start(
        shared: &Arc<Shared>,
        script: &::redis::Script,
        lanes: usize,
        time_source: TimeSource,
        timeout: Duration,
        cluster: bool,
    ) -> Option<Batcher> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let stats = Arc::new(BatchStats::default());
        let lanes = (0..lanes.max(1))
            .map(|lane| {
                let (sender, receiver) = mpsc::channel(QUEUE);
                runtime.spawn(run_lane(Lane {
                    jobs: receiver,
                    shared: Arc::clone(shared),
                    lane,
                    script: script.clone(),
                    time_source,
                    timeout,
                    stats: Arc::clone(&stats),
                    cluster,
                }));
                sender
            })
            .collect();
        Some(Batcher {
            lanes,
            next: AtomicUsize::new(0),
            stats,
            cluster,
        })
    }

    /// Queues `request` on its lane and waits for its line; gives the
    /// request back if the lane has stopped (its runtime ended), for the
    /// caller to send alone. The caller bounds the wait with the store's
    /// timeout.
    pub(super) async fn submit(
        &self,
        request: Request,
    ) -> Result<Result<Answer, StoreError>, Request> {
        // In a cluster, every request of one hash tag (one descriptor: a
        // hot key's) queues on one lane, so they can share calls.
        let turn = if self.cluster {
            usize::try_from(request.tag() % self.lanes.len() as u64).unwrap_or(0)
        } else {
            self.next.fetch_add(1, Ordering::Relaxed)
        };
        let lane = turn % self.lanes.len();
        let (reply, answer) = oneshot::channel();
        if let Err(stopped) = self.lanes[lane].send(Job { request, reply }).await {
            return Err(stopped.0.request);
        }
        Ok(answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the Redis batch lane dropped a request".into(),
            ))
        }))
    }
}

struct Lane {
    jobs: mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    lane: usize,
    script: ::redis::Script,
    time_source: TimeSource,
    timeout: Duration,
    stats: Arc<BatchStats>,
    /// Redis Cluster: one call per hash tag.
    cluster: bool,
}

/// A lane's loop: until the store (every sender) is gone.
async fn run_lane(mut lane: Lane) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while lane.jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A caller that stopped waiting gets no answer: its hits are not
        // counted.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        if lane.cluster {
            send_by_tag(&lane, &mut batch).await;
        } else {
            send(&lane, &mut batch).await;
        }
    }
}

/// Sends `batch` as one script call and hands out the answers.
async fn send(lane: &Lane, batch: &mut Vec<Job>) {
    let cmd = batch_cmd(
        &lane.script,
        lane.time_source,
        batch.iter().map(|job| &job.request),
    );
    lane.stats.batches.fetch_add(1, Ordering::Relaxed);
    lane.stats
        .requests
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    let call = Call::Eval(&lane.script, &cmd);
    let result = invoke_on(&lane.shared, Some(lane.lane), lane.timeout, &call)
        .await
        .and_then(bytes);
    deliver(batch, result);
}

/// In a cluster a script call's keys must share a slot: one call per hash
/// tag, all in parallel, each request in its tag's call in arrival order.
async fn send_by_tag(lane: &Lane, batch: &mut Vec<Job>) {
    // Stable: the requests of one tag keep their order.
    batch.sort_by_key(|job| job.request.tag());
    let mut groups: Vec<Vec<Job>> = Vec::new();
    for job in batch.drain(..) {
        match groups.last_mut() {
            Some(group) if group[0].request.tag() == job.request.tag() => group.push(job),
            _ => groups.push(vec![job]),
        }
    }
    futures_util::future::join_all(groups.iter_mut().map(|group| send(lane, group))).await;
}

/// Hands each job of `batch` its line of `result`, or the error.
fn deliver(batch: &mut Vec<Job>, result: Result<Vec<u8>, StoreError>) {
    match result.and_then(|text| split(text, batch.len())) {
        Ok(answers) => {
            for (job, answer) in batch.drain(..).zip(answers) {
                let _ = job.reply.send(Ok(answer));
            }
        }
        Err(error) => {
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
}
