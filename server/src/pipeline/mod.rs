//! The HEIE pipeline: image input and tiling, the chain-of-thought program, and the zero-shot outputs.

pub mod boxes;
pub mod explanation;
pub mod heatmap;
pub mod image_input;
pub mod rating;
pub mod tiling;
pub mod utf8_stream;
