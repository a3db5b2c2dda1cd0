//! ListOffsets and OffsetForLeaderEpoch. kelp's leader epoch is always 0: one broker, one
//! leader, forever.

use crate::error::ErrorCode;
use crate::shard::{PartitionOp, PartitionReply, Shard, TopicPartition};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};
use std::rc::Rc;

pub async fn list_offsets(
    shard: &Rc<Shard>,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let table = shard.topics();
    let mut resp = ListOffsetsResponse::default();
    let mut ops = Vec::new();
    let mut slots = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let meta = table.get(t.name.0.as_str());
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        resp.topics.push(tr);
        for p in &t.partitions {
            let ok =
                meta.is_some_and(|m| p.partition_index >= 0 && p.partition_index < m.partitions);
            slots.push((ti, p.partition_index, ok));
            if ok {
                ops.push((
                    TopicPartition {
                        topic: meta.expect("checked").name.clone(),
                        partition: p.partition_index,
                    },
                    PartitionOp::ListOffset {
                        timestamp: p.timestamp,
                    },
                ));
            }
        }
    }
    let mut replies = shard.route(ops).await.into_iter();
    for (ti, index, ok) in slots {
        let mut pr = ListOffsetsPartitionResponse::default();
        pr.partition_index = index;
        pr.offset = -1;
        pr.timestamp = -1;
        if version >= 4 {
            pr.leader_epoch = 0;
        }
        if !ok {
            pr.error_code = ErrorCode::UnknownTopicOrPartition.code();
        } else {
            match replies.next() {
                Some(PartitionReply::ListOffset(Ok(found))) => {
                    pr.offset = found.offset;
                    pr.timestamp = found.timestamp;
                }
                Some(PartitionReply::ListOffset(Err(e))) => pr.error_code = e.code(),
                _ => pr.error_code = ErrorCode::UnknownServerError.code(),
            }
        }
        resp.topics[ti].partitions.push(pr);
    }
    resp
}

pub async fn offset_for_leader_epoch(
    shard: &Rc<Shard>,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let table = shard.topics();
    let mut resp = OffsetForLeaderEpochResponse::default();
    let mut ops = Vec::new();
    let mut slots = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let meta = table.get(t.topic.0.as_str());
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        resp.topics.push(tr);
        for p in &t.partitions {
            let ok = meta.is_some_and(|m| p.partition >= 0 && p.partition < m.partitions);
            slots.push((ti, p.partition, p.leader_epoch, ok));
            if ok {
                ops.push((
                    TopicPartition {
                        topic: meta.expect("checked").name.clone(),
                        partition: p.partition,
                    },
                    PartitionOp::EndOffset,
                ));
            }
        }
    }
    let mut replies = shard.route(ops).await.into_iter();
    for (ti, partition, epoch, ok) in slots {
        let mut e = EpochEndOffset::default();
        e.partition = partition;
        e.leader_epoch = -1;
        e.end_offset = -1;
        if !ok {
            e.error_code = ErrorCode::UnknownTopicOrPartition.code();
        } else if let Some(PartitionReply::EndOffset(Ok((_, end)))) = replies.next() {
            // Every record was written in epoch 0, so epoch 0 (or any later one a client may
            // think of) ends at the log end.
            if epoch >= 0 {
                e.leader_epoch = 0;
                e.end_offset = end;
            }
        } else {
            e.error_code = ErrorCode::UnknownServerError.code();
        }
        resp.topics[ti].partitions.push(e);
    }
    resp
}
