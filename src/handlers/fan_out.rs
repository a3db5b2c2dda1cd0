//! The shape every partition-level API shares: resolve each named topic and partition once,
//! send one op per partition to the partition's owner (`Shard::route`), and read the answers
//! back in request order, with the partitions that could not be resolved answered in place.

use crate::error::ErrorCode;
use crate::shard::{PartitionOp, PartitionReply, RegistryOp, Shard, TopicPartition};
use crate::topics::{TopicMeta, TopicTable};
use std::rc::Rc;
use std::sync::Arc;
use uuid::Uuid;

/// Where one requested partition lives, or the error it is answered with.
pub type Target = Result<TopicPartition, ErrorCode>;

/// A topic named in a request: by id from the versions that name topics by id (Produce and
/// Fetch v13+), by name before.
pub fn lookup<'t>(
    table: &'t TopicTable,
    name: &str,
    id: &Uuid,
    by_id: bool,
) -> Option<&'t Arc<TopicMeta>> {
    if by_id {
        table.get_by_id(id)
    } else {
        table.get(name)
    }
}

/// [`lookup`], and for a name the table lacks on SeaweedMQ, SeaweedMQ itself: another kelp
/// instance (or SeaweedFS's gateway) may have made the topic since this one last listed them,
/// and a client sent here by that instance's Metadata must not meet UNKNOWN_TOPIC until the
/// next refresh.
pub async fn lookup_or_adopt(
    shard: &Rc<Shard>,
    table: &TopicTable,
    name: &str,
    id: &Uuid,
    by_id: bool,
) -> Option<Arc<TopicMeta>> {
    if let Some(meta) = lookup(table, name, id, by_id) {
        return Some(meta.clone());
    }
    if by_id || !shard.topics_may_exist_elsewhere() {
        return None;
    }
    let op = RegistryOp::Lookup {
        name: name.to_string(),
    };
    shard.registry(op).await.ok()
}

/// Resolves one requested partition of a topic found (or not) by [`lookup`].
pub fn target(meta: Option<&Arc<TopicMeta>>, partition: i32, by_id: bool) -> Target {
    match meta {
        Some(m) if (0..m.partitions).contains(&partition) => Ok(TopicPartition {
            topic: m.name.clone(),
            partition,
        }),
        None if by_id => Err(ErrorCode::UnknownTopicId),
        _ => Err(ErrorCode::UnknownTopicOrPartition),
    }
}

/// Runs `op` for each resolved item on its partition's owner; answers in the items' order,
/// the unresolved ones with their error.
pub async fn fan_out<K>(
    shard: &Rc<Shard>,
    items: &mut [(K, Target)],
    mut op: impl FnMut(&mut K) -> PartitionOp,
) -> Vec<Result<PartitionReply, ErrorCode>> {
    let ops: Vec<_> = items
        .iter_mut()
        .filter_map(|(k, t)| t.as_ref().ok().map(|tp| (tp.clone(), op(k))))
        .collect();
    let mut replies = shard.route(ops).await.into_iter();
    items
        .iter()
        .map(|(_, t)| match t {
            Ok(_) => replies.next().ok_or(ErrorCode::UnknownServerError),
            Err(e) => Err(*e),
        })
        .collect()
}
