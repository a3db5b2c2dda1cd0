//! Probe of the shard mesh: round trips between two pinned executors with idle gaps between
//! them, so that the target shard parks and must be woken. Prints percentiles in microseconds.
//! A lost wake-up shows as a stall (or, before the doorbell mesh, a hang).
//!
//!     cargo run --release --example mesh_probe -- GAP_MS COUNT
use clap::Parser;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use kelp::config::Config;
use kelp::shard::{Mesh, Op, Shard};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let gap_ms: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let config = Arc::new(Config::parse_from(["kelp"]));
    let (mesh, ends) = Mesh::new(2).unwrap();
    let metrics = kelp::metrics::Metrics::new(2).leak();
    let bells = MeshBuilder::<(), Full>::full(2, 1);
    let mut handles = Vec::new();
    for (id, end) in ends.into_iter().enumerate() {
        let config = config.clone();
        let mesh = mesh.clone();
        let bells = bells.clone();
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(id))
            .spin_before_park(config.spin())
            .preempt_timer(Duration::from_micros(config.preempt_us))
            .io_memory(256 * 1024)
            .spawn(move || async move {
                let shard = Shard::new(
                    id,
                    config,
                    mesh,
                    metrics.shard(id),
                    None,
                    Default::default(),
                );
                let rings = shard.join_doorbells(bells).await;
                let inbox = glommio::spawn_local(shard.clone().run_inbox(end, rings));
                if id == 0 {
                    let mut lat = Vec::new();
                    for _ in 0..n {
                        glommio::timer::sleep(Duration::from_millis(gap_ms)).await;
                        let t = Instant::now();
                        shard.call(1, Op::Partitions(Vec::new())).await;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    lat.sort();
                    println!(
                        "gap {gap_ms} ms: p50 {} us, p90 {} us, p99 {} us, max {} us",
                        lat[n / 2],
                        lat[n * 9 / 10],
                        lat[n * 99 / 100],
                        lat[n - 1]
                    );
                    shard.mesh.shutdown_all();
                }
                inbox.await;
            })
            .unwrap();
        handles.push(handle);
    }
    for h in handles {
        let _ = h.join();
    }
}
