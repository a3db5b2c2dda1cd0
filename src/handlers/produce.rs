//! Produce and InitProducerId.

use super::fan_out::{fan_out, lookup_or_adopt, target};
use super::str_bytes;
use crate::error::ErrorCode;
use crate::partition::ProduceOutcome;
use crate::shard::{PartitionOp, PartitionReply, Shard};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
};
use std::rc::Rc;

fn partition_response(index: i32, o: &ProduceOutcome) -> PartitionProduceResponse {
    let mut p = PartitionProduceResponse::default();
    p.index = index;
    p.error_code = o.error.code();
    p.base_offset = o.base_offset;
    p.log_append_time_ms = o.log_append_time_ms;
    p.log_start_offset = o.log_start_offset;
    p.error_message = o.message.as_deref().map(str_bytes);
    // Produce v8+ (KIP-467); the encoder leaves them out of older versions.
    p.record_errors = o
        .record_errors
        .iter()
        .map(|&i| {
            let mut e = BatchIndexAndErrorMessage::default();
            e.batch_index = i;
            e.batch_index_error_message = o.message.as_deref().map(str_bytes);
            e
        })
        .collect();
    p
}

pub async fn produce(shard: &Rc<Shard>, req: ProduceRequest, version: i16) -> ProduceResponse {
    let acks_ok = matches!(req.acks, -1..=1);
    let table = shard.topics();
    let by_id = version >= 13;
    // (topic index, partition index, records) per requested partition.
    let mut items = Vec::new();
    let mut topics_out = Vec::with_capacity(req.topic_data.len());
    for (ti, topic) in req.topic_data.into_iter().enumerate() {
        let meta =
            lookup_or_adopt(shard, &table, topic.name.0.as_str(), &topic.topic_id, by_id).await;
        let mut t = TopicProduceResponse::default();
        t.name = topic.name.clone();
        t.topic_id = topic.topic_id;
        topics_out.push(t);
        for p in topic.partition_data {
            let target = if acks_ok {
                target(meta.as_ref(), p.index, by_id)
            } else {
                Err(ErrorCode::InvalidRequiredAcks)
            };
            items.push(((ti, p.index, p.records), target));
        }
    }
    let replies = fan_out(shard, &mut items, |(_, _, records)| PartitionOp::Produce {
        records: records.take(),
    })
    .await;
    for (((ti, index, _), _), reply) in items.iter().zip(replies) {
        let outcome = match reply {
            Ok(PartitionReply::Produce(o)) => o,
            Ok(_) => ProduceOutcome::error(ErrorCode::UnknownServerError, None),
            Err(e) => ProduceOutcome::error(e, None),
        };
        topics_out[*ti]
            .partition_responses
            .push(partition_response(*index, &outcome));
    }
    let mut resp = ProduceResponse::default();
    resp.responses = topics_out;
    resp
}

pub fn init_producer_id(shard: &Shard, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    if req.transactional_id.is_some() {
        // Transactions are not supported; a transactional producer fails fast instead of
        // retrying a coordinator that will never come.
        resp.error_code = ErrorCode::TransactionalIdAuthorizationFailed.code();
        resp.producer_id = ProducerId(-1);
        resp.producer_epoch = -1;
        return resp;
    }
    // KIP-360: a producer that already has an id asks for an epoch bump to reset its sequences.
    let (id, epoch) =
        if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
            (req.producer_id.0, req.producer_epoch + 1)
        } else {
            (shard.allocate_producer_id(), 0)
        };
    resp.producer_id = ProducerId(id);
    resp.producer_epoch = epoch;
    resp
}
