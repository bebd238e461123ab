//! Training checkpoints: model parameters, optimizer state, epoch, RNG state and the
//! training history, in one safetensors file with JSON metadata.
//!
//! Layout: the model's parameters under their PyTorch names (`linear_relu_stack.0.weight`,
//! ...), so that PyTorch reads the model back with `safetensors.torch.load_file`; the
//! optimizer's buffers under `optimizer.state.<index>.<name>`; and the `__metadata__` key
//! `gradstep` holding a JSON [`CheckpointMeta`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::base::{Error, Result};
use crate::io::{self, TensorFile};
use crate::nn::Module;
use crate::optim::{GradScaler, Optimizer, ScalerState, StateDict, StateDictMeta};
use crate::tensor::Tensor;

/// The `__metadata__` key of the JSON description.
pub const META_KEY: &str = "gradstep";
/// The `format` field of [`CheckpointMeta`].
pub const FORMAT: &str = "gradstep-checkpoint/1";
/// The prefix of optimizer tensors.
const OPTIM_PREFIX: &str = "optimizer.";

/// What happened during training, kept across resumes (for plots).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// `(step, loss)` at every logged step; `step` counts batches from the start of the
    /// first epoch.
    pub losses: Vec<(u64, f64)>,
    /// Test accuracy (a fraction) after each epoch.
    pub accuracy: Vec<f64>,
    /// Average test loss after each epoch.
    pub test_loss: Vec<f64>,
}

/// The JSON part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Always `gradstep-checkpoint/1`.
    pub format: String,
    /// Completed epochs.
    pub epoch: usize,
    /// The data loader's shuffling generator after the last completed epoch.
    pub rng_state: Option<[u64; 4]>,
    /// The optimizer's name (`sgd`, `adam`, `adamw`).
    pub optimizer: String,
    /// The optimizer's state layout and hyperparameters.
    pub optimizer_state: StateDictMeta,
    /// Losses and accuracies so far.
    pub history: History,
    /// The mixed-precision GradScaler (f16 training only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaler: Option<ScalerState>,
    /// The run's settings that a resumed run keeps unless told otherwise (absent in
    /// checkpoints of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<RunSettings>,
}

/// What a run was started with, kept so that `--resume` continues the same run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// Samples per batch.
    pub batch_size: usize,
    /// Parameter dtype: `f32`, or `f16` (mixed precision).
    pub dtype: String,
    /// The base learning rate (a schedule's starting point).
    pub lr: f64,
}

/// An error about the checkpoint file at `path`.
fn format_error(path: &Path, msg: String) -> Error {
    Error::Format {
        path: path.display().to_string(),
        msg,
    }
}

/// More completed epochs than this in a checkpoint is corruption, not a long run.
pub const MAX_EPOCHS: usize = 1_000_000;

impl CheckpointMeta {
    /// Checks the values, not only their types: the epoch count and the history agree
    /// and are sane, the RNG state can generate, the settings are usable. The error
    /// names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.epoch > MAX_EPOCHS {
            return Err(format!(
                "epoch {} is beyond any run (at most {MAX_EPOCHS})",
                self.epoch
            ));
        }
        let h = &self.history;
        if h.accuracy.len() > self.epoch || h.test_loss.len() > self.epoch {
            return Err(format!(
                "history has {} accuracies and {} test losses for {} completed epochs",
                h.accuracy.len(),
                h.test_loss.len(),
                self.epoch
            ));
        }
        if self.rng_state == Some([0; 4]) {
            return Err("rng_state is all zeros, which the generator cannot leave".into());
        }
        if let Some(s) = &self.settings {
            if s.batch_size == 0 {
                return Err("settings.batch_size is 0".into());
            }
            if !["f32", "f16", "bf16"].contains(&s.dtype.as_str()) {
                return Err(format!(
                    "settings.dtype {:?} is not f32, f16 or bf16",
                    s.dtype
                ));
            }
            if !(s.lr.is_finite() && s.lr >= 0.0) {
                return Err(format!("settings.lr {} is not a learning rate", s.lr));
            }
        }
        Ok(())
    }
}

/// A checkpoint in memory: the parameters, the optimizer state and the metadata.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The model's parameters by name.
    pub model: BTreeMap<String, Tensor>,
    /// The optimizer's state (empty for a bare model file).
    pub optimizer: StateDict,
    /// Epoch, RNG, history; None for a bare model file (e.g. one PyTorch wrote).
    pub meta: Option<CheckpointMeta>,
}

impl Checkpoint {
    /// Captures the state of a training run (with mixed precision, the optimizer's
    /// master weights and the scaler too).
    pub fn capture(
        model: &dyn Module,
        optimizer: &dyn Optimizer,
        optimizer_name: &str,
        scaler: Option<&GradScaler>,
        epoch: usize,
        rng_state: Option<[u64; 4]>,
        history: &History,
    ) -> Result<Checkpoint> {
        let state = optimizer.state_dict()?;
        let scaler = scaler.map(GradScaler::state_dict).transpose()?;
        Ok(Checkpoint {
            model: model.state_dict().into_iter().collect(),
            meta: Some(CheckpointMeta {
                format: FORMAT.into(),
                epoch,
                rng_state,
                optimizer: optimizer_name.into(),
                optimizer_state: state.meta.clone(),
                history: history.clone(),
                scaler,
                settings: None,
            }),
            optimizer: state,
        })
    }

    /// The checkpoint with the run's settings recorded (for `--resume`).
    pub fn with_settings(mut self, settings: RunSettings) -> Checkpoint {
        if let Some(m) = self.meta.as_mut() {
            m.settings = Some(settings);
        }
        self
    }

    /// Writes the checkpoint atomically (see [`io::save`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = self
            .model
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        for (n, t) in &self.optimizer.tensors {
            tensors.push((format!("{OPTIM_PREFIX}{n}"), t.clone()));
        }
        let mut metadata = HashMap::new();
        if let Some(meta) = &self.meta {
            let json = serde_json::to_string(meta)
                .map_err(|e| Error::invalid("checkpoint", e.to_string()))?;
            metadata.insert(META_KEY.to_string(), json);
        }
        io::save(path, &TensorFile { tensors, metadata })
    }

    /// Reads a checkpoint, or a bare state dict of model tensors (no metadata).
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Checkpoint::decode(&bytes, path)
    }

    /// Parses checkpoint (or bare state dict) bytes; `path` only names them in errors.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
        let file = io::decode(bytes, path)?;
        let meta = match file.metadata.get(META_KEY) {
            None => None,
            Some(json) => {
                let meta: CheckpointMeta =
                    serde_json::from_str(json).map_err(|e| Error::Format {
                        path: path.display().to_string(),
                        msg: format!("bad checkpoint metadata: {e}"),
                    })?;
                if meta.format != FORMAT {
                    return Err(Error::Format {
                        path: path.display().to_string(),
                        msg: format!("checkpoint format {:?}, expected {FORMAT:?}", meta.format),
                    });
                }
                meta.validate().map_err(|msg| Error::Format {
                    path: path.display().to_string(),
                    msg: format!("bad checkpoint metadata: {msg}"),
                })?;
                Some(meta)
            }
        };
        let mut model = BTreeMap::new();
        let mut optimizer = StateDict::default();
        for (name, t) in file.tensors {
            match name.strip_prefix(OPTIM_PREFIX) {
                Some(key) => {
                    optimizer.tensors.insert(key.to_string(), t);
                }
                None => {
                    model.insert(name, t);
                }
            }
        }
        if let Some(m) = &meta {
            optimizer.meta = m.optimizer_state.clone();
        }
        Ok(Checkpoint {
            model,
            optimizer,
            meta,
        })
    }

    /// Checks that the parameters match `model` exactly (the same names, shapes, float
    /// dtypes): nothing is changed; the error names every difference it found first.
    pub fn check_model(&self, model: &dyn Module, path: &Path) -> Result<()> {
        let bad = |msg: String| Error::Format {
            path: path.display().to_string(),
            msg,
        };
        let params = model.named_parameters();
        let missing: Vec<&str> = params
            .iter()
            .filter(|(n, _)| !self.model.contains_key(n))
            .map(|(n, _)| n.as_str())
            .collect();
        let unexpected: Vec<&str> = self
            .model
            .keys()
            .filter(|k| !params.iter().any(|(n, _)| n == *k))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            return Err(bad(format!(
                "does not match the model: missing {missing:?}, unexpected {unexpected:?}"
            )));
        }
        for (name, p) in &params {
            let t = &self.model[name];
            if t.shape() != p.shape() {
                return Err(bad(format!(
                    "{name} has shape {:?}, the model {:?}",
                    t.shape(),
                    p.shape()
                )));
            }
            if !t.dtype().is_float() {
                return Err(bad(format!(
                    "{name} has dtype {}, not a float type",
                    t.dtype()
                )));
            }
        }
        Ok(())
    }

    /// Loads the parameters into `model` in place, after [`Self::check_model`].
    pub fn apply_model(&self, model: &mut dyn Module, path: &Path) -> Result<()> {
        self.check_model(model, path)?;
        let state: HashMap<String, Tensor> = self
            .model
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        model.load_state_dict(&state, true)
    }

    /// The metadata of a training checkpoint; an error for a bare model file.
    pub fn training_meta(&self, path: &Path) -> Result<&CheckpointMeta> {
        self.meta.as_ref().ok_or_else(|| {
            format_error(
                path,
                "a bare model file, not a training checkpoint (no optimizer state, epoch or RNG)"
                    .into(),
            )
        })
    }

    /// Restores a training run: checks everything first, then loads the optimizer state,
    /// the scaler and the parameters. On any error, none of them changes.
    pub fn apply_training(
        &self,
        model: &mut dyn Module,
        optimizer: &mut dyn Optimizer,
        optimizer_name: &str,
        scaler: Option<&mut GradScaler>,
        path: &Path,
    ) -> Result<&CheckpointMeta> {
        let bad = |msg: String| format_error(path, msg);
        let meta = self.training_meta(path)?;
        if meta.optimizer != optimizer_name {
            return Err(bad(format!(
                "saved with optimizer {}, resumed with {optimizer_name}",
                meta.optimizer
            )));
        }
        if scaler.is_some() != meta.scaler.is_some() {
            return Err(bad(format!(
                "saved {} mixed precision, resumed {}",
                if meta.scaler.is_some() {
                    "with"
                } else {
                    "without"
                },
                if scaler.is_some() {
                    "with it"
                } else {
                    "without it"
                }
            )));
        }
        self.apply_parts(model, Some(optimizer), scaler, path)
    }

    /// Restores what a resumed run keeps: the parameters always, the optimizer state when
    /// `optimizer` is given, the scaler when `scaler` is given and the checkpoint has one.
    /// Everything is checked first; on any error, nothing changes. The caller has decided
    /// that the parts fit (see [`Self::apply_training`] for the strict rule).
    pub fn apply_parts(
        &self,
        model: &mut dyn Module,
        optimizer: Option<&mut dyn Optimizer>,
        scaler: Option<&mut GradScaler>,
        path: &Path,
    ) -> Result<&CheckpointMeta> {
        let bad = |msg: String| format_error(path, msg);
        let meta = self.training_meta(path)?;
        self.check_model(model, path)?;
        // Built (and checked) before anything changes.
        let restored_scaler = match (&scaler, &meta.scaler) {
            (Some(s), Some(st)) => Some(
                GradScaler::from_state(s.scale_tensor().device(), st)
                    .map_err(|e| bad(format!("scaler state: {e}")))?,
            ),
            _ => None,
        };
        if let Some(optimizer) = optimizer {
            optimizer
                .load_state_dict(&self.optimizer)
                .map_err(|e| bad(format!("optimizer state: {e}")))?;
        }
        self.apply_model(model, path)?;
        if let (Some(s), Some(r)) = (scaler, restored_scaler) {
            *s = r;
        }
        Ok(meta)
    }
}
