//! CRC-32C (the record batch checksum) with the `crc32c` crate kelp uses: time per MiB and per
//! 16 KiB batch. Run: `cargo bench --bench crc32c`.

mod common;

fn main() {
    common::pin(0);
    println!("crc32c::crc32c (hardware-accelerated where the CPU has it)");
    for (size, iters) in [
        (1usize << 20, 20_000u64),
        (16 * 1024, 500_000),
        (100, 2_000_000),
    ] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        let name = format!("crc32c over {size} B");
        common::bench(&name, iters / 10, iters, Some(size as u64), || {
            crc32c::crc32c(&data)
        });
    }
}
