//! Optimizer state in PyTorch's `state_dict` layout, and the per-parameter state view.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::base::{Error, Result};
use crate::optim::core::{read_step, OptimCore, ParamState};
use crate::tensor::{DType, Tensor};

/// The state of one parameter as read by [`crate::optim::Optimizer::param_state`].
#[derive(Clone, Debug)]
pub struct StateView {
    /// Number of updates (Adam, AdamW); None for SGD.
    pub step: Option<f64>,
    /// Named buffers: `momentum_buffer`, or `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`.
    pub buffers: Vec<(String, Tensor)>,
}

impl StateView {
    /// The buffer called `name`, if present.
    pub fn buffer(&self, name: &str) -> Option<&Tensor> {
        self.buffers.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// The serializable part of one parameter's state: its step and the names of its
/// buffers (the tensors are in [`StateDict::tensors`] under `state.<index>.<name>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ParamStateDict {
    /// Number of updates (Adam, AdamW).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    /// Buffer names.
    pub buffers: Vec<String>,
}

/// One entry of `param_groups`: the indices of its params and its hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupDict {
    /// Indices of the group's params in the optimizer's order.
    pub params: Vec<usize>,
    /// Every hyperparameter (`lr`, `momentum`, `betas`, ...).
    #[serde(flatten)]
    pub hyper: Map<String, Value>,
}

/// PyTorch's `{"state": {index: {...}}, "param_groups": [...]}` without the tensors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateDictMeta {
    /// State per parameter index (parameters without state are absent).
    pub state: BTreeMap<usize, ParamStateDict>,
    /// The groups.
    pub param_groups: Vec<GroupDict>,
}

/// An optimizer's state: the serializable layout plus the buffers.
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    /// The layout and scalars.
    pub meta: StateDictMeta,
    /// Buffers keyed `state.<index>.<name>`.
    pub tensors: BTreeMap<String, Tensor>,
}

/// The key of a state buffer in [`StateDict::tensors`].
pub fn tensor_key(index: usize, name: &str) -> String {
    format!("state.{index}.{name}")
}

/// The key of a parameter's f32 master weights in [`StateDict::tensors`] (present only
/// for f16 parameters of an optimizer with master weights; not a PyTorch field).
pub fn master_key(index: usize) -> String {
    format!("master.{index}")
}

impl OptimCore {
    /// See [`crate::optim::Optimizer::param_state`].
    pub fn param_state(&self, index: usize) -> Result<Option<StateView>> {
        let st = self.state.get(index).ok_or_else(|| {
            Error::Optim(format!("no param {index} ({} params)", self.params.len()))
        })?;
        let Some(st) = st else { return Ok(None) };
        let step = match &st.step {
            Some(s) => Some(f64::from(read_step(s)?)),
            None => None,
        };
        Ok(Some(StateView {
            step,
            buffers: st
                .buffers
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect(),
        }))
    }

    /// See [`crate::optim::Optimizer::state_dict`].
    pub fn state_dict(&self) -> Result<StateDict> {
        let mut sd = StateDict::default();
        for i in 0..self.params.len() {
            if let Some(v) = self.param_state(i)? {
                let names = v.buffers.iter().map(|(n, _)| n.clone()).collect();
                for (n, t) in v.buffers {
                    sd.tensors.insert(
                        tensor_key(i, &n),
                        t.detach().to_device(crate::tensor::Device::Cpu)?,
                    );
                }
                sd.meta.state.insert(
                    i,
                    ParamStateDict {
                        step: v.step,
                        buffers: names,
                    },
                );
            }
        }
        for (i, m) in self.masters.iter().enumerate() {
            if let Some(m) = m {
                sd.tensors.insert(
                    master_key(i),
                    m.detach().to_device(crate::tensor::Device::Cpu)?,
                );
            }
        }
        for g in &self.groups {
            sd.meta.param_groups.push(GroupDict {
                params: g.indices.clone(),
                hyper: g.hyper.to_json(),
            });
        }
        Ok(sd)
    }

    /// See [`crate::optim::Optimizer::load_state_dict`]. Everything is checked and built
    /// first; the optimizer changes only when all of it matches.
    pub fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let m = &sd.meta;
        if m.param_groups.len() != self.groups.len() {
            return Err(Error::Optim(format!(
                "loaded state dict has {} parameter groups, the optimizer {}",
                m.param_groups.len(),
                self.groups.len()
            )));
        }
        let mut hypers = Vec::new();
        for (gi, (g, lg)) in self.groups.iter().zip(&m.param_groups).enumerate() {
            if lg.params != g.indices {
                return Err(Error::Optim(format!(
                    "loaded state dict's group {gi} holds params {:?}, the optimizer's {:?}",
                    lg.params, g.indices
                )));
            }
            hypers.push(g.hyper.from_json(&lg.hyper)?);
        }
        let mut new_state: Vec<Option<ParamState>> = vec![None; self.params.len()];
        for (&i, ps) in &m.state {
            let Some(gi) = self.groups.iter().position(|g| g.indices.contains(&i)) else {
                return Err(Error::Optim(format!(
                    "loaded state dict has state for unknown param {i}"
                )));
            };
            let h = hypers[gi];
            let p = &self.params[i];
            let want = h.buffer_names();
            if ps.buffers.len() != want.len() || ps.buffers.iter().zip(want).any(|(a, b)| a != b) {
                return Err(Error::Optim(format!(
                    "param {i}: state buffers {:?}, expected {want:?}",
                    ps.buffers
                )));
            }
            if ps.step.is_some() != h.has_step() {
                return Err(Error::Optim(format!(
                    "param {i}: a step count is {}expected",
                    if h.has_step() { "" } else { "not " }
                )));
            }
            let mut buffers = Vec::new();
            for &name in want {
                let key = tensor_key(i, name);
                let t = sd
                    .tensors
                    .get(&key)
                    .ok_or_else(|| Error::Optim(format!("missing tensor {key}")))?;
                if t.shape() != p.shape() {
                    return Err(Error::ShapeMismatch {
                        op: "load_state_dict",
                        lhs: p.shape().to_vec(),
                        rhs: t.shape().to_vec(),
                    });
                }
                if !t.dtype().is_float() {
                    return Err(Error::Optim(format!(
                        "tensor {key} has dtype {}, not a float type",
                        t.dtype()
                    )));
                }
                let v = t.to_vec_f64()?;
                let dtype = self.state_dtype(i);
                buffers.push((name, Tensor::from_f64s(&v, p.shape(), dtype, p.device())?));
            }
            let step = match ps.step {
                Some(s) => {
                    check_step(i, s)?;
                    Some(Tensor::from_f64s(&[s], &[], DType::F32, p.device())?)
                }
                None => None,
            };
            new_state[i] = Some(ParamState {
                step,
                momentum_started: !buffers.is_empty(),
                buffers,
            });
        }
        self.check_tensor_keys(sd)?;
        let masters = self.loaded_masters(sd)?;
        for (gi, h) in hypers.into_iter().enumerate() {
            self.groups[gi].hyper = h;
            // Checked by validate above: set_lr only writes the (device) copies.
            self.set_lr(gi, h.lr())?;
        }
        self.state = new_state;
        if let Some(m) = masters {
            self.masters = m;
        }
        self.invalidate_plans();
        Ok(())
    }
}

/// The largest step count a state dict may hold: steps are counted in f32 on the device
/// (as PyTorch's capturable optimizers do), exact up to 2^24.
pub const MAX_STEP: f64 = (1u64 << 24) as f64;

/// A loaded step count must be a whole number of updates in `0..=MAX_STEP`.
fn check_step(index: usize, step: f64) -> Result<()> {
    if !(0.0..=MAX_STEP).contains(&step) || step.fract() != 0.0 {
        return Err(Error::Optim(format!(
            "param {index}: step {step} is not a count of updates (a whole number in 0..={MAX_STEP})"
        )));
    }
    Ok(())
}

impl OptimCore {
    /// Refuses a state dict carrying a tensor that no parameter's state names (a
    /// `state.<i>.<name>` not listed for param `i`, or master weights of no f16 param).
    fn check_tensor_keys(&self, sd: &StateDict) -> Result<()> {
        let expected: std::collections::HashSet<String> = sd
            .meta
            .state
            .iter()
            .flat_map(|(&i, ps)| ps.buffers.iter().map(move |name| tensor_key(i, name)))
            .chain((0..self.params.len()).map(master_key))
            .collect();
        for key in sd.tensors.keys() {
            if !expected.contains(key) {
                return Err(Error::Optim(format!(
                    "unexpected tensor {key}: no parameter's state lists it"
                )));
            }
        }
        Ok(())
    }

    /// The master weights a state dict carries, checked against the parameters: None
    /// when it has none or this optimizer keeps none (they are then made from the
    /// parameters at the next step).
    fn loaded_masters(&self, sd: &StateDict) -> Result<Option<Vec<Option<Tensor>>>> {
        if !self.master_weights || !sd.tensors.keys().any(|k| k.starts_with("master.")) {
            return Ok(None);
        }
        let mut out = vec![None; self.params.len()];
        for (i, p) in self.params.iter().enumerate() {
            let Some(t) = sd.tensors.get(&master_key(i)) else {
                continue;
            };
            if !p.dtype().is_half() || t.shape() != p.shape() || !t.dtype().is_float() {
                return Err(Error::Optim(format!(
                    "master weights {} {:?} for param {i} ({} {:?})",
                    t.dtype(),
                    t.shape(),
                    p.dtype(),
                    p.shape()
                )));
            }
            out[i] = Some(t.to_dtype(DType::F32)?.to_device(p.device())?);
        }
        Ok(Some(out))
    }
}
