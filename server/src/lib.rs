//! HEIE server library: the llama.cpp engine, the chain-of-thought pipeline, the serving core with its
//! gRPC and HTTP edges, the server that composes them, and the CLI commands.
pub mod engine;
pub mod pipeline;
pub mod calibration;
pub mod cli;
pub mod serving;
pub mod grpc;
pub(crate) mod http;
pub mod server;
pub mod tls;
pub mod data;
pub mod training;
