//! The HEIE pipeline: image input and tiling, the chain-of-thought program, and the zero-shot outputs.
