//! The lower-level API: multi-tensor zero and fused optimizer steps over raw buffers.
