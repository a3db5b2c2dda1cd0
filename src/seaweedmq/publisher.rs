//! One Kafka partition's publisher: a task on the gRPC core that owns the partition's
//! `PublishMessage` stream to its leader.
//!
//! Callers' records queue in arrival order ([`Waiter`]s). The publisher sends them as `data`
//! messages, many before any ack (pipelining, up to `max_in_flight_records`), and all records
//! that are waiting when it gets to run go out together (coalescing; `linger_us` can hold them a
//! little longer). With `ack_interval` 1 the broker answers every `data` message, in order, with
//! the offset it assigned, so the n-th ack belongs to the n-th record sent: the oldest waiter
//! with records in flight. A caller is answered once all of its records are acked.
//!
//! When the stream breaks, records sent but not acked are sent again on a new stream (after a
//! new leader lookup when the broker said "not leader"). The broker may have stored some of them
//! before the stream broke, so before sending them again the publisher reads the log from the
//! offset the next record would have got ([`Publisher::reconcile`]): records found there, in
//! order and equal in key and value, count as acked at those offsets and are not sent twice.
//! When that read fails, nothing is sent: the stream is dropped and the check runs again on the
//! next one (sending blind would store some twice).
//!
//! The publisher never acknowledges a record at an offset another record holds, and never
//! writes to a partition whose log lost acknowledged records: such a partition is fenced
//! ([`super::marks`]). It checks before its first stream opens (the partition's mark against
//! the broker's range), after every broken stream (the log must still reach the last acked
//! offset), and on every ack (offsets only grow).

use super::core::Core;
use super::error::{broker_codes, SeaweedError, SeaweedResult};
use super::marks::PartitionMark;
use super::pb::messaging_pb::publish_message_request::{InitMessage, Message};
use super::pb::messaging_pb::{DataMessage, PublishMessageRequest, PublishMessageResponse};
use super::Record;
use futures::channel::{mpsc as stream_mpsc, oneshot};
use futures::StreamExt;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tonic::{Status, Streaming};

/// One caller's publish, as the dispatcher hands it over.
pub(crate) struct PublishJob {
    pub(crate) records: Vec<Record>,
    pub(crate) reply: oneshot::Sender<SeaweedResult<Vec<i64>>>,
    /// When the caller gets a timeout if its records are not all acked.
    pub(crate) deadline: std::time::Instant,
    /// Not records but the order to leave: the partition moved to another kelp (see
    /// [`Publisher::leave`]); answered once the publisher has ended.
    pub(crate) leave: bool,
}

/// A caller waiting for its records' offsets.
struct Waiter {
    records: Vec<Record>,
    /// Records sent on the current stream: `records[..sent]`. Acked ones are `records[..acked]`
    /// where `acked = offsets.len()`.
    sent: usize,
    offsets: Vec<i64>,
    /// `None` once the caller has been answered (it timed out) while acks are still due.
    reply: Option<oneshot::Sender<SeaweedResult<Vec<i64>>>>,
    deadline: Instant,
    bytes: usize,
}

impl Waiter {
    fn in_flight(&self) -> usize {
        self.sent - self.offsets.len()
    }

    /// Some of its records reached the broker (sent, perhaps stored, perhaps acked). Such a
    /// caller is never answered with an error but the fence or shutdown: its producer would
    /// send the whole batch again, and the part the broker kept would be stored twice. It
    /// waits, across broken streams, until every record is acked.
    fn committed(&self) -> bool {
        self.sent > 0 || !self.offsets.is_empty()
    }
}

/// The open stream to the partition's leader.
struct OpenStream {
    /// `data` messages go in here; tonic sends them as the request body.
    tx: stream_mpsc::UnboundedSender<PublishMessageRequest>,
    acks: Streaming<PublishMessageResponse>,
    leader: String,
}

enum Event {
    Job(Option<PublishJob>),
    Ack(Option<Result<PublishMessageResponse, Status>>),
    LingerDone,
    Expired,
}

pub(crate) struct Publisher {
    core: Rc<Core>,
    topic: String,
    partition: i32,
    inbox: mpsc::UnboundedReceiver<PublishJob>,
    waiters: VecDeque<Waiter>,
    /// Index of the first waiter with records not yet sent.
    send_idx: usize,
    /// Records sent and not acked, over all waiters.
    in_flight: usize,
    /// Bytes of records not yet sent, and of all records held.
    unsent_bytes: usize,
    held_bytes: usize,
    stream: Option<OpenStream>,
    /// Armed while records linger; `flush` is set when it fires.
    linger: Option<Pin<Box<Sleep>>>,
    flush: bool,
    /// Fires at the oldest answerable waiter's deadline.
    expiry: Pin<Box<Sleep>>,
    /// Streams that broke in a row without an ack in between.
    failures: u32,
    /// The offset the broker gave the last acked record, plus one: where the next record of
    /// this publisher lands unless another publisher writes in between.
    next_offset: Option<i64>,
    /// Records that were in flight when a stream broke: the first this many unacked records may
    /// be stored already. Checked by [`Publisher::reconcile`] before they are sent again.
    unconfirmed: usize,
    /// A stream broke since the log was last checked: the broker may have restarted without
    /// records it acked, whether or not any were in flight.
    check_log: bool,
    /// The partition's mark and fence, shared with the core (see [`super::marks`]).
    mark: Rc<PartitionMark>,
    /// The last wait between failed attempts to open a stream, while callers wait for it.
    reopen_backoff: Option<Duration>,
}

impl Publisher {
    pub(crate) fn new(
        core: Rc<Core>,
        topic: String,
        partition: i32,
        inbox: mpsc::UnboundedReceiver<PublishJob>,
    ) -> Self {
        let mark = core.marks.of(&topic, partition);
        Publisher {
            mark,
            core,
            topic,
            partition,
            inbox,
            waiters: VecDeque::new(),
            send_idx: 0,
            in_flight: 0,
            unsent_bytes: 0,
            held_bytes: 0,
            stream: None,
            linger: None,
            flush: false,
            expiry: Box::pin(tokio::time::sleep(Duration::ZERO)),
            failures: 0,
            next_offset: None,
            unconfirmed: 0,
            check_log: false,
            reopen_backoff: None,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            if self.stream.is_none() && !self.waiters.is_empty() {
                match self.open().await {
                    Ok(stream) => {
                        // The backoff is reset by the first ack or a completed log check, not
                        // here: a broker that accepts streams but cannot serve the check must
                        // not be asked again at once.
                        self.stream = Some(stream);
                    }
                    Err(e) => {
                        self.fail_uncommitted(e);
                        if !self.waiters.is_empty() {
                            // Callers whose records reached the broker wait for it to return.
                            self.pause_before_reopen().await;
                            continue;
                        }
                        // A publisher with unconfirmed records stays: the callers' retries
                        // come back to it and must be checked against what the broker kept.
                        if self.inbox.is_empty() && self.unconfirmed == 0 && !self.check_log {
                            // Nothing left to do (and maybe no such partition): end the task
                            // rather than keep one per name ever asked for. No await between
                            // the check and the removal, so no job can slip in.
                            self.core.forget_publisher(&self.topic, self.partition);
                            return;
                        }
                    }
                }
            }
            if self.stream.is_some()
                && (self.check_log || (self.unconfirmed > 0 && !self.waiters.is_empty()))
            {
                // Before anything is sent on a new stream (however it was opened): did the
                // broker keep what it acked, and which of the unacked records are there?
                if !self.reconcile().await {
                    self.pause_before_reopen().await;
                    continue;
                }
                self.reopen_backoff = None;
            }
            self.pump();
            match self.next_event().await {
                Event::Job(None) => {
                    // The core is shutting down.
                    self.fail_all(SeaweedError::Shutdown);
                    return;
                }
                Event::Job(Some(job)) if job.leave => {
                    self.leave().await;
                    let _ = job.reply.send(Ok(Vec::new()));
                    return;
                }
                Event::Job(Some(job)) if job.records.is_empty() => {
                    // An attach: open the stream if it is not, and say how that went. An open
                    // publish stream keeps the broker from unloading the partition.
                    if let Some(e) = self.fenced() {
                        let _ = job.reply.send(Err(e));
                        continue;
                    }
                    if self.stream.is_none() {
                        match self.open().await {
                            Ok(stream) => self.stream = Some(stream),
                            Err(e) => {
                                let _ = job.reply.send(Err(e));
                                continue;
                            }
                        }
                    }
                    let _ = job.reply.send(Ok(Vec::new()));
                }
                Event::Job(Some(job)) => {
                    self.enqueue(job);
                    // Take everything already queued, so that it shares one write.
                    while let Ok(job) = self.inbox.try_recv() {
                        self.enqueue(job);
                    }
                }
                Event::Ack(Some(Ok(ack))) => self.on_ack(ack),
                Event::Ack(Some(Err(status))) => {
                    let leader = self.stream.as_ref().map(|s| s.leader.clone());
                    let error = match leader {
                        Some(leader) => self.core.status_error(&leader, Some(&self.topic), status),
                        None => SeaweedError::Rpc {
                            code: status.code() as i32,
                            message: status.message().to_string(),
                        },
                    };
                    self.stream_broke(error);
                }
                Event::Ack(None) => {
                    let addr = self
                        .stream
                        .as_ref()
                        .map_or_else(String::new, |s| s.leader.clone());
                    self.stream_broke(SeaweedError::Unavailable {
                        addr,
                        reason: "publish stream closed by the broker".to_string(),
                    });
                }
                Event::LingerDone => {
                    self.linger = None;
                    self.flush = true;
                }
                Event::Expired => self.expire(),
            }
        }
    }

    async fn next_event(&mut self) -> Event {
        self.arm_expiry();
        let has_answerable = self.waiters.iter().any(|w| w.reply.is_some());
        std::future::poll_fn(|cx| {
            // Acks first: they free room in flight and answer callers.
            if let Some(stream) = self.stream.as_mut() {
                if let Poll::Ready(ack) = stream.acks.poll_next_unpin(cx) {
                    return Poll::Ready(Event::Ack(ack));
                }
            }
            if let Poll::Ready(job) = self.inbox.poll_recv(cx) {
                return Poll::Ready(Event::Job(job));
            }
            if let Some(linger) = self.linger.as_mut() {
                if linger.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::LingerDone);
                }
            }
            if has_answerable && self.expiry.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Expired);
            }
            Poll::Pending
        })
        .await
    }

    fn arm_expiry(&mut self) {
        if let Some(w) = self.waiters.iter().find(|w| w.reply.is_some()) {
            if self.expiry.deadline() != w.deadline {
                self.expiry.as_mut().reset(w.deadline);
            }
        }
    }

    fn enqueue(&mut self, job: PublishJob) {
        if let Some(e) = self.fenced() {
            let _ = job.reply.send(Err(e));
            return;
        }
        let bytes: usize = job.records.iter().map(Record::size_bytes).sum();
        if self.held_bytes + bytes > self.core.opts.max_partition_bytes && self.held_bytes > 0 {
            let _ = job.reply.send(Err(SeaweedError::Overloaded {
                capacity: self.core.opts.max_partition_bytes,
            }));
            return;
        }
        self.held_bytes += bytes;
        self.unsent_bytes += bytes;
        let count = job.records.len();
        self.waiters.push_back(Waiter {
            records: job.records,
            sent: 0,
            offsets: Vec::with_capacity(count),
            reply: Some(job.reply),
            deadline: Instant::from_std(job.deadline),
            bytes,
        });
        if self.core.opts.linger_us > 0 && self.linger.is_none() && !self.flush {
            let linger = Duration::from_micros(self.core.opts.linger_us);
            self.linger = Some(Box::pin(tokio::time::sleep(linger)));
        }
    }

    /// Sends what the in-flight limit and the linger allow.
    fn pump(&mut self) {
        let Some(stream) = self.stream.as_ref() else {
            return;
        };
        let lingering = self.core.opts.linger_us > 0
            && !self.flush
            && self.unsent_bytes < self.core.opts.batch_bytes;
        if lingering {
            return;
        }
        let max_in_flight = self.core.opts.max_in_flight_records.max(1);
        let mut sent = 0u64;
        while self.in_flight < max_in_flight {
            let Some(w) = self.waiters.get_mut(self.send_idx) else {
                break;
            };
            if w.sent == w.records.len() {
                self.send_idx += 1;
                continue;
            }
            let record = &w.records[w.sent];
            let data = PublishMessageRequest {
                message: Some(Message::Data(DataMessage {
                    key: record.key.clone(),
                    value: record.value.clone(),
                    ts_ns: record.ts_ns,
                    ctrl: None,
                })),
            };
            if stream.tx.unbounded_send(data).is_err() {
                // The request side is gone; the ack side will report why.
                break;
            }
            self.unsent_bytes -= record.size_bytes();
            w.sent += 1;
            self.in_flight += 1;
            sent += 1;
        }
        if sent > 0 {
            self.core.stats.count(sent);
        }
        if self.unsent_bytes == 0 {
            self.flush = false;
            self.linger = None;
        }
    }

    fn on_ack(&mut self, ack: PublishMessageResponse) {
        if ack.error_code != 0 || !ack.error.is_empty() {
            if ack.error_code == broker_codes::NOT_LEADER {
                self.core.invalidate(&self.topic);
            }
            self.stream_broke(SeaweedError::Broker {
                code: if ack.error_code == 0 {
                    broker_codes::UNKNOWN
                } else {
                    ack.error_code
                },
                message: ack.error,
            });
            return;
        }
        if let Some(expected) = self.next_offset.filter(|e| ack.assigned_offset < *e) {
            // Offsets only grow, whoever else writes: the broker numbered this record below
            // one it acknowledged before (4.53 after a crash resumes numbering from a periodic
            // checkpoint, behind its log). The record is stored at a taken offset; it must not
            // be acknowledged, and nothing more may be sent.
            self.fence(format!(
                "it gave a new record offset {} after it had acknowledged offset {}",
                ack.assigned_offset,
                expected - 1
            ));
            return;
        }
        let Some(w) = self.waiters.iter_mut().find(|w| w.in_flight() > 0) else {
            log::error!(
                "publish {}[{}]: ack for offset {} with nothing in flight; reopening the stream",
                self.topic,
                self.partition,
                ack.assigned_offset
            );
            self.stream_broke(SeaweedError::Broker {
                code: broker_codes::UNKNOWN,
                message: "unexpected publish ack".to_string(),
            });
            return;
        };
        w.offsets.push(ack.assigned_offset);
        self.in_flight -= 1;
        self.failures = 0;
        self.reopen_backoff = None;
        self.mark.acked(ack.assigned_offset + 1);
        self.next_offset = Some(ack.assigned_offset + 1);
        self.answer_done();
        if ack.should_close {
            self.stream_broke(SeaweedError::Unavailable {
                addr: self
                    .stream
                    .as_ref()
                    .map_or_else(String::new, |s| s.leader.clone()),
                reason: "broker asked to close the publish stream".to_string(),
            });
        }
    }

    /// Answers the waiters whose records are all acked. Acks come in send order, so they are
    /// at the front.
    fn answer_done(&mut self) {
        while self
            .waiters
            .front()
            .is_some_and(|w| w.offsets.len() == w.records.len())
        {
            let w = self.waiters.pop_front().expect("checked above");
            self.held_bytes -= w.bytes;
            self.send_idx = self.send_idx.saturating_sub(1);
            if let Some(reply) = w.reply {
                let _ = reply.send(Ok(w.offsets));
            }
        }
    }

    /// The fence's error, when the partition is fenced.
    fn fenced(&self) -> Option<SeaweedError> {
        if !self.mark.is_fenced() {
            return None;
        }
        self.core.marks.fenced(&self.topic, self.partition)
    }

    /// Fences the partition and answers every caller with the fence: nothing more is sent to
    /// it, and no record still unacked is acknowledged.
    fn fence(&mut self, reason: String) {
        let error = self.core.marks.fence(&self.topic, self.partition, reason);
        self.fail_all(error);
    }

    /// After a stream broke, before anything is sent on the new one: reads the log from the
    /// offset after the last acked record. If the log now ends below it, the broker lost acked
    /// records and the partition is fenced. Otherwise, when records were in flight, it takes
    /// those found there, in order and with equal key and value, as acked at their offsets. They are then not sent a
    /// second time, which is what keeps a Kafka idempotent producer's records single across a
    /// broker restart. Anything else (a failed read, a different record) ends the check, and
    /// the rest is sent again.
    ///
    /// The check waits for records to compare: when the callers were already answered with an
    /// error (the broker stayed away too long), it runs on their retries, which a Kafka
    /// producer sends with the same keys and values. The cost of comparing contents rather
    /// than ids (SeaweedMQ records carry none): a new record equal in key and value to one
    /// the broker kept from a broken stream counts as that one.
    ///
    /// Returns whether the check ran to its end. When it could not (the broker does not answer
    /// the read yet, or answers it short below its high-water mark), nothing is sent: records
    /// sent again blind may be stored twice, and a broker that then loses track of the first
    /// copies (see `seaweedmq-interface.md`) gives their offsets to others. The stream is
    /// dropped and the check runs again on the next one, after a backoff.
    async fn reconcile(&mut self) -> bool {
        self.check_log = false;
        let unconfirmed = std::mem::take(&mut self.unconfirmed);
        let Some(from) = self.next_offset else {
            // `open` learns where the log ends before the first stream: not reached.
            if unconfirmed == 0 {
                return true;
            }
            let e = SeaweedError::Broker {
                code: broker_codes::UNKNOWN,
                message: "no offset known to check the log from".to_string(),
            };
            return self.check_failed(unconfirmed, e);
        };
        let max = i32::try_from(unconfirmed.max(1)).unwrap_or(i32::MAX);
        let max_bytes = i32::try_from(self.core.opts.max_message_bytes).unwrap_or(i32::MAX);
        let fetched = self
            .core
            .fetch(&self.topic, self.partition, from, max_bytes, max)
            .await;
        let high_water_mark = match &fetched {
            Ok(f) => Some(f.high_water_mark),
            Err(SeaweedError::OffsetOutOfRange {
                high_water_mark, ..
            }) => Some(*high_water_mark),
            Err(_) => None,
        };
        let found = match fetched {
            Err(SeaweedError::Fenced { .. }) => {
                // Fenced meanwhile (a read found the log short): nothing may be sent.
                self.fail_all(
                    self.core
                        .marks
                        .fenced(&self.topic, self.partition)
                        .expect("fenced"),
                );
                return true;
            }
            _ if high_water_mark.is_some_and(|h| h < from) => {
                // The broker lost records it acknowledged (it acks before the filer has them),
                // and whatever is sent now would take their offsets.
                self.fence(format!(
                    "after its publish stream broke, its log ends at offset {}, but it had \
                     acknowledged offset {}",
                    high_water_mark.unwrap_or_default(),
                    from - 1
                ));
                return true;
            }
            Ok(_) if unconfirmed == 0 => return true,
            Ok(_) if self.waiters.is_empty() => {
                // Nothing to compare yet: the callers' retries will be.
                self.unconfirmed = unconfirmed;
                return true;
            }
            Ok(f) => {
                let end = f.high_water_mark;
                match self
                    .read_on(f.messages, from, end, unconfirmed, max_bytes)
                    .await
                {
                    Ok(found) => found,
                    Err(e) => return self.check_failed(unconfirmed, e),
                }
            }
            Err(e) => return self.check_failed(unconfirmed, e),
        };
        let mut matched = 0usize;
        'waiters: for w in self.waiters.iter_mut() {
            while w.offsets.len() < w.records.len() {
                let (Some(m), r) = (found.get(matched), &w.records[w.offsets.len()]) else {
                    break 'waiters;
                };
                if m.key != r.key || m.value != r.value {
                    break 'waiters;
                }
                w.offsets.push(from + matched as i64);
                w.sent = w.offsets.len();
                self.unsent_bytes -= r.size_bytes();
                matched += 1;
            }
        }
        if matched > 0 {
            self.next_offset = Some(from + matched as i64);
            self.send_idx = 0;
            self.answer_done();
            self.send_idx = self
                .waiters
                .iter()
                .position(|w| w.sent < w.records.len())
                .unwrap_or(self.waiters.len());
        }
        log::info!(
            "publish {}[{}]: {matched} of {unconfirmed} records in flight when the stream broke \
             were stored at offsets {from}..; sending the other {} again",
            self.topic,
            self.partition,
            unconfirmed - matched.min(unconfirmed)
        );
        true
    }

    /// The log could not be checked after a broken stream: nothing is sent, the stream goes,
    /// and the check runs again on the next one. Returns `false` for [`Publisher::reconcile`].
    fn check_failed(&mut self, unconfirmed: usize, e: SeaweedError) -> bool {
        log::warn!(
            "publish {}[{}]: cannot check the log after a broken stream ({e}); sending nothing \
             until it can be checked ({unconfirmed} records in flight then may be stored)",
            self.topic,
            self.partition
        );
        self.unconfirmed = unconfirmed;
        // Dropped before stream_broke, which would report it broken with nothing in flight.
        self.stream = None;
        self.stream_broke(e);
        false
    }

    /// The log from `from` on, up to `want` records or its end at `high_water_mark`: `first`
    /// (what one fetch returned) and as many further fetches as it takes, since a fetch may
    /// return fewer records than the log holds (one log file's worth, say). A failed fetch, or
    /// an empty answer below the high-water mark, fails the read: what it did not see may be
    /// stored.
    async fn read_on(
        &self,
        first: Vec<DataMessage>,
        from: i64,
        high_water_mark: i64,
        want: usize,
        max_bytes: i32,
    ) -> SeaweedResult<Vec<DataMessage>> {
        let mut found = first;
        while found.len() < want && from + (found.len() as i64) < high_water_mark {
            let at = from + found.len() as i64;
            let max = i32::try_from(want - found.len()).unwrap_or(i32::MAX);
            let f = self
                .core
                .fetch(&self.topic, self.partition, at, max_bytes, max)
                .await?;
            if f.messages.is_empty() {
                return Err(SeaweedError::Broker {
                    code: broker_codes::UNKNOWN,
                    message: format!(
                        "read at offset {at} answered nothing below the high-water mark \
                         {high_water_mark}"
                    ),
                });
            }
            found.extend(f.messages);
        }
        found.truncate(want);
        Ok(found)
    }

    /// The stream is unusable: drop it and send its unacked records again on a new one, unless
    /// it keeps breaking without progress.
    fn stream_broke(&mut self, error: SeaweedError) {
        if let Some(stream) = self.stream.take() {
            log::warn!(
                "publish {}[{}] to {}: stream broke with {} records in flight: {error}",
                self.topic,
                self.partition,
                stream.leader,
                self.in_flight
            );
        }
        self.unconfirmed = self.unconfirmed.max(self.in_flight);
        self.check_log = true;
        self.failures += 1;
        if self.failures > self.core.opts.publish_retries {
            self.failures = 0;
            self.fail_uncommitted(error);
        }
        self.rewind();
    }

    /// Marks every unacked record unsent. Callers that were already answered (timed out) are
    /// dropped rather than re-sent: their producer retries on its own.
    fn rewind(&mut self) {
        self.waiters.retain(|w| w.reply.is_some());
        for w in self.waiters.iter_mut() {
            w.sent = w.offsets.len();
        }
        self.in_flight = 0;
        self.send_idx = 0;
        self.recount_bytes();
    }

    /// Recounts the bytes held and not yet sent from the waiters (after a reset or a resend
    /// moved their `sent` marks).
    fn recount_bytes(&mut self) {
        self.held_bytes = self.waiters.iter().map(|w| w.bytes).sum();
        self.unsent_bytes = self
            .waiters
            .iter()
            .map(|w| {
                w.records[w.sent..]
                    .iter()
                    .map(Record::size_bytes)
                    .sum::<usize>()
            })
            .sum();
    }

    /// The partition moved to another kelp instance: nothing more is sent; the acks of the
    /// records in flight on a live stream are awaited (up to `SEAWEEDMQ_LEAVE_ACK_WAIT_MS`),
    /// so that none of them lands after the new owner has read the log's end; every caller
    /// still waiting is answered `Moved` (its producer retries at the new owner, which finds
    /// in the log whatever was stored) and the stream is closed.
    async fn leave(&mut self) {
        let deadline = Instant::now()
            + Duration::from_millis(crate::config::limits::SEAWEEDMQ_LEAVE_ACK_WAIT_MS);
        while self.in_flight > 0 {
            let Some(stream) = self.stream.as_mut() else {
                break;
            };
            match tokio::time::timeout_at(deadline, stream.acks.next()).await {
                Ok(Some(Ok(ack))) => self.on_ack(ack),
                _ => break,
            }
        }
        if self.in_flight > 0 {
            log::warn!(
                "publish {}[{}]: leaving with {} records unacknowledged",
                self.topic,
                self.partition,
                self.in_flight
            );
        }
        self.fail_all(SeaweedError::Moved {
            topic: self.topic.clone(),
            partition: self.partition,
        });
    }

    /// Answers every waiting caller with `error` and forgets all records: for the fence and
    /// shutdown only (see [`Waiter::committed`]). `unconfirmed` stays: the callers' retries are
    /// checked against the log before they are sent.
    fn fail_all(&mut self, error: SeaweedError) {
        for w in self.waiters.drain(..) {
            if let Some(reply) = w.reply {
                let _ = reply.send(Err(error.clone()));
            }
        }
        self.send_idx = 0;
        self.in_flight = 0;
        self.unsent_bytes = 0;
        self.held_bytes = 0;
        self.linger = None;
        self.flush = false;
        // A stream left open would deliver acks for records we no longer track.
        self.stream = None;
    }

    /// Answers the callers whose deadline passed and none of whose records went out yet (they
    /// are certainly not stored). Callers whose records reached the broker wait on: see
    /// [`Waiter::committed`].
    fn expire(&mut self) {
        let now = Instant::now();
        let timeout_ms = self.core.opts.request_timeout_ms;
        let before = self.waiters.len();
        self.waiters.retain_mut(|w| {
            if w.deadline > now || w.committed() {
                return true;
            }
            if let Some(reply) = w.reply.take() {
                let _ = reply.send(Err(SeaweedError::Timeout { timeout_ms }));
            }
            false
        });
        if self.waiters.len() != before {
            self.recount();
        }
    }

    /// Recomputes what the waiters hold and where sending resumes, after some were dropped.
    fn recount(&mut self) {
        self.send_idx = self
            .waiters
            .iter()
            .position(|w| w.sent < w.records.len())
            .unwrap_or(self.waiters.len());
        self.recount_bytes();
    }

    /// Answers with `error` every caller none of whose records went out, and keeps the others
    /// (see [`Waiter::committed`]).
    fn fail_uncommitted(&mut self, error: SeaweedError) {
        self.waiters.retain_mut(|w| {
            if w.committed() {
                return true;
            }
            if let Some(reply) = w.reply.take() {
                let _ = reply.send(Err(error.clone()));
            }
            false
        });
        self.recount();
    }

    /// Waits before the next attempt to open a stream, longer after each failure in a row.
    async fn pause_before_reopen(&mut self) {
        let min = Duration::from_millis(self.core.opts.backoff_min_ms.max(1));
        let max = Duration::from_millis(self.core.opts.backoff_max_ms).max(min);
        let wait = self.reopen_backoff.map_or(min, |b| (b * 2).min(max));
        self.reopen_backoff = Some(wait);
        tokio::time::sleep(wait).await;
    }

    /// Opens a stream to the partition's leader: `init`, then the broker's empty hello. Looks
    /// the leader up again when a broker says it is not (or no longer) the leader.
    async fn open(&mut self) -> SeaweedResult<OpenStream> {
        // Before the first stream of this process: did the broker keep everything that was
        // acknowledged (the mark), and where does its log end now?
        match self.core.check(&self.topic, self.partition).await? {
            Some(high_water_mark) => {
                self.next_offset = Some(self.next_offset.unwrap_or(0).max(high_water_mark));
            }
            // Checked by an earlier publisher of this partition: the log's end is still needed
            // as the base from which a broken stream's records are looked for.
            None if self.next_offset.is_none() => {
                let range = self
                    .core
                    .range_unchecked(&self.topic, self.partition)
                    .await?;
                self.next_offset = Some(range.high_water_mark);
            }
            None => {}
        }
        let attempts = self.core.opts.leader_lookup_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                // Give a moving partition a moment to settle.
                let pause = self.core.opts.backoff_min_ms * u64::from(attempt - 1);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let (partition, leader) = self.core.locate(&self.topic, self.partition).await?;
            let mut client = self.core.client(&leader).await?;
            let (tx, rx) = stream_mpsc::unbounded();
            let init = PublishMessageRequest {
                message: Some(Message::Init(InitMessage {
                    topic: Some(self.core.topic(&self.topic)),
                    partition: Some(partition),
                    ack_interval: 1,
                    follower_broker: String::new(),
                    publisher_name: self.core.opts.publisher_name.clone(),
                })),
            };
            tx.unbounded_send(init).expect("receiver held here");
            let timeout = self.core.request_timeout();
            let opened = tokio::time::timeout(timeout, async {
                let mut acks = client.publish_message(rx).await?.into_inner();
                let hello = acks.message().await?;
                Ok::<_, Status>((acks, hello))
            })
            .await;
            let (acks, hello) = match opened {
                Err(_) => {
                    self.core.suspect(&leader);
                    return Err(SeaweedError::Timeout {
                        timeout_ms: self.core.opts.request_timeout_ms,
                    });
                }
                Ok(Err(status)) => {
                    return Err(self.core.status_error(&leader, Some(&self.topic), status))
                }
                Ok(Ok(opened)) => opened,
            };
            let Some(hello) = hello else {
                return Err(SeaweedError::Unavailable {
                    addr: leader,
                    reason: "publish stream closed before its hello".to_string(),
                });
            };
            match hello.error_code {
                0 if hello.error.is_empty() => {
                    self.rewind();
                    return Ok(OpenStream { tx, acks, leader });
                }
                broker_codes::NOT_LEADER
                | broker_codes::TOPIC_NOT_FOUND
                | broker_codes::PARTITION_NOT_FOUND => {
                    log::info!(
                        "publish {}[{}]: {leader} refused ({}): {}; looking up again",
                        self.topic,
                        self.partition,
                        hello.error_code,
                        hello.error
                    );
                    self.core.invalidate(&self.topic);
                    last = hello.error;
                }
                code => {
                    return Err(SeaweedError::Broker {
                        code: if code == 0 {
                            broker_codes::UNKNOWN
                        } else {
                            code
                        },
                        message: hello.error,
                    })
                }
            }
        }
        Err(SeaweedError::NotLeader {
            topic: self.topic.clone(),
            partition: self.partition,
            attempts,
            reason: last,
        })
    }
}
