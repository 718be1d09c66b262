//! HEIE server library: the llama.cpp engine, the chain-of-thought pipeline and the CLI commands.
pub mod engine;
pub mod pipeline;
pub mod cli;
pub mod service;
pub(crate) mod http;
pub mod data;
pub mod training;
