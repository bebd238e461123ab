//! The backward engine: runs the graph's nodes in dependency order and delivers the
//! gradients to leaves (PyTorch's `AccumulateGrad` rules) or to the caller.

use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use crate::base::{Error, Result};
use crate::tensor::grad_mode::set_grad_enabled;
use crate::tensor::graph::{Edge, Node, PostAccumulateGradHook};
use crate::tensor::prim;
use crate::tensor::Tensor;

/// Identity of a graph vertex: a node or a leaf tensor.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Key {
    Node(usize),
    Leaf(usize),
}

fn node_key(n: &Arc<Node>) -> Key {
    Key::Node(Arc::as_ptr(n) as usize)
}

fn leaf_key(t: &Tensor) -> Key {
    Key::Leaf(Arc::as_ptr(&t.0) as usize)
}

/// Where the gradients end up.
enum Sink {
    /// Into `.grad` of the leaves (and of non-leaves that retain their grad).
    Accumulate,
    /// Returned to the caller: slot per requested tensor.
    Capture(HashMap<Key, usize>),
}

/// A node ready to run, ordered by creation (most recent first).
struct Ready(Arc<Node>);

impl PartialEq for Ready {
    fn eq(&self, o: &Self) -> bool {
        self.0.seq == o.0.seq
    }
}
impl Eq for Ready {}
impl PartialOrd for Ready {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ready {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.seq.cmp(&o.0.seq)
    }
}

/// Whether no other handle can observe `t`'s memory (then it can be kept without a copy).
fn exclusively_owned(t: &Tensor) -> bool {
    Arc::strong_count(&t.0) == 1 && Arc::strong_count(t.storage()) == 1
}

/// Adds `new` to a pending sum, in place when the sum is a private buffer.
fn add_into(acc: &mut Tensor, new: Tensor, create_graph: bool) -> Result<()> {
    if !create_graph && exclusively_owned(acc) && acc.is_contiguous() {
        prim::add_(acc, &new, 1.0)
    } else {
        *acc = acc.add(&new)?;
        Ok(())
    }
}

fn check_grad(what: &str, t: &Tensor, g: &Tensor) -> Result<()> {
    if g.shape() != t.shape() || g.dtype() != t.dtype() || g.device() != t.device() {
        return Err(Error::Autograd(format!(
            "{what}: gradient of shape {:?} ({}, {}) for a tensor of shape {:?} ({}, {})",
            g.shape(),
            g.dtype(),
            g.device(),
            t.shape(),
            t.dtype(),
            t.device()
        )));
    }
    Ok(())
}

/// PyTorch's `AccumulateGrad`: a fresh gradient is taken over without a copy when
/// nothing else holds it (else a contiguous copy); an existing `.grad` is added to in
/// place, or out of place (with history) under `create_graph`.
pub(crate) fn accumulate_grad(leaf: &Tensor, new: Tensor, create_graph: bool) -> Result<()> {
    check_grad("accumulate_grad", leaf, &new)?;
    let existing = leaf.meta().grad.clone();
    let updated = match existing {
        None if create_graph => new.deep_clone()?,
        None if exclusively_owned(&new) && new.is_contiguous() => {
            let mut m = new.meta();
            m.grad_fn = None;
            m.requires_grad = false;
            drop(m);
            new
        }
        None => prim::contiguous(&new)?,
        Some(g) if !create_graph => {
            prim::add_(&g, &new, 1.0)?;
            return Ok(());
        }
        Some(g) => g.add(&new)?,
    };
    leaf.meta().grad = Some(updated);
    Ok(())
}

/// `.grad` of a non-leaf that retains its gradient (PyTorch's retain_grad hook).
fn retain_into(t: &Tensor, new: &Tensor) -> Result<()> {
    let existing = t.meta().grad.clone();
    let updated = match existing {
        None => new.deep_clone()?,
        Some(g) => g.add(new)?,
    };
    t.meta().grad = Some(updated);
    Ok(())
}

/// Counts, for every vertex reachable from `root`, the edges that lead into it.
fn count_dependencies(root: &Arc<Node>) -> HashMap<Key, usize> {
    let mut deps: HashMap<Key, usize> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root.clone()];
    seen.insert(node_key(root));
    while let Some(n) = stack.pop() {
        for e in n.edges.iter().flatten() {
            match e {
                Edge::Node(m) => {
                    *deps.entry(node_key(m)).or_insert(0) += 1;
                    if seen.insert(node_key(m)) {
                        stack.push(m.clone());
                    }
                }
                Edge::Leaf(w) => {
                    *deps.entry(Key::Leaf(w.as_ptr() as usize)).or_insert(0) += 1;
                }
            }
        }
    }
    deps
}

/// The gradient to start from: the given one (checked), or ones for a one-element root.
fn root_gradient(root: &Tensor, gradient: Option<&Tensor>) -> Result<Tensor> {
    if !root.requires_grad() {
        return Err(Error::Autograd(
            "element 0 of tensors does not require grad and does not have a grad_fn".into(),
        ));
    }
    match gradient {
        Some(g) => {
            check_grad("backward", root, g)?;
            Ok(g.clone())
        }
        None if root.numel() == 1 => Tensor::ones(root.shape(), root.dtype(), root.device()),
        None => Err(Error::Autograd(format!(
            "grad can be implicitly created only for scalar outputs (shape {:?}); pass a gradient",
            root.shape()
        ))),
    }
}

struct Run {
    retain_graph: bool,
    create_graph: bool,
    sink: Sink,
    captured: Vec<Option<Tensor>>,
}

impl Run {
    /// Delivers the summed gradient of a leaf; a leaf with post-accumulate hooks is
    /// added to `finished` for [`run_hooks`].
    fn deliver_leaf(&mut self, leaf: &Tensor, g: Tensor, finished: &mut Vec<Tensor>) -> Result<()> {
        match &self.sink {
            Sink::Accumulate => {
                accumulate_grad(leaf, g, self.create_graph)?;
                if leaf.has_post_accumulate_grad_hooks() {
                    finished.push(leaf.clone());
                }
                Ok(())
            }
            Sink::Capture(slots) => {
                if let Some(&i) = slots.get(&leaf_key(leaf)) {
                    self.captured[i] = Some(g);
                }
                Ok(())
            }
        }
    }

    /// Hands the gradient of a node's output to whoever watches it.
    fn observe_node(&mut self, n: &Arc<Node>, g: &Tensor) -> Result<()> {
        match &self.sink {
            Sink::Accumulate => {
                let retained: Vec<_> = n.retained.lock().unwrap_or_else(|e| e.into_inner()).clone();
                for w in retained {
                    if let Some(t) = w.upgrade() {
                        retain_into(&Tensor(t), g)?;
                    }
                }
                Ok(())
            }
            Sink::Capture(slots) => {
                if let Some(&i) = slots.get(&node_key(n)) {
                    self.captured[i] = Some(g.clone());
                }
                Ok(())
            }
        }
    }

    fn run(&mut self, root: &Tensor, gradient: Option<&Tensor>) -> Result<()> {
        let g0 = root_gradient(root, gradient)?;
        let _mode = set_grad_enabled(self.create_graph);
        let Some(root_node) = root.grad_fn() else {
            let mut finished = Vec::new();
            self.deliver_leaf(root, g0, &mut finished)?;
            return run_hooks(&finished);
        };
        let mut deps = count_dependencies(&root_node);
        let mut buffers: HashMap<Key, Tensor> = HashMap::new();
        buffers.insert(node_key(&root_node), g0);
        let mut ready = BinaryHeap::new();
        ready.push(Ready(root_node));
        while let Some(Ready(node)) = ready.pop() {
            let Some(g) = buffers.remove(&node_key(&node)) else {
                // No gradient reached this node: its inputs get none from it either.
                self.release_edges(&node, &mut deps, &mut ready, &mut buffers)?;
                continue;
            };
            if g.shape() != node.out_shape.as_slice()
                || g.dtype() != node.out_dtype
                || g.device() != node.out_device
            {
                return Err(Error::Autograd(format!(
                    "{}: gradient of shape {:?} ({}, {}) for an output of shape {:?} ({}, {})",
                    node.name(),
                    g.shape(),
                    g.dtype(),
                    g.device(),
                    node.out_shape,
                    node.out_dtype,
                    node.out_device
                )));
            }
            self.observe_node(&node, &g)?;
            let grads = node.apply(&g, self.retain_graph, self.create_graph)?;
            drop(g);
            for (edge, grad) in node.edges.iter().zip(grads) {
                let (Some(edge), Some(grad)) = (edge, grad) else {
                    continue;
                };
                let key = match edge {
                    Edge::Node(m) => node_key(m),
                    Edge::Leaf(w) => Key::Leaf(w.as_ptr() as usize),
                };
                match buffers.get_mut(&key) {
                    Some(acc) => add_into(acc, grad, self.create_graph)?,
                    None => {
                        buffers.insert(key, grad);
                    }
                }
            }
            self.release_edges(&node, &mut deps, &mut ready, &mut buffers)?;
        }
        Ok(())
    }

    /// Counts down the dependencies of `node`'s inputs; runs leaves and queues nodes
    /// whose every consumer has run.
    fn release_edges(
        &mut self,
        node: &Arc<Node>,
        deps: &mut HashMap<Key, usize>,
        ready: &mut BinaryHeap<Ready>,
        buffers: &mut HashMap<Key, Tensor>,
    ) -> Result<()> {
        let mut finished = Vec::new();
        for edge in node.edges.iter().flatten() {
            let key = match edge {
                Edge::Node(m) => node_key(m),
                Edge::Leaf(w) => Key::Leaf(w.as_ptr() as usize),
            };
            let d = deps
                .get_mut(&key)
                .ok_or_else(|| Error::Autograd("graph changed during backward".into()))?;
            *d -= 1;
            if *d > 0 {
                continue;
            }
            match edge {
                Edge::Node(m) => ready.push(Ready(m.clone())),
                Edge::Leaf(w) => {
                    if let (Some(g), Some(t)) = (buffers.remove(&key), w.upgrade()) {
                        self.deliver_leaf(&Tensor(t), g, &mut finished)?;
                    }
                }
            }
        }
        run_hooks(&finished)
    }
}

/// Runs the post-accumulate hooks of leaves that finished together: each distinct hook
/// once, with its leaves in order.
fn run_hooks(finished: &[Tensor]) -> Result<()> {
    let mut calls: Vec<(Arc<dyn PostAccumulateGradHook>, Vec<Tensor>)> = Vec::new();
    for leaf in finished {
        let hooks = leaf.meta().post_accumulate.clone();
        for h in hooks {
            match calls
                .iter_mut()
                .find(|(c, _)| std::ptr::addr_eq(Arc::as_ptr(c), Arc::as_ptr(&h)))
            {
                Some((_, leaves)) => leaves.push(leaf.clone()),
                None => calls.push((h, vec![leaf.clone()])),
            }
        }
    }
    calls.iter().try_for_each(|(h, leaves)| h.call(leaves))
}

/// Runs backward from `root`, accumulating into the `.grad` of the leaves.
pub(crate) fn backward(
    root: &Tensor,
    gradient: Option<&Tensor>,
    retain_graph: bool,
    create_graph: bool,
) -> Result<()> {
    let mut run = Run {
        retain_graph: retain_graph || create_graph,
        create_graph,
        sink: Sink::Accumulate,
        captured: Vec::new(),
    };
    run.run(root, gradient)
}

/// The gradients of `output` with respect to each of `inputs`, returned instead of
/// accumulated into `.grad` (PyTorch's `torch.autograd.grad`). An input that does not
/// influence `output` gets None. With `create_graph` the gradients carry history, so
/// they can be differentiated again; the graph is then kept as with `retain_graph`.
pub fn grad(
    output: &Tensor,
    inputs: &[&Tensor],
    grad_output: Option<&Tensor>,
    retain_graph: bool,
    create_graph: bool,
) -> Result<Vec<Option<Tensor>>> {
    let mut slots = HashMap::new();
    for (i, t) in inputs.iter().enumerate() {
        if !t.requires_grad() {
            return Err(Error::Autograd(format!(
                "input {i} of grad() does not require grad"
            )));
        }
        let key = match t.grad_fn() {
            Some(n) => node_key(&n),
            None => leaf_key(t),
        };
        slots.insert(key, i);
    }
    let mut run = Run {
        retain_graph: retain_graph || create_graph,
        create_graph,
        sink: Sink::Capture(slots),
        captured: vec![None; inputs.len()],
    };
    run.run(output, grad_output)?;
    Ok(run.captured)
}
