//! Reading and writing tensors in files: safetensors (what PyTorch's
//! `safetensors.torch.save_file` writes), written atomically.

mod safetensors;

pub use self::safetensors::{decode, encode, load, save, write_atomic, TensorFile};
