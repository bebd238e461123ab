//! `DistributedDataParallel`: gradients averaged over the ranks in buckets, each bucket's
//! all-reduce issued during backward as soon as its last gradient is final.
//!
//! As in PyTorch, the parameters are broadcast from rank 0 at construction and grouped
//! into buckets of at most `bucket_cap_mb` (25 MiB), filled in reverse order of
//! registration (the order backward produces the grads), one dtype per bucket. Each
//! bucket is one contiguous buffer and every parameter's `.grad` is a view into it
//! (PyTorch's `gradient_as_bucket_view=True`): backward accumulates into the bucket in
//! place, and a bucket's all-reduce needs no copy. A grad that backward made anew (after
//! `zero_grad(set_to_none=True)`) is copied into its view once, and the view becomes the
//! `.grad` again. A post-accumulate-grad hook marks each parameter ready; when a bucket is
//! complete, and every bucket before it has been issued (so every rank issues them in
//! the same order), its all-reduce (average) is issued. Nothing synchronises the host.
//!
//! The average is one all-reduce with [`ReduceOp::Avg`] (the sum over the ranks divided
//! by the world size, NCCL's `ncclAvg`). PyTorch divides each rank's grads by the world
//! size first and sums; for world sizes that are powers of two both give the same bits.
//!
//! Every parameter must get a gradient in every backward (PyTorch's default,
//! `find_unused_parameters=False`): a backward that leaves a bucket incomplete is an
//! error at [`DistributedDataParallel::finish_reduction`] or at the next backward.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::{ProcessGroup, ReduceOp};
use crate::autograd::{no_grad, PostAccumulateGradHook};
use crate::base::{Error, Result};
use crate::optim::grad_views;
use crate::tensor::{prim, DType, Tensor};

/// How [`DistributedDataParallel`] buckets the gradients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdpOptions {
    /// The most bytes of gradients per bucket (PyTorch's `bucket_cap_mb`, 25); a larger
    /// gradient gets a bucket of its own.
    pub bucket_cap_mb: f64,
}

impl Default for DdpOptions {
    fn default() -> Self {
        DdpOptions {
            bucket_cap_mb: 25.0,
        }
    }
}

/// One bucket's all-reduce in the last backward: which bucket, its size, and how many of
/// the parameters' gradients were not final yet when it was issued (more than 0: it was
/// issued while backward was still running).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketRecord {
    /// Bucket index (0 holds the last registered parameters).
    pub bucket: usize,
    /// Parameters in the bucket.
    pub params: usize,
    /// Bytes of gradients in the bucket.
    pub bytes: usize,
    /// Gradients of the model still to come in that backward when it was issued.
    pub grads_pending: usize,
}

struct Bucket {
    dtype: DType,
    buffer: Tensor,
    /// Parameter index and grad view, per slot.
    slots: Vec<(usize, Tensor)>,
    ready: Vec<bool>,
    n_ready: usize,
}

struct State {
    buckets: Vec<Bucket>,
    /// (bucket, slot) by parameter tensor id.
    slot_of: HashMap<usize, (usize, usize)>,
    params: usize,
    /// Gradients made final in the backward under way.
    ready: usize,
    /// The next bucket to issue (every bucket before it has been issued in this pass).
    next: usize,
    /// Whether backward reduces (false inside [`DistributedDataParallel::no_sync`]).
    sync: bool,
    /// The all-reduces of the backward under way (or the last one).
    log: Vec<BucketRecord>,
    /// Backward passes whose gradients were all reduced.
    reduced: usize,
}

struct Shared {
    pg: ProcessGroup,
    state: Mutex<State>,
}

/// The hook on each parameter; weak, so the parameters do not keep the DDP alive.
struct Hook(Weak<Shared>);

impl PostAccumulateGradHook for Hook {
    fn call(&self, leaves: &[Tensor]) -> Result<()> {
        match self.0.upgrade() {
            Some(shared) => shared.ready(leaves),
            None => Ok(()),
        }
    }
}

/// A model's parameters trained data-parallel over a [`ProcessGroup`]: gradients are
/// averaged over the ranks during backward, in buckets (see the module docs), so that
/// `optimizer.step()` on every rank applies the same update.
///
/// ```
/// # fn main() -> gradstep::Result<()> {
/// use gradstep::distributed::{DdpOptions, DistributedDataParallel, ProcessGroup};
/// use gradstep::{DType, Tensor};
/// let groups = ProcessGroup::emulated(2, std::time::Duration::from_secs(60))?;
/// let grads = std::thread::scope(|s| {
///     let ranks: Vec<_> = groups
///         .into_iter()
///         .map(|pg| {
///             s.spawn(move || -> gradstep::Result<Vec<f64>> {
///                 let x = pg.rank() as f64 + 1.0; // each rank's "data"
///                 let w = Tensor::ones(&[2], DType::F32, pg.device())?.requires_grad_(true)?;
///                 let ddp = DistributedDataParallel::new(vec![w.clone()], pg, DdpOptions::default())?;
///                 w.mul_scalar(x)?.sum_all()?.backward()?; // grad x on each rank
///                 ddp.finish_reduction()?;
///                 w.grad().unwrap().to_vec_f64()
///             })
///         })
///         .collect();
///     ranks.into_iter().map(|h| h.join().unwrap()).collect::<gradstep::Result<Vec<_>>>()
/// })?;
/// assert_eq!(grads, vec![vec![1.5, 1.5], vec![1.5, 1.5]]); // the average of 1 and 2
/// # Ok(())
/// # }
/// ```
pub struct DistributedDataParallel {
    shared: Arc<Shared>,
    hook: Arc<dyn PostAccumulateGradHook>,
    params: Vec<Tensor>,
}

/// While alive, backward passes accumulate gradients without reducing them
/// ([`DistributedDataParallel::no_sync`]).
pub struct NoSync<'a>(&'a DistributedDataParallel);

impl Drop for NoSync<'_> {
    fn drop(&mut self) {
        self.0.shared.lock().sync = true;
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hook: `leaves` got their final grads in this backward.
    fn ready(&self, leaves: &[Tensor]) -> Result<()> {
        let mut st = self.lock();
        for l in leaves {
            let Some(&(b, s)) = st.slot_of.get(&l.id()) else {
                continue;
            };
            into_view(l, &st.buckets[b].slots[s].1)?;
            if st.sync {
                st.mark(b, s)?;
            }
        }
        self.issue_ready(&mut st)
    }

    /// Issues every complete bucket from `next` on, in order.
    fn issue_ready(&self, st: &mut State) -> Result<()> {
        while st.next < st.buckets.len()
            && st.buckets[st.next].n_ready == st.buckets[st.next].slots.len()
        {
            let b = st.next;
            if b == 0 {
                st.log.clear();
            }
            let bucket = &mut st.buckets[b];
            {
                let _g = no_grad();
                self.pg.all_reduce(&bucket.buffer, ReduceOp::Avg)?;
            }
            bucket.ready.iter_mut().for_each(|r| *r = false);
            bucket.n_ready = 0;
            let record = BucketRecord {
                bucket: b,
                params: bucket.slots.len(),
                bytes: bucket.buffer.numel() * bucket.dtype.size_in_bytes(),
                grads_pending: st.params - st.ready,
            };
            st.log.push(record);
            st.next += 1;
        }
        if st.next == st.buckets.len() {
            st.next = 0;
            st.ready = 0;
            st.reduced += 1;
        }
        Ok(())
    }
}

impl State {
    fn mark(&mut self, b: usize, s: usize) -> Result<()> {
        let bucket = &mut self.buckets[b];
        if bucket.ready[s] {
            return Err(Error::invalid(
                "DistributedDataParallel",
                format!(
                    "the gradient of parameter {} became final twice before its bucket was \
                     reduced: an earlier backward left buckets unreduced (a parameter that \
                     got no gradient?), or backward ran twice without a step",
                    bucket.slots[s].0
                ),
            ));
        }
        bucket.ready[s] = true;
        bucket.n_ready += 1;
        self.ready += 1;
        Ok(())
    }
}

/// Makes `view` the `.grad` of `p`: copies a grad that backward made elsewhere into it.
fn into_view(p: &Tensor, view: &Tensor) -> Result<()> {
    match p.grad() {
        Some(g) if g.shares_storage(view) && g.layout() == view.layout() => Ok(()),
        Some(g) => {
            prim::copy_(view, &g)?;
            p.set_grad(Some(view.clone()))
        }
        None => {
            prim::zero_(view)?;
            p.set_grad(Some(view.clone()))
        }
    }
}

/// Buckets of at most `cap` bytes over `params` in reverse order, one dtype per bucket.
fn plan(params: &[Tensor], cap: usize) -> Vec<(DType, Vec<usize>)> {
    let mut open: Vec<(DType, Vec<usize>, usize)> = Vec::new();
    let mut done = Vec::new();
    for (i, p) in params.iter().enumerate().rev() {
        let bytes = p.numel() * p.dtype().size_in_bytes();
        let at = open.iter().position(|(d, _, _)| *d == p.dtype());
        if let Some(k) = at {
            if open[k].2 > 0 && open[k].2 + bytes > cap {
                let (d, idx, _) = open.remove(k);
                done.push((d, idx));
            }
        }
        match open.iter_mut().find(|(d, _, _)| *d == p.dtype()) {
            Some((_, idx, total)) => {
                idx.push(i);
                *total += bytes;
            }
            None => open.push((p.dtype(), vec![i], bytes)),
        }
    }
    done.extend(open.into_iter().map(|(d, idx, _)| (d, idx)));
    // Issue order: the bucket whose first parameter comes first in backward goes first.
    done.sort_by_key(|(_, idx)| std::cmp::Reverse(idx[0]));
    done
}

impl DistributedDataParallel {
    /// Wraps the parameters of a model (in registration order) on `pg`'s device:
    /// broadcasts them from rank 0, makes the buckets (each param's `.grad` becomes its
    /// view, keeping a grad it already has) and hooks them. Errors: a parameter on another
    /// device or that does not require grad, the same tensor twice, a bucket cap that is
    /// not a positive number, or a collective that fails.
    pub fn new(params: Vec<Tensor>, pg: ProcessGroup, opts: DdpOptions) -> Result<Self> {
        let what = "DistributedDataParallel";
        if !(opts.bucket_cap_mb.is_finite() && opts.bucket_cap_mb > 0.0) {
            return Err(Error::invalid(
                what,
                format!(
                    "bucket_cap_mb must be a number > 0, got {}",
                    opts.bucket_cap_mb
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in params.iter().enumerate() {
            if p.device() != pg.device() {
                return Err(Error::invalid(
                    what,
                    format!(
                        "parameter {i} is on {}, the rank's device is {}",
                        p.device(),
                        pg.device()
                    ),
                ));
            }
            if !p.requires_grad() || !p.dtype().is_float() {
                return Err(Error::invalid(
                    what,
                    format!("parameter {i} is not a floating-point tensor that requires grad"),
                ));
            }
            if !seen.insert(p.id()) {
                return Err(Error::invalid(
                    what,
                    format!("parameter {i} is listed twice"),
                ));
            }
        }
        {
            let _g = no_grad();
            for p in &params {
                pg.broadcast(p, 0)?;
            }
        }
        let cap = (opts.bucket_cap_mb * 1024.0 * 1024.0) as usize;
        let mut buckets = Vec::new();
        let mut slot_of = HashMap::new();
        for (b, (dtype, idx)) in plan(&params, cap.max(1)).into_iter().enumerate() {
            let members: Vec<&Tensor> = idx.iter().map(|&i| &params[i]).collect();
            let (buffer, views) = grad_views(&members, dtype, pg.device())?;
            let slots: Vec<(usize, Tensor)> = idx.into_iter().zip(views).collect();
            for (s, (i, _)) in slots.iter().enumerate() {
                slot_of.insert(params[*i].id(), (b, s));
            }
            buckets.push(Bucket {
                dtype,
                buffer,
                ready: vec![false; slots.len()],
                n_ready: 0,
                slots,
            });
        }
        let shared = Arc::new(Shared {
            pg,
            state: Mutex::new(State {
                buckets,
                slot_of,
                params: params.len(),
                ready: 0,
                next: 0,
                sync: true,
                log: Vec::new(),
                reduced: 0,
            }),
        });
        let hook: Arc<dyn PostAccumulateGradHook> = Arc::new(Hook(Arc::downgrade(&shared)));
        for p in &params {
            p.register_post_accumulate_grad_hook(hook.clone())?;
        }
        Ok(DistributedDataParallel {
            shared,
            hook,
            params,
        })
    }

    /// The process group.
    pub fn process_group(&self) -> &ProcessGroup {
        &self.shared.pg
    }

    /// The parameters, in registration order.
    pub fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    /// Parameter indices of each bucket, in issue order.
    pub fn buckets(&self) -> Vec<Vec<usize>> {
        let st = self.shared.lock();
        st.buckets
            .iter()
            .map(|b| b.slots.iter().map(|(i, _)| *i).collect())
            .collect()
    }

    /// The bucket all-reduces of the last backward that reduced, in issue order.
    pub fn bucket_log(&self) -> Vec<BucketRecord> {
        self.shared.lock().log.clone()
    }

    /// Backward passes whose gradients were all reduced so far.
    pub fn reductions(&self) -> usize {
        self.shared.lock().reduced
    }

    /// Backward passes run while the guard lives accumulate gradients locally, without
    /// reducing them (gradient accumulation); the first backward after it reduces the
    /// accumulated sums (PyTorch's `no_sync`).
    pub fn no_sync(&self) -> NoSync<'_> {
        self.shared.lock().sync = false;
        NoSync(self)
    }

    /// Checks that the last backward reduced every bucket: an error names the parameters
    /// that got no gradient. The all-reduces are queued on the device's stream, so the
    /// step that follows runs after them, with no host synchronisation. Call it between
    /// backward and `step`.
    pub fn finish_reduction(&self) -> Result<()> {
        let st = self.shared.lock();
        if st.next != 0 || st.ready != 0 {
            let waiting: Vec<usize> = st
                .buckets
                .iter()
                .flat_map(|b| b.slots.iter().zip(&b.ready))
                .filter(|(_, r)| !**r)
                .map(|((i, _), _)| *i)
                .collect();
            return Err(Error::invalid(
                "DistributedDataParallel",
                format!(
                    "backward left buckets unreduced: parameters {waiting:?} got no gradient \
                     (every parameter must get one in every backward)"
                ),
            ));
        }
        // Every collective was queued on the device's own stream (the emulator's complete
        // on return): the step follows them in stream order, with nothing to wait for.
        Ok(())
    }

    /// Reduces without a backward pass: for a rank whose shard of a batch is empty, which
    /// contributes its current gradients (zero where it has none) to the other ranks'
    /// reduction so that every rank issues the same collectives.
    pub fn reduce_without_backward(&self) -> Result<()> {
        let mut st = self.shared.lock();
        if !st.sync {
            return Ok(());
        }
        let order: Vec<(usize, usize, usize)> = st
            .buckets
            .iter()
            .enumerate()
            .flat_map(|(b, bk)| {
                bk.slots
                    .iter()
                    .enumerate()
                    .filter(|(s, _)| !bk.ready[*s])
                    .map(move |(s, (i, _))| (b, s, *i))
            })
            .collect();
        for (b, s, i) in order {
            into_view(&self.params[i], &st.buckets[b].slots[s].1)?;
            st.mark(b, s)?;
        }
        self.shared.issue_ready(&mut st)
    }
}

impl Drop for DistributedDataParallel {
    fn drop(&mut self) {
        for p in &self.params {
            p.remove_post_accumulate_grad_hook(&self.hook);
        }
    }
}

impl std::fmt::Debug for DistributedDataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("DistributedDataParallel")
            .field("group", &self.shared.pg)
            .field("params", &self.params.len())
            .field("buckets", &st.buckets.len())
            .field("reductions", &st.reduced)
            .finish()
    }
}
