//! The backward graph as tensors carry it: each tensor's autograd metadata, the nodes
//! that ops record so that their backward can run later, and the recording itself. The
//! engine that runs a backward pass is [`crate::autograd`], a layer above.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::grad_mode::is_grad_enabled;
use super::{Tensor, TensorImpl};
use crate::base::{DType, Device, Error, Result};

/// What autograd knows about one tensor.
#[derive(Default)]
pub struct AutogradMeta {
    /// Whether gradients flow to this tensor.
    pub requires_grad: bool,
    /// The accumulated gradient (`.grad`).
    pub grad: Option<Tensor>,
    /// The node that produced this tensor, for non-leaves.
    pub grad_fn: Option<Arc<Node>>,
    /// Whether a non-leaf keeps its gradient (`retain_grad`).
    pub retains_grad: bool,
    /// Hooks run after backward accumulated into this leaf's `.grad`.
    pub(crate) post_accumulate: Vec<Arc<dyn PostAccumulateGradHook>>,
    /// A `StepInBackward` steps this parameter and drops its grad during backward.
    pub(crate) stepped_in_backward: bool,
}

/// A hook run after backward has accumulated gradients into leaves' `.grad` (PyTorch's
/// `register_post_accumulate_grad_hook`), registered with
/// [`Tensor::register_post_accumulate_grad_hook`]. Leaves whose gradients become final
/// together (delivered when the same node of the graph has run) and that hold the same
/// hook reach it in one call, so a hook can act on a layer's parameters at once; the
/// hook may read and replace their `.grad`. An error from it stops the backward pass.
pub trait PostAccumulateGradHook: Send + Sync {
    /// Runs on leaves whose `.grad` has just been accumulated (in graph order).
    fn call(&self, leaves: &[Tensor]) -> Result<()>;
}

/// The backward function of a node: given the gradient of the node's output, the
/// gradient of each of its inputs (None where an input gets no gradient).
pub(crate) type BackwardFn =
    dyn Fn(&Tensor, &BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync;

/// Where the gradient of one input of a node goes.
pub(crate) enum Edge {
    /// To the node that produced the input.
    Node(Arc<Node>),
    /// Into the `.grad` of a leaf (weak: a leaf nobody holds any more needs no gradient).
    Leaf(Weak<TensorImpl>),
}

/// A node of the backward graph: the `grad_fn` of a tensor made by a differentiable op.
///
/// A node has one output (the tensor whose `grad_fn` it is) and one edge per op input.
/// Its backward function owns the tensors saved for backward; running backward without
/// `retain_graph` drops it, which frees them.
pub struct Node {
    name: &'static str,
    pub(crate) edges: Vec<Option<Edge>>,
    backward: Mutex<Option<Box<BackwardFn>>>,
    /// Non-leaf outputs that asked for [`Tensor::retain_grad`].
    pub(crate) retained: Mutex<Vec<Weak<TensorImpl>>>,
    /// Creation order: among ready nodes the most recent runs first, as in PyTorch.
    pub(crate) seq: u64,
    pub(crate) out_shape: Vec<usize>,
    pub(crate) out_dtype: DType,
    pub(crate) out_device: Device,
}

static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}>", self.name)
    }
}

impl Node {
    /// The op's backward name, e.g. `MulBackward`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Number of inputs of the op (edges, including those that need no gradient).
    pub fn num_inputs(&self) -> usize {
        self.edges.len()
    }

    /// The nodes that produced this node's inputs (None for leaves and for inputs that
    /// need no gradient), PyTorch's `next_functions`.
    pub fn next_nodes(&self) -> Vec<Option<Arc<Node>>> {
        self.edges
            .iter()
            .map(|e| match e {
                Some(Edge::Node(n)) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether the saved tensors were freed by a backward without `retain_graph`.
    pub fn is_freed(&self) -> bool {
        self.lock_backward().is_none()
    }

    fn lock_backward(&self) -> std::sync::MutexGuard<'_, Option<Box<BackwardFn>>> {
        self.backward.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the backward function; frees it afterwards unless `retain`.
    pub(crate) fn apply(
        self: &Arc<Node>,
        grad: &Tensor,
        retain: bool,
        create_graph: bool,
    ) -> Result<Vec<Option<Tensor>>> {
        let ctx = BackwardCtx {
            node: self,
            create_graph,
        };
        let freed = || {
            Error::Autograd(format!(
                "trying to backward through the graph a second time ({} was freed): pass \
                 retain_graph = true to the first backward to keep saved tensors",
                self.name
            ))
        };
        let out = if retain {
            let guard = self.lock_backward();
            let f = guard.as_ref().ok_or_else(freed)?;
            f(grad, &ctx)?
        } else {
            let f = self.lock_backward().take().ok_or_else(freed)?;
            f(grad, &ctx)?
        };
        if out.len() != self.edges.len() {
            return Err(Error::Autograd(format!(
                "{} returned {} gradients for {} inputs",
                self.name,
                out.len(),
                self.edges.len()
            )));
        }
        Ok(out)
    }
}

/// A tensor saved for backward, with the storage version it had when saved: an
/// in-place change to it before backward is an error, not a wrong gradient.
pub struct SavedTensor {
    tensor: Tensor,
    version: u64,
    is_output: bool,
}

impl SavedTensor {
    /// Saves an input of the op (the handle itself, so `create_graph` can differentiate
    /// through it).
    pub fn input(t: &Tensor) -> SavedTensor {
        SavedTensor {
            tensor: t.clone(),
            version: t.storage().version(),
            is_output: false,
        }
    }

    /// Saves the op's own output (as an alias without history, so the node does not keep
    /// itself alive; [`BackwardCtx::unpack`] reconnects it under `create_graph`).
    pub fn output(t: &Tensor) -> SavedTensor {
        SavedTensor {
            tensor: t.detach(),
            version: t.storage().version(),
            is_output: true,
        }
    }
}

/// What a backward function can ask of the engine while it runs.
pub struct BackwardCtx<'a> {
    node: &'a Arc<Node>,
    create_graph: bool,
}

impl BackwardCtx<'_> {
    /// Whether this backward records a graph for higher-order gradients.
    pub fn create_graph(&self) -> bool {
        self.create_graph
    }

    /// Whether input `i` of the op needs a gradient.
    pub fn needs(&self, i: usize) -> bool {
        self.node.edges.get(i).is_some_and(|e| e.is_some())
    }

    /// The saved tensor, checked against in-place modification since it was saved.
    pub fn unpack(&self, s: &SavedTensor) -> Result<Tensor> {
        let now = s.tensor.storage().version();
        if now != s.version {
            return Err(Error::Autograd(format!(
                "one of the tensors needed for gradient computation has been modified by an \
                 in-place operation: a tensor of shape {:?} saved by {} is at version {now}; \
                 expected version {}",
                s.tensor.shape(),
                self.node.name,
                s.version
            )));
        }
        if s.is_output && self.create_graph {
            let t = s.tensor.detach();
            let mut m = t.meta();
            m.requires_grad = true;
            m.grad_fn = Some(self.node.clone());
            drop(m);
            return Ok(t);
        }
        Ok(s.tensor.clone())
    }
}

/// Whether an op on `inputs` must record a node (grad mode on, some input requires grad).
pub fn needs_grad(inputs: &[&Tensor]) -> bool {
    is_grad_enabled() && inputs.iter().any(|t| t.requires_grad())
}

fn edge_of(t: &Tensor) -> Option<Edge> {
    if !t.requires_grad() {
        return None;
    }
    Some(match t.grad_fn() {
        Some(n) => Edge::Node(n),
        None => Edge::Leaf(Arc::downgrade(&t.0)),
    })
}

/// Makes `out` the output of a new node of `inputs` (when [`needs_grad`]; else returns
/// `out` unchanged). `out` must be a tensor the op just made. `backward` gets the
/// gradient of `out` and returns one gradient per input, in order.
pub fn record<F>(name: &'static str, inputs: &[&Tensor], out: Tensor, backward: F) -> Tensor
where
    F: Fn(&Tensor, &BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
{
    if !needs_grad(inputs) {
        return out;
    }
    let node = Arc::new(Node {
        name,
        edges: inputs.iter().map(|t| edge_of(t)).collect(),
        backward: Mutex::new(Some(Box::new(backward))),
        retained: Mutex::new(Vec::new()),
        seq: NEXT_SEQ.fetch_add(1, Ordering::Relaxed),
        out_shape: out.shape().to_vec(),
        out_dtype: out.dtype(),
        out_device: out.device(),
    });
    let mut m = out.meta();
    m.requires_grad = true;
    m.grad_fn = Some(node);
    drop(m);
    out
}

/// Marks `value` (computed from `inputs` by a backward formula that is not itself
/// differentiable) so that differentiating through it is an error, never a silently
/// wrong higher-order gradient.
pub fn non_differentiable(op: &'static str, inputs: &[&Tensor], value: Tensor) -> Tensor {
    record("NotDifferentiableBackward", inputs, value, move |_, _| {
        Err(Error::Autograd(format!(
            "double backward through {op} is not implemented"
        )))
    })
}
