//! A cross-thread hop and back over crossbeam-channel between two pinned busy-polling threads:
//! the shape of kelp's shard mesh (a message carrying `Bytes` and a reply channel to the owning
//! shard, the answer back). Spinning on `try_recv` on both sides, as the shards do while busy.
//! Run: `cargo bench --bench mesh_hop` (pins to cores 0 and 1).

mod common;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use std::time::Instant;

/// What a shard sends its peer: a payload and where to answer.
struct Op {
    payload: Bytes,
    reply: Sender<u64>,
}

fn spin_recv<T>(rx: &Receiver<T>) -> Option<T> {
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(TryRecvError::Empty) => std::hint::spin_loop(),
            Err(TryRecvError::Disconnected) => return None,
        }
    }
}

fn main() {
    const WARMUP: u64 = 100_000;
    const ITERS: u64 = 1_000_000;
    let cores = core_affinity::get_core_ids().map(|c| c.len()).unwrap_or(1);
    let (client_core, owner_core) = (0, if cores > 1 { 1 } else { 0 });
    println!(
        "round trip over crossbeam-channel (bounded 4096), threads pinned to cores {client_core} and {owner_core}, both spinning"
    );
    if client_core == owner_core {
        println!("  (only one core: both threads share it, so this measures time slicing)");
    }
    let (tx, rx) = bounded::<Op>(4096);
    let owner = std::thread::spawn(move || {
        common::pin(owner_core);
        while let Some(op) = spin_recv(&rx) {
            let _ = op.reply.send(op.payload.len() as u64);
        }
    });
    common::pin(client_core);
    // The reply channel is made once and reused, as a per-connection oneshot pool would.
    let (reply_tx, reply_rx) = bounded::<u64>(1);
    let payload = Bytes::from(vec![7u8; 128]);
    let mut h = common::hist();
    let all = Instant::now();
    for i in 0..WARMUP + ITERS {
        let t = Instant::now();
        tx.send(Op {
            payload: payload.clone(),
            reply: reply_tx.clone(),
        })
        .expect("owner alive");
        spin_recv(&reply_rx).expect("reply");
        if i >= WARMUP {
            h.saturating_record(t.elapsed().as_nanos().max(1) as u64);
        }
    }
    let secs = all.elapsed().as_secs_f64();
    common::print(
        "hop + reply (Bytes payload, Sender in message)",
        &h,
        (WARMUP + ITERS) as f64 / secs,
        None,
    );
    drop(tx);
    owner.join().unwrap();
}
