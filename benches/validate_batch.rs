//! Validating one record batch with `kelp::protocol::batch::validate_one` (CRC-32C, header
//! checks, walking every record): 1 record of 100 B, 16 records of 1 KiB (a 16 KiB batch), 160
//! records of 100 B. Run: `cargo bench --bench validate_batch`.

mod common;

fn main() {
    common::pin(0);
    println!("kelp::protocol::batch::validate_one, uncompressed batches");
    for (records, value_bytes, iters) in [
        (1usize, 100usize, 2_000_000u64),
        (16, 1024, 300_000),
        (160, 100, 300_000),
    ] {
        let b = common::batch(records, value_bytes);
        let name = format!("{records} x {value_bytes} B records, {} B batch", b.len());
        common::bench(&name, iters / 10, iters, Some(b.len() as u64), || {
            kelp::protocol::batch::validate_one(&b, 1 << 30).expect("valid")
        });
    }
}
