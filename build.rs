//! Generates the SeaweedMQ gRPC client (src/seaweedmq) from `proto/*.proto` at build time.
//!
//! No system `protoc` is needed: `protox` (a protobuf compiler in Rust) parses the files into a
//! `FileDescriptorSet`, and `tonic-prost-build` turns that into messages and a client. kelp uses only
//! the client; a server-side copy is generated for the benchmarks' in-process fake broker.

use std::path::Path;

const PROTO_DIR: &str = "proto";
const PROTO_FILES: &[&str] = &["mq_schema.proto", "mq_broker.proto", "filer.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTO_FILES {
        println!(
            "cargo:rerun-if-changed={}",
            Path::new(PROTO_DIR).join(file).display()
        );
    }
    println!("cargo:rerun-if-changed=build.rs");

    let descriptors = protox::compile(PROTO_FILES, [PROTO_DIR])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        // Keys and values stay `Bytes` end to end: a record travels from the Kafka request
        // buffer into the gRPC frame without a copy into a `Vec`.
        .bytes(".")
        .compile_fds(descriptors.clone())?;

    // A second copy with the server side only, for the in-process fake broker of
    // `benches/seaweedmq_publish.rs` (which includes it from OUT_DIR/fake_broker). kelp itself
    // never compiles it.
    let fake = Path::new(&std::env::var("OUT_DIR")?).join("fake_broker");
    std::fs::create_dir_all(&fake)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .generate_default_stubs(true)
        .out_dir(&fake)
        .compile_fds(descriptors)?;
    Ok(())
}
