//! Reading and writing tensors in files: safetensors (what PyTorch's
//! `safetensors.torch.save_file` writes), and output files written atomically.

mod output;
mod safetensors;

pub use self::output::{check_distinct, check_output, write_atomic, write_target};
pub use self::safetensors::{decode, encode, load, save, TensorFile};
