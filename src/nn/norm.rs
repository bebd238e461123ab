//! `LayerNorm`.

use crate::base::{Error, Result};
use crate::nn::module::{as_parameter, Module};
use crate::tensor::{DType, Device, Tensor};

/// Layer normalisation over the trailing `normalized_shape` dims, with an elementwise
/// affine transform (weight initialised to ones, bias to zeros) unless disabled.
pub struct LayerNorm {
    /// The trailing dims normalised over.
    pub normalized_shape: Vec<usize>,
    /// Added to the variance.
    pub eps: f64,
    /// Elementwise scale, shape `normalized_shape`.
    pub weight: Option<Tensor>,
    /// Elementwise shift, shape `normalized_shape`.
    pub bias: Option<Tensor>,
}

impl LayerNorm {
    /// `LayerNorm(normalized_shape, eps, elementwise_affine)` with PyTorch's init.
    pub fn new(
        normalized_shape: &[usize],
        eps: f64,
        elementwise_affine: bool,
        dtype: DType,
        device: Device,
    ) -> Result<LayerNorm> {
        if normalized_shape.is_empty() {
            return Err(Error::invalid(
                "LayerNorm",
                "normalized_shape must not be empty",
            ));
        }
        let (weight, bias) = if elementwise_affine {
            (
                Some(as_parameter(Tensor::ones(
                    normalized_shape,
                    dtype,
                    device,
                )?)?),
                Some(as_parameter(Tensor::zeros(
                    normalized_shape,
                    dtype,
                    device,
                )?)?),
            )
        } else {
            (None, None)
        };
        Ok(LayerNorm {
            normalized_shape: normalized_shape.to_vec(),
            eps,
            weight,
            bias,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        crate::ops::layer_norm(
            input,
            &self.normalized_shape,
            self.weight.as_ref(),
            self.bias.as_ref(),
            self.eps,
        )
    }

    fn own_parameters(&self) -> Vec<(&'static str, &Tensor)> {
        let mut v: Vec<(&'static str, &Tensor)> =
            self.weight.iter().map(|w| ("weight", w)).collect();
        v.extend(self.bias.iter().map(|b| ("bias", b)));
        v
    }

    fn own_parameters_mut(&mut self) -> Vec<(&'static str, &mut Tensor)> {
        let mut v: Vec<(&'static str, &mut Tensor)> =
            self.weight.iter_mut().map(|w| ("weight", w)).collect();
        v.extend(self.bias.iter_mut().map(|b| ("bias", b)));
        v
    }
}
