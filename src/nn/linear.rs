//! `Linear`: `y = x @ W^T + b`.

use crate::base::{Error, Result};
use crate::nn::module::{as_parameter, Module};
use crate::tensor::{DType, Device, Rng, Tensor};

/// A fully connected layer with PyTorch's layout: `weight [out_features, in_features]`,
/// `bias [out_features]`, `y = x @ weight^T + bias`.
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// PyTorch's default initialisation (`kaiming_uniform_(a=sqrt(5))`): weight and bias
    /// uniform in `[-1/sqrt(in_features), 1/sqrt(in_features))`, weight drawn first, in
    /// row-major order, from `rng`.
    pub fn new(
        in_features: usize,
        out_features: usize,
        bias: bool,
        rng: &mut Rng,
        dtype: DType,
        device: Device,
    ) -> Result<Linear> {
        if in_features == 0 {
            return Err(Error::invalid("Linear", "in_features must be positive"));
        }
        let bound = 1.0 / (in_features as f64).sqrt();
        let w = Tensor::rand_with(
            &[out_features, in_features],
            rng,
            -bound,
            bound,
            dtype,
            device,
        )?;
        let b = bias
            .then(|| Tensor::rand_with(&[out_features], rng, -bound, bound, dtype, device))
            .transpose()?;
        Linear::from_tensors(w, b)
    }

    /// A layer over existing tensors (made leaves that require grad): `weight [out, in]`,
    /// `bias [out]`.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        if weight.rank() != 2 {
            return Err(Error::invalid(
                "Linear",
                format!("weight must be 2-D, got {:?}", weight.shape()),
            ));
        }
        if let Some(b) = &bias {
            if b.shape() != [weight.shape()[0]] {
                return Err(Error::ShapeMismatch {
                    op: "Linear",
                    lhs: weight.shape().to_vec(),
                    rhs: b.shape().to_vec(),
                });
            }
        }
        Ok(Linear {
            weight: as_parameter(weight)?,
            bias: bias.map(as_parameter).transpose()?,
        })
    }

    /// Number of input features.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Number of output features.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl Module for Linear {
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        crate::ops::linear(input, &self.weight, self.bias.as_ref())
    }

    /// One op: [`crate::ops::linear_relu`].
    fn forward_relu(&self, input: &Tensor) -> Result<Tensor> {
        crate::ops::linear_relu(input, &self.weight, self.bias.as_ref())
    }

    fn own_parameters(&self) -> Vec<(&'static str, &Tensor)> {
        let mut v = vec![("weight", &self.weight)];
        v.extend(self.bias.as_ref().map(|b| ("bias", b)));
        v
    }

    fn own_parameters_mut(&mut self) -> Vec<(&'static str, &mut Tensor)> {
        let mut v = vec![("weight", &mut self.weight)];
        v.extend(self.bias.as_mut().map(|b| ("bias", b)));
        v
    }
}
