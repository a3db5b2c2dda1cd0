//! Produce and InitProducerId.

use super::str_bytes;
use crate::error::ErrorCode;
use crate::partition::ProduceOutcome;
use crate::shard::{PartitionOp, PartitionReply, Shard, TopicPartition};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
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
    p
}

pub async fn produce(shard: &Rc<Shard>, req: ProduceRequest, version: i16) -> ProduceResponse {
    let acks_ok = matches!(req.acks, -1..=1);
    let table = shard.topics();
    // Resolve every partition first; the ones that can go to their owner are routed together.
    let mut slots: Vec<(usize, i32, Option<ProduceOutcome>)> = Vec::new();
    let mut ops = Vec::new();
    let mut topics_out = Vec::with_capacity(req.topic_data.len());
    for (ti, topic) in req.topic_data.into_iter().enumerate() {
        let meta = if version >= 13 {
            table.get_by_id(&topic.topic_id).cloned()
        } else {
            table.get(topic.name.0.as_str()).cloned()
        };
        let mut t = TopicProduceResponse::default();
        t.name = topic.name.clone();
        t.topic_id = topic.topic_id;
        topics_out.push(t);
        for p in topic.partition_data {
            let error = if !acks_ok {
                Some(ErrorCode::InvalidRequiredAcks)
            } else {
                match &meta {
                    Some(m) if p.index >= 0 && p.index < m.partitions => None,
                    _ if version >= 13 && meta.is_none() => Some(ErrorCode::UnknownTopicId),
                    _ => Some(ErrorCode::UnknownTopicOrPartition),
                }
            };
            match (error, &meta) {
                (None, Some(m)) => {
                    slots.push((ti, p.index, None));
                    ops.push((
                        TopicPartition {
                            topic: m.name.clone(),
                            partition: p.index,
                        },
                        PartitionOp::Produce { records: p.records },
                    ));
                }
                (e, _) => slots.push((
                    ti,
                    p.index,
                    Some(ProduceOutcome::error(
                        e.unwrap_or(ErrorCode::UnknownTopicOrPartition),
                        None,
                    )),
                )),
            }
        }
    }
    let mut replies = shard.route(ops).await.into_iter();
    for (ti, index, outcome) in slots {
        let outcome = match outcome {
            Some(o) => o,
            None => match replies.next() {
                Some(PartitionReply::Produce(o)) => o,
                _ => ProduceOutcome::error(ErrorCode::UnknownServerError, None),
            },
        };
        topics_out[ti]
            .partition_responses
            .push(partition_response(index, &outcome));
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
