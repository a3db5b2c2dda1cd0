//! The SeaweedMQ gRPC core against an in-process **fake** broker (`tests/fake_broker`), for the
//! one fault a real broker shows only by chance: it stores records and then the stream breaks
//! before their acks arrive (the broker died, or the connection did). The real-broker tests
//! (`tests/seaweedmq_core.rs`, `scripts/test-seaweedmq.sh`) cover everything else.

mod fake_broker;

use bytes::Bytes;
use fake_broker::{DropStream, FakeBroker};
use futures::channel::oneshot;
use kelp::seaweedmq::{Record, SeaweedCore, SeaweedHandle, SeaweedOptions, SeaweedResult};
use std::time::{Duration, Instant};

/// Waits for a reply from the gRPC core, up to a generous deadline.
fn wait<T>(mut rx: oneshot::Receiver<SeaweedResult<T>>) -> SeaweedResult<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.try_recv() {
            Ok(Some(v)) => return v,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) => panic!("no answer from the gRPC core within 60 s"),
            Err(_) => panic!("the gRPC core dropped a reply"),
        }
    }
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("record-{i:05}"))
}

fn core(fake: &FakeBroker) -> SeaweedHandle {
    SeaweedCore::start(
        fake.addr.clone(),
        None,
        SeaweedOptions {
            publisher_name: "kelp-test".into(),
            ..SeaweedOptions::default()
        },
    )
    .expect("gRPC core")
}

/// Publishes records `range` in calls of `per_call`, all queued before any answer is awaited
/// (so many are in flight when a fault hits), and returns every record's offset.
fn publish(handle: &SeaweedHandle, range: std::ops::Range<usize>, per_call: usize) -> Vec<i64> {
    let replies: Vec<_> = range
        .collect::<Vec<_>>()
        .chunks(per_call)
        .map(|c| {
            let records = c
                .iter()
                .map(|&i| Record::new(Bytes::new(), value(i), 1 + i as i64))
                .collect();
            handle.publish_now("t", 0, records).expect("queued")
        })
        .collect();
    replies
        .into_iter()
        .flat_map(|r| wait(r).expect("records acked despite the fault"))
        .collect()
}

/// Publishes `n` records: the first alone (it opens the stream), the rest in calls of
/// `per_call`, pipelined on it.
fn publish_all(fake: &FakeBroker, n: usize, per_call: usize) -> Vec<i64> {
    let handle = core(fake);
    let mut offsets = publish(&handle, 0..1, 1);
    offsets.extend(publish(&handle, 1..n, per_call));
    handle.shutdown();
    offsets
}

fn check(fake: &FakeBroker, n: usize, offsets: &[i64]) {
    assert!(
        fake.streams_opened() >= 2,
        "the fault never happened ({} streams)",
        fake.streams_opened()
    );
    let expected: Vec<i64> = (0..n as i64).collect();
    assert_eq!(
        offsets, expected,
        "each record acked once, at dense offsets"
    );
    let log = fake.log(0);
    let values: Vec<Vec<u8>> = log.iter().map(|m| m.value.clone()).collect();
    let want: Vec<Vec<u8>> = (0..n).map(|i| value(i).to_vec()).collect();
    assert_eq!(
        values.len(),
        n,
        "the broker holds each record once (no resent duplicates, none missing)"
    );
    assert_eq!(values, want, "in the order they were published");
}

/// Plays a stream drop at `at` with the last `unacked` records stored but not acked (and the
/// `forget` acked before them lost), while `n` records go out in calls of `per_call`, and
/// checks each is stored once, at the offset it was acked at.
fn play(at: usize, unacked: usize, forget: usize, n: usize, per_call: usize) {
    let fake = FakeBroker::start(1, true, None);
    fake.drop_stream(DropStream {
        partition: 0,
        at,
        unacked,
        forget,
    });
    let offsets = publish_all(&fake, n, per_call);
    check(&fake, n, &offsets);
}

#[test]
fn records_stored_before_the_stream_broke_are_not_sent_again() {
    // Records 54..59 are stored but never acked; 60.. were sent and never read.
    play(60, 6, 0, 200, 10);
}

#[test]
fn a_stream_that_breaks_inside_one_call_keeps_that_calls_records_single() {
    // One call of 99 records: the break falls in its middle, with part of it stored.
    play(40, 15, 0, 100, 99);
}

#[test]
fn acked_records_a_restarted_broker_lost_are_published_again_at_their_offsets() {
    // The broker comes back with its log ending at 44: records 44..53 had been acked.
    play(60, 6, 10, 200, 10);
}

#[test]
fn lost_records_of_a_call_still_waiting_are_restored_in_order() {
    // The broker forgets everything: record 0 (its own call, answered) comes back from the
    // replay ring; the call of 99, 24 of them acked but not yet answered, is sent again whole.
    play(40, 15, 25, 100, 99);
}

#[test]
fn acked_records_lost_while_nothing_was_in_flight_are_published_again() {
    // The stream drops right after record 49's ack, with nothing in flight, and the broker
    // comes back without records 40..49: the publisher must find that out before it sends
    // anything else.
    let fake = FakeBroker::start(1, true, None);
    fake.drop_stream(DropStream {
        partition: 0,
        at: 50,
        unacked: 0,
        forget: 10,
    });
    let handle = core(&fake);
    let mut offsets = publish(&handle, 0..50, 10);
    // Wait until the publisher has seen the drop and opened a new stream (an attach opens one
    // when there is none).
    let deadline = Instant::now() + Duration::from_secs(60);
    while fake.streams_opened() < 2 {
        assert!(Instant::now() < deadline, "no second stream within 60 s");
        let attached = handle.publish_now("t", 0, Vec::new()).expect("queued");
        let _ = wait(attached);
        std::thread::sleep(Duration::from_millis(1));
    }
    offsets.extend(publish(&handle, 50..60, 10));
    handle.shutdown();
    check(&fake, 60, &offsets);
}
