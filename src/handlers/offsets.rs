//! ListOffsets and OffsetForLeaderEpoch. kelp's leader epoch is always 0: one broker, one
//! leader, forever.

use super::fan_out::{fan_out, target};
use crate::error::ErrorCode;
use crate::shard::{PartitionOp, PartitionReply, Shard};
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
    // (topic index, partition index, timestamp) per requested partition.
    let mut items = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let meta = table.get(t.name.0.as_str());
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        resp.topics.push(tr);
        for p in &t.partitions {
            let key = (ti, p.partition_index, p.timestamp);
            items.push((key, target(meta, p.partition_index, false)));
        }
    }
    let replies = fan_out(shard, &mut items, |(_, _, timestamp)| {
        PartitionOp::ListOffset {
            timestamp: *timestamp,
        }
    })
    .await;
    for (((ti, index, _), _), reply) in items.iter().zip(replies) {
        let mut pr = ListOffsetsPartitionResponse::default();
        pr.partition_index = *index;
        pr.offset = -1;
        pr.timestamp = -1;
        if version >= 4 {
            pr.leader_epoch = 0;
        }
        match reply {
            Ok(PartitionReply::ListOffset(Ok(found))) => {
                pr.offset = found.offset;
                pr.timestamp = found.timestamp;
            }
            Ok(PartitionReply::ListOffset(Err(e))) | Err(e) => pr.error_code = e.code(),
            Ok(_) => pr.error_code = ErrorCode::UnknownServerError.code(),
        }
        resp.topics[*ti].partitions.push(pr);
    }
    resp
}

pub async fn offset_for_leader_epoch(
    shard: &Rc<Shard>,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let table = shard.topics();
    let mut resp = OffsetForLeaderEpochResponse::default();
    // (topic index, partition index, leader epoch) per requested partition.
    let mut items = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let meta = table.get(t.topic.0.as_str());
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        resp.topics.push(tr);
        for p in &t.partitions {
            let key = (ti, p.partition, p.leader_epoch);
            items.push((key, target(meta, p.partition, false)));
        }
    }
    let replies = fan_out(shard, &mut items, |_| PartitionOp::EndOffset).await;
    for (((ti, partition, epoch), _), reply) in items.iter().zip(replies) {
        let mut e = EpochEndOffset::default();
        e.partition = *partition;
        e.leader_epoch = -1;
        e.end_offset = -1;
        match reply {
            Ok(PartitionReply::EndOffset(Ok((_, end)))) => {
                // Every record was written in epoch 0, so epoch 0 (or any later one a client
                // may think of) ends at the log end.
                if *epoch >= 0 {
                    e.leader_epoch = 0;
                    e.end_offset = end;
                }
            }
            Err(code) => e.error_code = code.code(),
            Ok(_) => e.error_code = ErrorCode::UnknownServerError.code(),
        }
        resp.topics[*ti].partitions.push(e);
    }
    resp
}
