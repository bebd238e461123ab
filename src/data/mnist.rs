//! MNIST-style image classification data (Fashion-MNIST ships with the repository).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::base::{Error, Result};
use crate::data::idx::read_idx;
use crate::data::{check_indices, Dataset, HostBatch};
use crate::tensor::CpuStorage;

/// The ten Fashion-MNIST classes, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The number of classes of MNIST-style data (labels `0..10`).
pub const MNIST_CLASSES: usize = 10;

/// Which half of the data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The 60,000 training samples (`train-*`).
    Train,
    /// The 10,000 test samples (`t10k-*`).
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// The directory of the bundled Fashion-MNIST files: `data/fashion-mnist` under the
/// current directory when it exists there, else under the crate's source directory.
pub fn default_data_dir() -> PathBuf {
    let local = PathBuf::from("data/fashion-mnist");
    if local.is_dir() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist")
    }
}

/// Grey-scale images with one class label each, as in MNIST and Fashion-MNIST.
///
/// Collation does what torchvision's `ToTensor` does: pixels become f32 in [0, 1]
/// (`byte / 255`), inputs have shape `[B, 1, rows, cols]`; labels are I64 of shape `[B]`.
#[derive(Clone, Debug)]
pub struct MnistDataset {
    images: Vec<u8>,
    labels: Vec<u8>,
    rows: usize,
    cols: usize,
}

impl MnistDataset {
    /// Reads `{train,t10k}-images-idx3-ubyte` and `-labels-idx1-ubyte` from `dir`, each
    /// gzip-compressed (`.gz`) or raw. A label outside `0..MNIST_CLASSES` is an error
    /// naming the file and the sample.
    pub fn load(dir: &Path, split: Split) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Format {
                path: dir.display().to_string(),
                msg: "data directory not found".into(),
            });
        }
        let images_path = find_file(dir, &format!("{}-images-idx3-ubyte", split.prefix()))?;
        let labels_path = find_file(dir, &format!("{}-labels-idx1-ubyte", split.prefix()))?;
        let images = read_idx(&images_path, Some(3))?;
        let labels = read_idx(&labels_path, Some(1))?;
        if images.dims[0] != labels.dims[0] {
            return Err(Error::Format {
                path: labels_path.display().to_string(),
                msg: format!(
                    "{} labels for {} images in {}",
                    labels.dims[0],
                    images.dims[0],
                    images_path.display()
                ),
            });
        }
        if let Some(i) = labels
            .data
            .iter()
            .position(|&l| l as usize >= MNIST_CLASSES)
        {
            return Err(Error::Format {
                path: labels_path.display().to_string(),
                msg: format!(
                    "label {} of sample {i} is not a class (expected 0..{MNIST_CLASSES})",
                    labels.data[i]
                ),
            });
        }
        MnistDataset::from_parts(images.data, labels.data, images.dims[1], images.dims[2])
    }

    /// A data set from raw pixels (`n * rows * cols` bytes, row-major) and `n` labels.
    /// The labels are taken as they are ([`Self::load`] checks a file's against
    /// [`MNIST_CLASSES`]).
    pub fn from_parts(images: Vec<u8>, labels: Vec<u8>, rows: usize, cols: usize) -> Result<Self> {
        let bytes = rows
            .checked_mul(cols)
            .and_then(|px| px.checked_mul(labels.len()));
        if rows == 0 || cols == 0 || bytes != Some(images.len()) {
            return Err(Error::invalid(
                "MnistDataset",
                format!(
                    "{} pixel bytes do not make {} images of {rows}x{cols}",
                    images.len(),
                    labels.len()
                ),
            ));
        }
        Ok(MnistDataset {
            images,
            labels,
            rows,
            cols,
        })
    }

    /// The first `n` samples (all of them when `n` is larger).
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.labels.len());
        MnistDataset {
            images: self.images[..n * self.rows * self.cols].to_vec(),
            labels: self.labels[..n].to_vec(),
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// Image height and width.
    pub fn image_size(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The raw labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The raw pixels of image `i`, or None past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let px = self.rows * self.cols;
        self.images.get(i * px..(i + 1) * px)
    }
}

/// `byte / 255` in f32, for every byte value (what `ToTensor` computes).
fn to_unit_table() -> [f32; 256] {
    std::array::from_fn(|b| b as f32 / 255.0)
}

/// Samples per rayon task when collating (small batches stay on one thread).
const COLLATE_GRAIN: usize = 32;

impl Dataset for MnistDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn input_shape(&self) -> Vec<usize> {
        vec![1, self.rows, self.cols]
    }

    fn collate(&self, indices: &[usize]) -> Result<HostBatch> {
        check_indices("MnistDataset::collate", indices, self.len())?;
        let px = self.rows * self.cols;
        let table = to_unit_table();
        let mut inputs = vec![0f32; indices.len() * px];
        inputs
            .par_chunks_mut(px)
            .with_min_len(COLLATE_GRAIN)
            .zip(indices.par_iter())
            .for_each(|(dst, &i)| {
                for (d, &s) in dst.iter_mut().zip(&self.images[i * px..(i + 1) * px]) {
                    *d = table[s as usize];
                }
            });
        let targets: Vec<i64> = indices.iter().map(|&i| self.labels[i] as i64).collect();
        Ok(HostBatch {
            inputs: CpuStorage::F32(inputs),
            input_shape: vec![indices.len(), 1, self.rows, self.cols],
            targets: CpuStorage::I64(targets),
            target_shape: vec![indices.len()],
        })
    }
}

/// `dir/stem.gz` when it exists, else `dir/stem`.
fn find_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(stem);
    if raw.is_file() {
        return Ok(raw);
    }
    Err(Error::Format {
        path: dir.display().to_string(),
        msg: format!("missing {stem}.gz (or {stem})"),
    })
}
