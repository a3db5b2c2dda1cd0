//! Fetch: stored batches returned byte for byte, long-polled on the partitions' owners.

use crate::config::limits;
use crate::error::ErrorCode;
use crate::shard::{PartitionOp, PartitionReply, Shard, TopicPartition};
use crate::storage::ReadResult;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// One requested partition, resolved.
struct Wanted {
    topic_index: usize,
    partition: i32,
    /// Set when the partition cannot be read at all.
    error: Option<ErrorCode>,
    tp: Option<TopicPartition>,
    offset: i64,
    max_bytes: usize,
}

fn concat(batches: Vec<Bytes>, bytes: usize) -> Bytes {
    if batches.len() == 1 {
        return batches.into_iter().next().expect("one batch");
    }
    let mut out = BytesMut::with_capacity(bytes);
    for b in batches {
        out.extend_from_slice(&b);
    }
    out.freeze()
}

pub async fn fetch(shard: &Rc<Shard>, req: FetchRequest, version: i16) -> FetchResponse {
    let mut resp = FetchResponse::default();
    // Fetch sessions (KIP-227) are declined: session id 0 in every answer tells the client to
    // keep sending full requests. A client that names a session gets the error Kafka gives for
    // a session the broker does not have.
    if req.session_id != 0 {
        resp.error_code = ErrorCode::FetchSessionIdNotFound.code();
        return resp;
    }
    if req.session_epoch != -1 && req.session_epoch != 0 {
        resp.error_code = ErrorCode::InvalidFetchSessionEpoch.code();
        return resp;
    }
    let table = shard.topics();
    let mut wanted = Vec::new();
    for (ti, topic) in req.topics.iter().enumerate() {
        let meta = if version >= 13 {
            table.get_by_id(&topic.topic_id).cloned()
        } else {
            table.get(topic.topic.0.as_str()).cloned()
        };
        let mut t = FetchableTopicResponse::default();
        t.topic = topic.topic.clone();
        t.topic_id = topic.topic_id;
        resp.responses.push(t);
        for p in &topic.partitions {
            let (error, tp) = match &meta {
                Some(m) if p.partition >= 0 && p.partition < m.partitions => (
                    None,
                    Some(TopicPartition {
                        topic: m.name.clone(),
                        partition: p.partition,
                    }),
                ),
                None if version >= 13 => (Some(ErrorCode::UnknownTopicId), None),
                _ => (Some(ErrorCode::UnknownTopicOrPartition), None),
            };
            wanted.push(Wanted {
                topic_index: ti,
                partition: p.partition,
                error,
                tp,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
            });
        }
    }
    let max_bytes = (req.max_bytes.max(0) as usize).min(limits::FETCH_RESPONSE_BYTES_MAX);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_wait =
        Duration::from_millis(req.max_wait_ms.clamp(0, limits::FETCH_MAX_WAIT_MS) as u64);
    let deadline = Instant::now() + max_wait;

    let results = loop {
        let ops: Vec<_> = wanted
            .iter()
            .filter_map(|w| {
                w.tp.clone().map(|tp| {
                    (
                        tp,
                        PartitionOp::Read {
                            offset: w.offset,
                            max_bytes: w.max_bytes,
                            at_least_one: true,
                        },
                    )
                })
            })
            .collect();
        let replies = shard.route(ops).await;
        let results: Vec<Result<ReadResult, ErrorCode>> = replies
            .into_iter()
            .map(|r| match r {
                PartitionReply::Read(r) => r,
                _ => Err(ErrorCode::UnknownServerError),
            })
            .collect();
        let bytes: usize = results
            .iter()
            .map(|r| r.as_ref().map(|r| r.bytes).unwrap_or(0))
            .sum();
        let any_error =
            results.iter().any(|r| r.is_err()) || wanted.iter().any(|w| w.error.is_some());
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || any_error || now >= deadline || shard.stopping.get() {
            break results;
        }
        if bytes >= min_bytes && min_bytes == 0 {
            break results;
        }
        // Not enough yet: wait on the owners for anything past what we just saw.
        let waits: Vec<_> = wanted
            .iter()
            .filter_map(|w| w.tp.clone())
            .zip(results.iter())
            .map(|(tp, r)| (tp, r.as_ref().map(|r| r.high_watermark).unwrap_or(0)))
            .collect();
        shard.wait_for_data(waits, deadline - now).await;
    };

    // Offsets for partitions that failed to read, so the client learns the valid range.
    let mut results = results.into_iter();
    let mut budget_used = 0usize;
    let mut failed_ends = Vec::new();
    let mut datas: Vec<(usize, PartitionData)> = Vec::with_capacity(wanted.len());
    for w in &wanted {
        let mut pd = PartitionData::default();
        pd.partition_index = w.partition;
        pd.high_watermark = -1;
        pd.last_stable_offset = -1;
        pd.log_start_offset = -1;
        pd.preferred_read_replica = BrokerId(-1);
        pd.records = Some(Bytes::new());
        if let Some(e) = w.error {
            pd.error_code = e.code();
        } else {
            match results.next() {
                Some(Ok(r)) => {
                    pd.high_watermark = r.high_watermark;
                    pd.last_stable_offset = r.high_watermark;
                    pd.log_start_offset = r.log_start_offset;
                    // The response's max_bytes: always at least the first non-empty partition
                    // whole (KIP-74), then whole partitions while they fit.
                    if r.bytes > 0 && (budget_used == 0 || budget_used + r.bytes <= max_bytes) {
                        budget_used += r.bytes;
                        pd.records = Some(concat(r.batches, r.bytes));
                    }
                }
                Some(Err(e)) => {
                    pd.error_code = e.code();
                    if let Some(tp) = &w.tp {
                        failed_ends.push((datas.len(), tp.clone()));
                    }
                }
                None => pd.error_code = ErrorCode::UnknownServerError.code(),
            }
        }
        datas.push((w.topic_index, pd));
    }
    if !failed_ends.is_empty() {
        let ops = failed_ends
            .iter()
            .map(|(_, tp)| (tp.clone(), PartitionOp::EndOffset))
            .collect();
        for ((i, _), r) in failed_ends.iter().zip(shard.route(ops).await) {
            if let PartitionReply::EndOffset(Ok((start, end))) = r {
                datas[*i].1.log_start_offset = start;
                datas[*i].1.high_watermark = end;
                datas[*i].1.last_stable_offset = end;
            }
        }
    }
    for (ti, pd) in datas {
        resp.responses[ti].partitions.push(pd);
    }
    resp.session_id = 0;
    resp
}
