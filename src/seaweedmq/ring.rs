//! Kafka partitions on SeaweedMQ's partition ring.
//!
//! The broker splits a ring of [`RING_SIZE`] slots into equal ranges, one per partition, the
//! last range absorbing the remainder. Kafka partition `i` of an `N`-partition topic is the
//! `i`-th range. The broker's own `Partition` message (with its generation time
//! `unix_time_ns`) must be sent back verbatim, so the range computed here is only used to pick
//! the right entry out of `LookupTopicBrokers`, never to build a `Partition` from scratch.

use super::pb::messaging_pb::BrokerPartitionAssignment;
use super::pb::schema_pb::Partition;

/// Slots on the broker's partition ring (8 * 9 * 5 * 7: divisible by every count up to 10).
pub const RING_SIZE: i32 = 2520;

/// The ring range `[start, stop)` of Kafka partition `kafka_partition` out of `partitions`.
/// `None` when the partition does not exist or the count cannot be laid on the ring.
pub fn kafka_partition_range(kafka_partition: i32, partitions: i32) -> Option<(i32, i32)> {
    if partitions <= 0 || partitions > RING_SIZE || kafka_partition < 0 {
        return None;
    }
    if kafka_partition >= partitions {
        return None;
    }
    let width = RING_SIZE / partitions;
    let start = kafka_partition * width;
    let stop = if kafka_partition == partitions - 1 {
        RING_SIZE
    } else {
        start + width
    };
    Some((start, stop))
}

/// The assignment serving Kafka partition `kafka_partition`, out of a topic's full list of
/// assignments (as `LookupTopicBrokers` returns them, in any order). The partition count is the
/// length of the list.
pub fn find_assignment(
    assignments: &[BrokerPartitionAssignment],
    kafka_partition: i32,
) -> Option<&BrokerPartitionAssignment> {
    let (start, stop) = kafka_partition_range(kafka_partition, assignments.len() as i32)?;
    assignments.iter().find(|a| {
        a.partition
            .as_ref()
            .is_some_and(|p| p.range_start == start && p.range_stop == stop)
    })
}

/// The Kafka partition index a broker partition stands for within an `partitions`-partition
/// topic, or `None` when its range is not one of the topic's ranges.
pub fn kafka_partition_of(partition: &Partition, partitions: i32) -> Option<i32> {
    if partitions <= 0 || partitions > RING_SIZE {
        return None;
    }
    let width = RING_SIZE / partitions;
    if partition.range_start % width != 0 {
        return None;
    }
    let index = partition.range_start / width;
    (kafka_partition_range(index, partitions)
        == Some((partition.range_start, partition.range_stop)))
    .then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(start: i32, stop: i32) -> BrokerPartitionAssignment {
        BrokerPartitionAssignment {
            partition: Some(Partition {
                ring_size: RING_SIZE,
                range_start: start,
                range_stop: stop,
                unix_time_ns: 42,
            }),
            leader_broker: "b:1".into(),
            follower_broker: String::new(),
        }
    }

    #[test]
    fn ranges_tile_the_ring() {
        for n in [1, 2, 3, 4, 7, 11, 16, 100, 1000, 2520] {
            let mut next = 0;
            for i in 0..n {
                let (start, stop) = kafka_partition_range(i, n).unwrap();
                assert_eq!(start, next, "n={n} i={i}");
                assert!(stop > start);
                next = stop;
            }
            assert_eq!(next, RING_SIZE);
        }
    }

    #[test]
    fn three_partitions() {
        assert_eq!(kafka_partition_range(0, 3), Some((0, 840)));
        assert_eq!(kafka_partition_range(1, 3), Some((840, 1680)));
        assert_eq!(kafka_partition_range(2, 3), Some((1680, 2520)));
        assert_eq!(kafka_partition_range(3, 3), None);
        assert_eq!(kafka_partition_range(-1, 3), None);
        assert_eq!(kafka_partition_range(0, 0), None);
        assert_eq!(kafka_partition_range(0, 2521), None);
    }

    #[test]
    fn the_last_range_absorbs_the_remainder() {
        // 2520 / 11 = 229, 11 * 229 = 2519.
        assert_eq!(kafka_partition_range(9, 11), Some((2061, 2290)));
        assert_eq!(kafka_partition_range(10, 11), Some((2290, 2520)));
    }

    #[test]
    fn assignments_are_found_whatever_their_order() {
        let list = vec![
            assignment(1680, 2520),
            assignment(0, 840),
            assignment(840, 1680),
        ];
        for i in 0..3 {
            let a = find_assignment(&list, i).unwrap();
            let p = a.partition.as_ref().unwrap();
            assert_eq!(kafka_partition_of(p, 3), Some(i));
            assert_eq!(
                Some((p.range_start, p.range_stop)),
                kafka_partition_range(i, 3)
            );
        }
        assert!(find_assignment(&list, 3).is_none());
        // A list whose ranges do not match its own length finds nothing rather than a wrong one.
        assert!(find_assignment(&list[..2], 0).is_none());
    }

    #[test]
    fn foreign_ranges_have_no_kafka_index() {
        let p = assignment(10, 20).partition.unwrap();
        assert_eq!(kafka_partition_of(&p, 3), None);
        let p = assignment(0, 839).partition.unwrap();
        assert_eq!(kafka_partition_of(&p, 3), None);
    }
}
