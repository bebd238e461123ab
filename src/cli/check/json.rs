//! The case files' JSON shapes (`ops-ref/1`, `optim-ref/1`, `train-ref/1`, `clip-ref/1`)
//! as serde types.
//!
//! Numbers are read as f64 (serde_json's `float_roundtrip` parses them exactly; the
//! strings `"nan"`, `"inf"`, `"-inf"` stand for non-finite values, see [`num`]) and
//! converted to the case's dtype when tensors are made. Fields the runner must not
//! depend on (`meta`, `torch_path`, `torch_compute`, `note`) are not read.

use serde::Deserialize;

use super::num;

use crate::base::{Error, Result};
use crate::tensor::DType;

/// `{"rtol": r, "atol": a}`: a value passes when `|got - want| <= atol + rtol * |want|`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
pub struct Tolerance {
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

/// A float tensor: `{shape, data}` in row-major order.
#[derive(Clone, Debug, Deserialize)]
pub struct TensorData {
    /// Sizes of each dim (`[]` for a 0-d tensor).
    pub shape: Vec<usize>,
    /// The values, row-major.
    #[serde(deserialize_with = "num::de")]
    pub data: Vec<f64>,
}

/// An integer tensor: `{shape, int_data}`.
#[derive(Clone, Debug, Deserialize)]
pub struct IntTensorData {
    /// Sizes of each dim.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub int_data: Vec<i64>,
}

/// One input of an op case: a float tensor (`data`, `requires_grad`) or an integer
/// tensor (`int_data`).
#[derive(Clone, Debug, Deserialize)]
pub struct OpInput {
    /// Sizes of each dim.
    pub shape: Vec<usize>,
    /// Float values, for a float input.
    #[serde(default, deserialize_with = "num::de")]
    pub data: Option<Vec<f64>>,
    /// Integer values, for an integer input.
    #[serde(default)]
    pub int_data: Option<Vec<i64>>,
    /// Whether the float input requires a gradient.
    #[serde(default)]
    pub requires_grad: bool,
}

/// The attributes of every op of `ops-ref/1` (each op reads the ones it has).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct OpAttrs {
    /// gelu: `"none"` or `"tanh"`.
    #[serde(default)]
    pub approximate: Option<String>,
    /// sum, mean: the dims to reduce (`null`: all).
    #[serde(default)]
    pub dims: Option<Vec<i64>>,
    /// sum, mean: keep reduced dims as size 1.
    #[serde(default)]
    pub keepdim: Option<bool>,
    /// transpose: the first dim.
    #[serde(default)]
    pub dim0: Option<i64>,
    /// transpose: the second dim.
    #[serde(default)]
    pub dim1: Option<i64>,
    /// reshape: the new shape, one entry may be -1.
    #[serde(default)]
    pub shape: Option<Vec<i64>>,
    /// softmax, log_softmax: the dim.
    #[serde(default)]
    pub dim: Option<i64>,
    /// cross_entropy, mse_loss: `"mean"`, `"sum"` or `"none"`.
    #[serde(default)]
    pub reduction: Option<String>,
    /// cross_entropy: label smoothing.
    #[serde(default)]
    pub label_smoothing: Option<f64>,
    /// cross_entropy: the ignored class.
    #[serde(default)]
    pub ignore_index: Option<i64>,
    /// layer_norm: the trailing dims normalised.
    #[serde(default)]
    pub normalized_shape: Option<Vec<usize>>,
    /// layer_norm: epsilon.
    #[serde(default)]
    pub eps: Option<f64>,
}

/// One `ops-ref/1` case: forward and backward of one op.
#[derive(Clone, Debug, Deserialize)]
pub struct OpCase {
    /// `<op>/<label>/<dtype>`.
    pub id: String,
    /// The op's name.
    pub op: String,
    /// `float64`, `float32` or `float16`.
    pub dtype: String,
    /// The inputs, in the op's order.
    pub inputs: Vec<OpInput>,
    /// The op's attributes.
    #[serde(default)]
    pub attrs: OpAttrs,
    /// The forward result.
    pub output: TensorData,
    /// The gradient given to backward.
    pub grad_output: TensorData,
    /// The gradient of each input (`null`: none must be produced).
    pub grads: Vec<Option<TensorData>>,
    /// Comparison tolerance.
    pub tolerance: Tolerance,
}

/// Hyperparameters of SGD, Adam and AdamW (torch's `param_groups[0]`).
#[derive(Clone, Debug, Deserialize)]
pub struct Hyperparams {
    /// Learning rate.
    pub lr: f64,
    /// SGD momentum.
    #[serde(default)]
    pub momentum: f64,
    /// SGD dampening.
    #[serde(default)]
    pub dampening: f64,
    /// L2 penalty (Adam, SGD) or decoupled decay (AdamW).
    #[serde(default)]
    pub weight_decay: f64,
    /// SGD Nesterov momentum.
    #[serde(default)]
    pub nesterov: bool,
    /// Maximise instead of minimise.
    #[serde(default)]
    pub maximize: bool,
    /// Adam's `(beta1, beta2)`.
    #[serde(default)]
    pub betas: Option<[f64; 2]>,
    /// Adam's epsilon.
    #[serde(default)]
    pub eps: Option<f64>,
    /// Adam's AMSGrad variant.
    #[serde(default)]
    pub amsgrad: bool,
    /// Adam with decoupled decay (AdamW).
    #[serde(default)]
    pub decoupled_weight_decay: bool,
}

/// A parameter's name, shape and initial values (`tile`: see [`expand`]).
#[derive(Clone, Debug, Deserialize)]
pub struct ParamSpec {
    /// The parameter's name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Initial values.
    #[serde(deserialize_with = "num::de")]
    pub init: Vec<f64>,
    /// When present (P), per-element lists hold `min(numel, P)` values, element i is
    /// value `i mod P`.
    #[serde(default)]
    pub tile: Option<usize>,
}

impl ParamSpec {
    /// Number of elements; an error when the shape's size overflows.
    pub fn numel(&self) -> Result<usize> {
        crate::base::checked_numel("case", &self.shape)
    }

    /// Expands one of this param's per-element lists to `numel` values.
    pub fn expand(&self, values: &[f64]) -> Result<Vec<f64>> {
        expand(values, self.numel()?, self.tile)
            .map_err(|msg| Error::invalid("case", format!("param \"{}\": {msg}", self.name)))
    }
}

/// Expands a tiled list: element i of the result is `values[i mod P]`. Without a tile
/// the list must already hold `numel` values.
pub fn expand(
    values: &[f64],
    numel: usize,
    tile: Option<usize>,
) -> std::result::Result<Vec<f64>, String> {
    match tile {
        None if values.len() == numel => Ok(values.to_vec()),
        None => Err(format!("{} values for {numel} elements", values.len())),
        Some(0) => Err("tile 0".into()),
        Some(p) if values.len() == numel.min(p) => {
            let mut out = crate::base::try_vec_with_capacity(numel).map_err(|e| e.to_string())?;
            while out.len() < numel {
                out.extend_from_slice(&values[..(numel - out.len()).min(p)]);
            }
            Ok(out)
        }
        Some(p) => Err(format!(
            "{} values for {numel} elements tiled by {p} (expected {})",
            values.len(),
            numel.min(p)
        )),
    }
}

/// Optimizer state of one parameter after a step.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StateSpec {
    /// Adam's step count.
    #[serde(default)]
    pub step: Option<f64>,
    /// SGD's momentum buffer.
    #[serde(default, deserialize_with = "num::de")]
    pub momentum_buffer: Option<Vec<f64>>,
    /// Adam's first moment.
    #[serde(default, deserialize_with = "num::de")]
    pub exp_avg: Option<Vec<f64>>,
    /// Adam's second moment.
    #[serde(default, deserialize_with = "num::de")]
    pub exp_avg_sq: Option<Vec<f64>>,
    /// AMSGrad's running maximum of the second moment.
    #[serde(default, deserialize_with = "num::de")]
    pub max_exp_avg_sq: Option<Vec<f64>>,
}

/// One step of an `optim-ref/1` case.
#[derive(Clone, Debug, Deserialize)]
pub struct OptimStep {
    /// Gradient of each param before the step (`null`: `.grad` is None).
    #[serde(deserialize_with = "num::de")]
    pub grads: Vec<Option<Vec<f64>>>,
    /// The scaler's scale, when a scaler is used.
    #[serde(default)]
    pub grad_scale: Option<f64>,
    /// The scaler's found_inf flag (0.0 or 1.0), when a scaler is used.
    #[serde(default)]
    pub found_inf: Option<f64>,
    /// `.grad` of each param after the step (scaler cases only).
    #[serde(default, deserialize_with = "num::de")]
    pub grads_after: Option<Vec<Option<Vec<f64>>>>,
    /// Every param after the step.
    #[serde(deserialize_with = "num::de")]
    pub params: Vec<Vec<f64>>,
    /// Optimizer state of each param after the step (`null`: none).
    pub state: Vec<Option<StateSpec>>,
}

/// One `optim-ref/1` case.
#[derive(Clone, Debug, Deserialize)]
pub struct OptimCase {
    /// `<optimizer>/<variant>/<dtype>`.
    pub id: String,
    /// `SGD`, `Adam` or `AdamW`.
    pub optimizer: String,
    /// dtype of params, grads and state.
    pub dtype: String,
    /// The optimizer's hyperparameters.
    pub hyperparams: Hyperparams,
    /// The parameters.
    pub params: Vec<ParamSpec>,
    /// The steps.
    pub steps: Vec<OptimStep>,
    /// Comparison tolerance.
    pub tolerance: Tolerance,
}

/// One layer of a `train-ref/1` model.
#[derive(Clone, Debug, Deserialize)]
pub struct LayerSpec {
    /// `Flatten`, `Linear` or `ReLU`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Flatten: first dim flattened.
    #[serde(default)]
    pub start_dim: Option<i64>,
    /// Flatten: last dim flattened.
    #[serde(default)]
    pub end_dim: Option<i64>,
    /// Linear: input features.
    #[serde(default)]
    pub in_features: Option<usize>,
    /// Linear: output features.
    #[serde(default)]
    pub out_features: Option<usize>,
    /// Linear: whether it has a bias.
    #[serde(default)]
    pub bias: Option<bool>,
    /// Linear: names of its weight (and bias) params.
    #[serde(default)]
    pub params: Vec<String>,
}

/// The loss of a `train-ref/1` case.
#[derive(Clone, Debug, Deserialize)]
pub struct LossSpec {
    /// `CrossEntropyLoss`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `mean`, `sum` or `none`.
    pub reduction: String,
    /// Label smoothing.
    pub label_smoothing: f64,
    /// The ignored class.
    pub ignore_index: i64,
}

/// `optimizer.zero_grad(set_to_none)` every `every` batches.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct ZeroGradSpec {
    /// The argument of `zero_grad`.
    pub set_to_none: bool,
    /// Batches per optimizer step.
    pub every: usize,
}

/// One batch: inputs and class indices.
#[derive(Clone, Debug, Deserialize)]
pub struct Batch {
    /// Inputs.
    pub x: TensorData,
    /// Class indices.
    pub y: IntTensorData,
}

/// One optimizer step of a `train-ref/1` case.
#[derive(Clone, Debug, Deserialize)]
pub struct TrainStep {
    /// Indices into the case's batches used by this step.
    pub batches: Vec<usize>,
    /// The loss of each batch.
    #[serde(deserialize_with = "num::de")]
    pub losses: Vec<f64>,
    /// The model output of each batch, flat.
    #[serde(deserialize_with = "num::de")]
    pub logits: Vec<Vec<f64>>,
    /// `.grad` of every param before `step()`.
    #[serde(deserialize_with = "num::de")]
    pub grads: Vec<Vec<f64>>,
    /// Every param after `step()`.
    #[serde(deserialize_with = "num::de")]
    pub params: Vec<Vec<f64>>,
}

/// One `train-ref/1` case.
#[derive(Clone, Debug, Deserialize)]
pub struct TrainCase {
    /// `<optimizer case>/every<1|2>_<none|zero>/<dtype>`.
    pub id: String,
    /// dtype of params, inputs, activations and grads.
    pub dtype: String,
    /// The model.
    pub layers: Vec<LayerSpec>,
    /// The loss.
    pub loss: LossSpec,
    /// The parameters in `model.parameters()` order.
    pub params: Vec<ParamSpec>,
    /// `SGD`, `Adam` or `AdamW`.
    pub optimizer: String,
    /// The optimizer's hyperparameters.
    pub hyperparams: Hyperparams,
    /// How gradients are cleared.
    pub zero_grad: ZeroGradSpec,
    /// Every batch, in order of use.
    pub batches: Vec<Batch>,
    /// The optimizer steps.
    pub steps: Vec<TrainStep>,
    /// Comparison tolerance.
    pub tolerance: Tolerance,
}

/// The arguments of a `clip-ref/1` case (each op reads its own).
#[derive(Clone, Debug, Deserialize)]
pub struct ClipHyper {
    /// clip_grad_norm_: the largest total norm.
    #[serde(default, deserialize_with = "num::de")]
    pub max_norm: Option<f64>,
    /// clip_grad_norm_: the norm's order (a number or `"inf"`).
    #[serde(default, deserialize_with = "num::de")]
    pub norm_type: Option<f64>,
    /// clip_grad_norm_: fail on a non-finite total norm.
    #[serde(default)]
    pub error_if_nonfinite: bool,
    /// clip_grad_value_: the bound.
    #[serde(default, deserialize_with = "num::de")]
    pub clip_value: Option<f64>,
    /// torch's `foreach` (multi-tensor kernels) or not.
    pub foreach: bool,
}

/// One param's gradient in a `clip-ref/1` case (`data: null`: the param has none).
#[derive(Clone, Debug, Deserialize)]
pub struct ClipGrad {
    /// The param's name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its dtype (`float64`, `float32`, `float16`, `bfloat16`).
    pub dtype: String,
    /// The grad's values, row-major.
    #[serde(deserialize_with = "num::de")]
    pub data: Option<Vec<f64>>,
}

/// What a `clip-ref/1` case expects.
#[derive(Clone, Debug, Deserialize)]
pub struct ClipExpected {
    /// Each param's grad afterwards (`null` where it had none).
    #[serde(deserialize_with = "num::de")]
    pub grads: Vec<Option<Vec<f64>>>,
    /// clip_grad_norm_: the returned total norm.
    #[serde(default, deserialize_with = "num::de")]
    pub total_norm: Option<f64>,
    /// clip_grad_norm_: the returned total norm's dtype.
    #[serde(default)]
    pub total_norm_dtype: Option<String>,
    /// Set when torch raised (its message); the grads are then unchanged.
    #[serde(default)]
    pub error: Option<String>,
}

/// One `clip-ref/1` case: `clip_grad_norm_` or `clip_grad_value_` over some grads.
#[derive(Clone, Debug, Deserialize)]
pub struct ClipCase {
    /// `<op>/<variant>/<dtype>/<foreach|for_loop>`.
    pub id: String,
    /// `clip_grad_norm_` or `clip_grad_value_`.
    pub op: String,
    /// The arguments.
    pub hyperparams: ClipHyper,
    /// The params' grads before the call.
    pub grads: Vec<ClipGrad>,
    /// The expected results.
    pub expected: ClipExpected,
    /// Tolerance of every compared value.
    pub tolerance: Tolerance,
}

/// The cases of a file, by format.
#[derive(Clone, Debug)]
pub enum CaseFile {
    /// `ops-ref/1`.
    Ops(Vec<OpCase>),
    /// `optim-ref/1`.
    Optim(Vec<OptimCase>),
    /// `train-ref/1`.
    Train(Vec<TrainCase>),
    /// `clip-ref/1`.
    Clip(Vec<ClipCase>),
}

impl CaseFile {
    /// Parses a case file from its bytes; `path` names it in errors. Rejects invalid
    /// JSON, a missing or unknown `format`, and cases of the wrong shape.
    pub fn parse(path: &str, bytes: &[u8]) -> Result<CaseFile> {
        let fail = |msg: String| Error::Format {
            path: path.to_string(),
            msg,
        };
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| fail(format!("not valid JSON: {e}")))?;
        let format = match value.get("format") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err(fail("\"format\" is not a string".into())),
            None => return Err(fail("no \"format\" field".into())),
        };
        let cases = value
            .get_mut("cases")
            .map(serde_json::Value::take)
            .ok_or_else(|| fail("no \"cases\" field".into()))?;
        let bad = |e: serde_json::Error| fail(format!("bad {format} cases: {e}"));
        match format.as_str() {
            "ops-ref/1" => Ok(CaseFile::Ops(serde_json::from_value(cases).map_err(bad)?)),
            "optim-ref/1" => Ok(CaseFile::Optim(serde_json::from_value(cases).map_err(bad)?)),
            "train-ref/1" => Ok(CaseFile::Train(serde_json::from_value(cases).map_err(bad)?)),
            "clip-ref/1" => Ok(CaseFile::Clip(serde_json::from_value(cases).map_err(bad)?)),
            other => Err(fail(format!(
                "unknown format \"{other}\" (known: ops-ref/1, optim-ref/1, train-ref/1, \
                 clip-ref/1)"
            ))),
        }
    }
}

/// The dtype named by a case (`float64`, `float32`, `float16`, `bfloat16`).
pub fn case_dtype(name: &str) -> Result<DType> {
    match name {
        "float64" => Ok(DType::F64),
        "float32" => Ok(DType::F32),
        "float16" => Ok(DType::F16),
        "bfloat16" => Ok(DType::BF16),
        other => Err(Error::invalid("case", format!("unknown dtype \"{other}\""))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_expand_by_repetition() {
        assert_eq!(
            expand(&[1.0, 2.0, 3.0], 7, Some(3)),
            Ok(vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0])
        );
        assert_eq!(expand(&[1.0, 2.0], 2, Some(5)), Ok(vec![1.0, 2.0]));
        assert_eq!(expand(&[], 0, Some(5)), Ok(vec![]));
        assert!(expand(&[1.0, 2.0], 7, Some(3)).is_err());
        assert!(expand(&[1.0, 2.0], 3, None).is_err());
    }

    #[test]
    fn formats_are_checked() {
        let err = |s: &str| {
            CaseFile::parse("f.json", s.as_bytes())
                .expect_err("must fail")
                .to_string()
        };
        assert!(
            err(r#"{"format": "ops-ref/9", "cases": []}"#).contains("unknown format \"ops-ref/9\"")
        );
        assert!(err(r#"{"cases": []}"#).contains("no \"format\""));
        assert!(err("[1, 2").contains("not valid JSON"));
        assert!(err(r#"{"format": "optim-ref/1", "cases": [{"id": "x"}]}"#)
            .contains("bad optim-ref/1 cases"));
        let ok = CaseFile::parse(
            "f.json",
            br#"{"format": "train-ref/1", "meta": {"x": 1}, "cases": []}"#,
        );
        assert!(matches!(ok, Ok(CaseFile::Train(c)) if c.is_empty()));
    }
}
