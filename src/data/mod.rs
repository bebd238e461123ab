//! Datasets and the data loader.
//!
//! - [`Dataset`]: a collection of samples that collates any subset into a [`HostBatch`].
//! - [`DataLoader`]: PyTorch-style batching with a seeded shuffle, `drop_last`, and the
//!   next batches collated on a background thread while the current one trains.
//! - [`idx`]: the IDX file format (raw or gzip) of MNIST-style data.
//! - [`MnistDataset`]: MNIST / Fashion-MNIST images and labels, `ToTensor` semantics.

mod dataset;
pub mod idx;
mod loader;
mod mnist;

pub use dataset::{check_indices, Batch, Dataset, HostBatch};
pub use loader::{shard_range, Batches, DataLoader};
pub use mnist::{default_data_dir, MnistDataset, Split, FASHION_MNIST_CLASSES, MNIST_CLASSES};
