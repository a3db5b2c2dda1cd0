//! Fetch: stored batches returned byte for byte, long-polled on the partitions' owners.

use super::fan_out::{fan_out, lookup_or_adopt, target, Target};
use crate::config::limits;
use crate::error::ErrorCode;
use crate::shard::{PartitionOp, PartitionReply, Shard};
use crate::storage::ReadResult;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// One requested partition: (topic index, partition index, fetch offset, partition max bytes).
type Wanted = (usize, i32, i64, usize);

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
    let by_id = version >= 13;
    let mut wanted = Vec::new();
    for (ti, topic) in req.topics.iter().enumerate() {
        let meta = lookup_or_adopt(
            shard,
            &table,
            topic.topic.0.as_str(),
            &topic.topic_id,
            by_id,
        )
        .await;
        let mut t = FetchableTopicResponse::default();
        t.topic = topic.topic.clone();
        t.topic_id = topic.topic_id;
        resp.responses.push(t);
        for p in &topic.partitions {
            // No partition's read may exceed the whole answer's limit either: on SeaweedMQ a
            // read is one batch, which the answer could only take whole (KIP-74's first batch).
            let max_bytes = p.partition_max_bytes.min(req.max_bytes).max(0) as usize;
            let key = (ti, p.partition, p.fetch_offset, max_bytes);
            wanted.push((key, target(meta.as_ref(), p.partition, by_id)));
        }
    }
    let results = read_until_enough(shard, &req, &mut wanted).await;
    let max_bytes = (req.max_bytes.max(0) as usize).min(limits::FETCH_RESPONSE_BYTES_MAX);
    let datas = answer_partitions(shard, &wanted, results, max_bytes).await;
    for (ti, pd) in datas {
        resp.responses[ti].partitions.push(pd);
    }
    resp.session_id = 0;
    resp
}

/// Reads every wanted partition, and again each time one has new data, until `min_bytes` came
/// back, an error did, `max_wait_ms` passed, or the shard stops. Nothing sleep-polls: the
/// owners wake the wait on their next append.
async fn read_until_enough(
    shard: &Rc<Shard>,
    req: &FetchRequest,
    wanted: &mut [(Wanted, Target)],
) -> Vec<Result<ReadResult, ErrorCode>> {
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_wait =
        Duration::from_millis(req.max_wait_ms.clamp(0, limits::FETCH_MAX_WAIT_MS) as u64);
    let deadline = Instant::now() + max_wait;
    loop {
        let replies = fan_out(shard, wanted, |(_, _, offset, max_bytes)| {
            PartitionOp::Read {
                offset: *offset,
                max_bytes: *max_bytes,
                at_least_one: true,
            }
        })
        .await;
        let results: Vec<Result<ReadResult, ErrorCode>> = replies
            .into_iter()
            .map(|r| match r {
                Ok(PartitionReply::Read(r)) => r,
                Ok(_) => Err(ErrorCode::UnknownServerError),
                Err(e) => Err(e),
            })
            .collect();
        let bytes: usize = results
            .iter()
            .map(|r| r.as_ref().map_or(0, |r| r.bytes))
            .sum();
        let any_error = results.iter().any(|r| r.is_err());
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || any_error || now >= deadline || shard.stopping.get() {
            return results;
        }
        if bytes >= min_bytes && min_bytes == 0 {
            return results;
        }
        // Not enough yet: wait on the owners for anything past what we just saw.
        let waits: Vec<_> = wanted
            .iter()
            .zip(&results)
            .filter_map(|((_, t), r)| {
                let tp = t.as_ref().ok()?.clone();
                Some((tp, r.as_ref().map_or(0, |r| r.high_watermark)))
            })
            .collect();
        shard.wait_for_data(waits, deadline - now).await;
    }
}

/// The longest prefix of `batches` within `budget` bytes (with `at_least_one`, never empty
/// when there is a batch), and its size.
fn within(mut batches: Vec<Bytes>, budget: usize, at_least_one: bool) -> (Vec<Bytes>, usize) {
    let mut bytes = 0;
    let mut keep = 0;
    for b in &batches {
        if bytes + b.len() > budget && !(at_least_one && keep == 0) {
            break;
        }
        bytes += b.len();
        keep += 1;
    }
    batches.truncate(keep);
    (batches, bytes)
}

/// The answer of each partition, in request order, within the response's `max_bytes`; the
/// partitions that failed to read carry the valid range so the client can reset.
async fn answer_partitions(
    shard: &Rc<Shard>,
    wanted: &[(Wanted, Target)],
    results: Vec<Result<ReadResult, ErrorCode>>,
    max_bytes: usize,
) -> Vec<(usize, PartitionData)> {
    let mut budget_used = 0usize;
    let mut failed_ends = Vec::new();
    let mut datas = Vec::with_capacity(wanted.len());
    for (((ti, partition, _, _), target), result) in wanted.iter().zip(results) {
        let mut pd = PartitionData::default();
        pd.partition_index = *partition;
        pd.high_watermark = -1;
        pd.last_stable_offset = -1;
        pd.log_start_offset = -1;
        pd.preferred_read_replica = BrokerId(-1);
        pd.records = Some(Bytes::new());
        match result {
            Ok(r) => {
                pd.high_watermark = r.high_watermark;
                pd.last_stable_offset = r.high_watermark;
                pd.log_start_offset = r.log_start_offset;
                // The response's max_bytes: each partition gets the batches that fit in
                // what is left of it; the first non-empty one at least its first batch, so a
                // batch larger than the limit still makes progress (KIP-74).
                let (batches, bytes) = within(
                    r.batches,
                    max_bytes.saturating_sub(budget_used),
                    budget_used == 0,
                );
                if bytes > 0 {
                    budget_used += bytes;
                    pd.records = Some(concat(batches, bytes));
                }
            }
            Err(e) => {
                pd.error_code = e.code();
                if let Ok(tp) = target {
                    failed_ends.push((datas.len(), Ok(tp.clone())));
                }
            }
        }
        datas.push((*ti, pd));
    }
    if !failed_ends.is_empty() {
        let ends = fan_out(shard, &mut failed_ends, |_| PartitionOp::EndOffset).await;
        for ((i, _), r) in failed_ends.iter().zip(ends) {
            if let Ok(PartitionReply::EndOffset(Ok((start, end)))) = r {
                datas[*i].1.log_start_offset = start;
                datas[*i].1.high_watermark = end;
                datas[*i].1.last_stable_offset = end;
            }
        }
    }
    datas
}

#[cfg(test)]
mod tests {
    use super::within;
    use bytes::Bytes;

    fn batches(sizes: &[usize]) -> Vec<Bytes> {
        sizes.iter().map(|&n| Bytes::from(vec![0u8; n])).collect()
    }

    #[test]
    fn a_partition_gets_the_batches_that_fit_what_is_left() {
        let (b, n) = within(batches(&[300, 300, 300]), 700, false);
        assert_eq!((b.len(), n), (2, 600));
        let (b, n) = within(batches(&[300, 300]), 200, false);
        assert_eq!((b.len(), n), (0, 0));
    }

    #[test]
    fn the_first_partition_gets_its_first_batch_even_when_larger_than_the_limit() {
        // KIP-74: an oversized first batch is returned whole so the consumer makes progress,
        // and nothing after it.
        let (b, n) = within(batches(&[5000, 10]), 1000, true);
        assert_eq!((b.len(), n), (1, 5000));
        let (b, n) = within(Vec::new(), 1000, true);
        assert_eq!((b.len(), n), (0, 0));
    }
}
