//! `Embedding`.

use crate::base::{Error, Result};
use crate::nn::module::{as_parameter, Module};
use crate::tensor::{DType, Device, Rng, Tensor};

/// A lookup table `weight [num_embeddings, embedding_dim]`; the input holds i64 indices.
pub struct Embedding {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Tensor,
}

impl Embedding {
    /// PyTorch's init: weight drawn from N(0, 1), row-major, from `rng`.
    pub fn new(
        num_embeddings: usize,
        embedding_dim: usize,
        rng: &mut Rng,
        dtype: DType,
        device: Device,
    ) -> Result<Embedding> {
        let v: Vec<f64> = (0..num_embeddings * embedding_dim)
            .map(|_| rng.normal())
            .collect();
        Embedding::from_weight(Tensor::from_f64s(
            &v,
            &[num_embeddings, embedding_dim],
            dtype,
            device,
        )?)
    }

    /// A table over an existing `[num_embeddings, embedding_dim]` tensor.
    pub fn from_weight(weight: Tensor) -> Result<Embedding> {
        if weight.rank() != 2 {
            return Err(Error::invalid(
                "Embedding",
                format!("weight must be 2-D, got {:?}", weight.shape()),
            ));
        }
        Ok(Embedding {
            weight: as_parameter(weight)?,
        })
    }
}

impl Module for Embedding {
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        crate::ops::embedding(input, &self.weight)
    }

    fn own_parameters(&self) -> Vec<(&'static str, &Tensor)> {
        vec![("weight", &self.weight)]
    }

    fn own_parameters_mut(&mut self) -> Vec<(&'static str, &mut Tensor)> {
        vec![("weight", &mut self.weight)]
    }
}
