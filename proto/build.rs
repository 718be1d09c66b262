//! Generates the heie.v1 Rust code at build time without a system `protoc`: `protox` (a protobuf compiler
//! written in Rust) parses the .proto files into a FileDescriptorSet, which tonic's code generator
//! consumes directly. The same encoded set is written to OUT_DIR for server reflection, and feeds
//! `pbjson-build`, which writes the proto3 JSON (serde) impls.

use std::path::PathBuf;

use prost::Message;

/// The .proto files of the contract, relative to this crate's root (which is also the include root, so
/// imports read `heie/v1/...`).
const PROTOS: &[&str] = &["heie/v1/evaluator.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    // `compile` keeps source info, so the .proto comments become doc comments on the generated items.
    let fds = protox::compile(&files, [&root])?;

    let descriptor = fds.encode_to_vec();
    std::fs::write(out_dir.join("heie_descriptor.bin"), &descriptor)?;

    // The proto3 JSON mapping (serde impls) of every message, from the same descriptors: the HTTP edge
    // reads and writes it. Default values are written too (`"index": 0`), so clients need not know
    // proto3's omission rule; unknown fields are refused.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor)?
        .out_dir(&out_dir)
        .emit_fields()
        .build(&[".heie.v1"])?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
