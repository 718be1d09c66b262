//! The HEIE wire contract: Rust types and tonic service code generated from `proto/heie/v1/*.proto`.
//!
//! - [`v1`] holds the messages and enums, plus [`v1::evaluator_server`] (the trait a server implements)
//!   and [`v1::evaluator_client`] (a typed client).
//! - [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set of every file here, for `tonic-reflection`.
//!
//! Transport types stop at the service edge: the server converts them into its own validated types.

/// Package `heie.v1`. Grows only compatibly; a breaking change becomes a new `v2` module.
pub mod v1 {
    // Generated code: its naming and shapes follow the .proto, not this workspace's lints.
    #![allow(
        clippy::all,
        missing_docs,
        rustdoc::invalid_html_tags,
        rustdoc::bare_urls
    )]
    tonic::include_proto!("heie.v1");
}

/// Encoded `google.protobuf.FileDescriptorSet` of the heie protos (with source info), to register with
/// `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/heie_descriptor.bin"));

/// Full name of the gRPC service, as used in paths, health checks and reflection.
pub const EVALUATOR_SERVICE_NAME: &str = "heie.v1.Evaluator";
