//! The `Module` trait: forward, parameters by name, train/eval, device moves, loading.

use std::collections::{BTreeSet, HashMap};

use crate::autograd::no_grad;
use crate::base::{Error, Result};
use crate::tensor::prim;
use crate::tensor::{DType, Device, Tensor};

/// Tensors by parameter name, as PyTorch's `state_dict`.
pub type StateDict = HashMap<String, Tensor>;

/// A layer or a model: a forward function over parameters and child modules.
///
/// A module lists its own parameters ([`Self::own_parameters`]) and its children
/// ([`Self::children`]); everything else (names, loading, moving, train/eval) is built
/// on those, with PyTorch's order: own parameters first, then each child's, names
/// joined with `.`.
pub trait Module: Send + Sync {
    /// Applies the module.
    fn forward(&self, input: &Tensor) -> Result<Tensor>;

    /// [`Self::forward`] followed by ReLU. [`crate::nn::Sequential`] calls it for a child
    /// followed by a ReLU (see [`Self::is_relu`]), so that a module can fuse the two:
    /// [`crate::nn::Linear`] applies bias and ReLU as it writes its product. The default
    /// runs the forward and then ReLU; an override must give the same values and grads.
    fn forward_relu(&self, input: &Tensor) -> Result<Tensor> {
        self.forward(input)?.relu()
    }

    /// Whether this module is a plain ReLU, which [`crate::nn::Sequential`] may then fold
    /// into the child before it through [`Self::forward_relu`].
    fn is_relu(&self) -> bool {
        false
    }

    /// This module's own parameters (not its children's) with their local names, in
    /// registration order.
    fn own_parameters(&self) -> Vec<(&'static str, &Tensor)> {
        Vec::new()
    }

    /// Mutable access to [`Self::own_parameters`] (for device moves).
    fn own_parameters_mut(&mut self) -> Vec<(&'static str, &mut Tensor)> {
        Vec::new()
    }

    /// Child modules with their names, in order.
    fn children(&self) -> Vec<(String, &dyn Module)> {
        Vec::new()
    }

    /// Mutable access to [`Self::children`].
    fn children_mut(&mut self) -> Vec<(String, &mut dyn Module)> {
        Vec::new()
    }

    /// Whether this module is in training mode (its own flag; default true for modules
    /// whose behaviour does not depend on it).
    fn is_training(&self) -> bool {
        true
    }

    /// Sets this module's own training flag (not its children's); see [`Self::train`].
    fn set_training(&mut self, _training: bool) {}

    /// Training mode (`true`) or evaluation mode for this module and every descendant.
    fn train(&mut self, training: bool) {
        self.set_training(training);
        for (_, c) in self.children_mut() {
            c.train(training);
        }
    }

    /// Evaluation mode, `train(false)`.
    fn eval(&mut self) {
        self.train(false);
    }

    /// Every parameter with its full name (`linear_relu_stack.0.weight`), own first,
    /// then each child's.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .own_parameters()
            .into_iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        for (cname, c) in self.children() {
            for (n, t) in c.named_parameters() {
                out.push((format!("{cname}.{n}"), t));
            }
        }
        out
    }

    /// Every parameter, in [`Self::named_parameters`] order.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// Applies `f` to every parameter slot with its full name (own first, then children).
    fn for_each_parameter_mut(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
    ) -> Result<()> {
        for (n, t) in self.own_parameters_mut() {
            f(&format!("{prefix}{n}"), t)?;
        }
        for (cname, c) in self.children_mut() {
            c.for_each_parameter_mut(&format!("{prefix}{cname}."), f)?;
        }
        Ok(())
    }

    /// Moves every parameter (and its `.grad`) to `device`. Parameters on another device
    /// become new leaf tensors, so build optimizers after moving.
    fn to_device(&mut self, device: Device) -> Result<()> {
        self.for_each_parameter_mut("", &mut |_, t| {
            *t = moved(t, |x| x.to_device(device))?;
            Ok(())
        })
    }

    /// Converts every float parameter (and its `.grad`) to `dtype`, as new leaves.
    fn to_dtype(&mut self, dtype: DType) -> Result<()> {
        self.for_each_parameter_mut("", &mut |_, t| {
            *t = moved(t, |x| x.to_dtype(dtype))?;
            Ok(())
        })
    }

    /// Detached copies of every parameter by name (PyTorch's `state_dict`).
    fn state_dict(&self) -> StateDict {
        self.named_parameters()
            .into_iter()
            .map(|(n, t)| (n, t.detach()))
            .collect()
    }

    /// Copies values into the parameters by name, in place (the parameters keep their
    /// identity, so optimizers holding them see the new values). Values are converted to
    /// each parameter's dtype and device; shapes must match. With `strict`, a missing or
    /// unexpected name is an error.
    fn load_state_dict(&mut self, state: &StateDict, strict: bool) -> Result<()> {
        let _g = no_grad();
        let mut seen = BTreeSet::new();
        let mut missing = Vec::new();
        self.for_each_parameter_mut("", &mut |name, p| {
            let Some(v) = state.get(name) else {
                missing.push(name.to_string());
                return Ok(());
            };
            seen.insert(name.to_string());
            if v.shape() != p.shape() {
                return Err(Error::invalid(
                    "load_state_dict",
                    format!(
                        "{name}: shape {:?} in the state dict, {:?} in the model",
                        v.shape(),
                        p.shape()
                    ),
                ));
            }
            let v = v.to_device(p.device())?.to_dtype(p.dtype())?;
            prim::copy_(p, &v)
        })?;
        if strict {
            let unexpected: Vec<_> = state
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect();
            if !missing.is_empty() || !unexpected.is_empty() {
                return Err(Error::invalid(
                    "load_state_dict",
                    format!("missing keys {missing:?}, unexpected keys {unexpected:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// A parameter converted by `f` as a new leaf with the same `requires_grad`, its grad
/// converted too. The same tensor when `f` returns it unchanged.
fn moved(t: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let n = f(t)?;
    if n.same_tensor(t) {
        return Ok(n);
    }
    let n = n.detach();
    n.requires_grad_(t.requires_grad())?;
    if let Some(g) = t.grad() {
        n.set_grad(Some(f(&g)?.detach()))?;
    }
    Ok(n)
}

/// Makes `t` a parameter: a leaf (detached if it has history) that requires grad.
pub(crate) fn as_parameter(t: Tensor) -> Result<Tensor> {
    let p = if t.is_leaf() { t } else { t.detach() };
    if !p.dtype().is_float() {
        return Err(Error::invalid(
            "parameter",
            format!("parameters must be float tensors, got {}", p.dtype()),
        ));
    }
    p.requires_grad_(true)
}
