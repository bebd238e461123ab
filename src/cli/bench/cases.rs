//! The measured operations: zeroing the grads, one optimizer step, one quickstart training
//! step, and a large copy. Each case is built once (untimed) and then run many times;
//! `gradstep bench` and the criterion benches share them (this file uses only the public
//! API, through `super::api`, so the benches include it as it is).

use super::api::graph::StepGraph;
use super::api::nn::{CrossEntropyLoss, Module, Sequential};
use super::api::optim::{
    zero_grad_params, Adam, AdamConfig, AdamW, GradArena, Impl, Optimizer, SgdConfig, ZeroMode, SGD,
};
use super::api::train::{
    quickstart_model, QUICKSTART_CLASSES, QUICKSTART_HIDDEN, QUICKSTART_INPUTS,
};
use super::api::{DType, Device, Error, Result, Rng, Tensor};

/// How the grads are cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ZeroImpl {
    /// `zero_grad(false)` with one memset per tensor ([`ZeroMode::PerTensor`]).
    PerTensor,
    /// `zero_grad(false)` with one multi-tensor launch per (device, dtype) group
    /// (torch's `_foreach_zero_`).
    Foreach,
    /// `zero_grad(false)` with the grads in a [`GradArena`]: one memset per group.
    Arena,
    /// `zero_grad(true)`: the grads become None (host bookkeeping only; the grads are
    /// kept alive by the case, so nothing is freed).
    SetToNone,
}

impl ZeroImpl {
    /// Every implementation, in table order.
    pub const ALL: [ZeroImpl; 4] = [
        ZeroImpl::PerTensor,
        ZeroImpl::Foreach,
        ZeroImpl::Arena,
        ZeroImpl::SetToNone,
    ];

    /// The name in tables and JSON (`per_tensor`, `foreach`, `arena`, `set_to_none`).
    pub fn name(self) -> &'static str {
        match self {
            ZeroImpl::PerTensor => "per_tensor",
            ZeroImpl::Foreach => "foreach",
            ZeroImpl::Arena => "arena",
            ZeroImpl::SetToNone => "set_to_none",
        }
    }
}

/// One zeroing case over a list of parameters that all have grads.
pub struct ZeroCase {
    params: Vec<Tensor>,
    grads: Vec<Tensor>,
    imp: ZeroImpl,
    arena: Option<GradArena>,
}

impl ZeroCase {
    /// A case over `params` (each must have a grad). [`ZeroImpl::Arena`] moves the grads
    /// of `params` into a new arena (their `.grad` become views of it), so build it after
    /// the other cases over the same parameters.
    pub fn new(params: &[Tensor], imp: ZeroImpl) -> Result<ZeroCase> {
        let arena = match imp {
            ZeroImpl::Arena => Some(GradArena::new(params)?),
            _ => None,
        };
        let grads = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.grad()
                    .ok_or_else(|| Error::invalid("bench", format!("parameter {i} has no grad")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ZeroCase {
            params: params.to_vec(),
            grads,
            imp,
            arena,
        })
    }

    /// Whether [`ZeroCase::setup`] must run before each call.
    pub fn needs_setup(&self) -> bool {
        self.imp == ZeroImpl::SetToNone
    }

    /// Gives every parameter its grad back (after a `set_to_none` call).
    pub fn setup(&self) -> Result<()> {
        if self.needs_setup() {
            for (p, g) in self.params.iter().zip(&self.grads) {
                p.set_grad(Some(g.clone()))?;
            }
        }
        Ok(())
    }

    /// One `zero_grad`.
    pub fn run(&self) -> Result<()> {
        let mode = match self.imp {
            ZeroImpl::PerTensor => ZeroMode::PerTensor,
            _ => ZeroMode::MultiTensor,
        };
        zero_grad_params(
            &self.params,
            self.imp == ZeroImpl::SetToNone,
            mode,
            self.arena.as_ref(),
        )
    }

    /// Bytes that must move per call: one write per element (none for `set_to_none`).
    pub fn bytes(&self) -> u64 {
        match self.imp {
            ZeroImpl::SetToNone => 0,
            _ => self
                .grads
                .iter()
                .map(|g| (g.numel() * g.dtype().size_in_bytes()) as u64)
                .sum(),
        }
    }
}

/// The optimizers measured, with the torch script's hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OptName {
    /// SGD, lr 1e-3, momentum 0.9.
    Sgd,
    /// Adam, lr 1e-3, PyTorch's defaults otherwise.
    Adam,
    /// AdamW, lr 1e-3, PyTorch's defaults otherwise (weight decay 0.01).
    AdamW,
}

impl OptName {
    /// Every optimizer, in table order.
    pub const ALL: [OptName; 3] = [OptName::Sgd, OptName::Adam, OptName::AdamW];

    /// `sgd`, `adam` or `adamw`.
    pub fn name(self) -> &'static str {
        match self {
            OptName::Sgd => "sgd",
            OptName::Adam => "adam",
            OptName::AdamW => "adamw",
        }
    }

    /// Parses [`OptName::name`].
    pub fn parse(s: &str) -> Result<OptName> {
        OptName::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "bench",
                    format!("unknown optimizer '{s}' (expected sgd, adam or adamw)"),
                )
            })
    }

    /// Elements read plus written per parameter element: SGD-momentum 5 (p, g, buf read;
    /// p, buf written), Adam and AdamW 7 (p, g, m, v read; p, m, v written).
    pub fn elements_moved(self) -> u64 {
        match self {
            OptName::Sgd => 5,
            OptName::Adam | OptName::AdamW => 7,
        }
    }

    /// The optimizer over `params`.
    pub fn build(self, params: Vec<Tensor>, imp: Impl) -> Result<Box<dyn Optimizer>> {
        let mut opt: Box<dyn Optimizer> = match self {
            OptName::Sgd => Box::new(SGD::new(params, SgdConfig::new(1e-3).momentum(0.9))?),
            OptName::Adam => Box::new(Adam::new(params, AdamConfig::new(1e-3))?),
            OptName::AdamW => Box::new(AdamW::new(params, AdamConfig::adamw(1e-3))?),
        };
        opt.set_impl(imp);
        Ok(opt)
    }
}

/// The name of a step implementation in tables and JSON (`forloop`, `foreach`, `fused`).
pub fn impl_name(imp: Impl) -> &'static str {
    match imp {
        Impl::ForLoop => "forloop",
        Impl::Foreach => "foreach",
        Impl::Fused => "fused",
    }
}

/// Every step implementation, in table order.
pub const IMPLS: [Impl; 3] = [Impl::ForLoop, Impl::Foreach, Impl::Fused];

/// One optimizer-step case.
pub struct StepCase {
    opt: Box<dyn Optimizer>,
    bytes: u64,
}

impl StepCase {
    /// The optimizer `opt` with implementation `imp` over `params` (each with a grad).
    pub fn new(params: &[Tensor], opt: OptName, imp: Impl) -> Result<StepCase> {
        let bytes = params
            .iter()
            .map(|p| (p.numel() * p.dtype().size_in_bytes()) as u64)
            .sum::<u64>()
            * opt.elements_moved();
        Ok(StepCase {
            opt: opt.build(params.to_vec(), imp)?,
            bytes,
        })
    }

    /// One `step`.
    pub fn run(&mut self) -> Result<()> {
        self.opt.step()
    }

    /// Bytes that must move per step.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Side of the quickstart's square images.
const QUICKSTART_SIDE: usize = 28;

/// One step of PyTorch's quickstart on a fixed synthetic batch: forward, cross-entropy
/// loss, `zero_grad()` (set_to_none), backward, SGD step (lr 1e-3, the fused
/// implementation); eagerly, or replayed from a captured graph.
pub struct TrainCase {
    model: Sequential,
    loss: CrossEntropyLoss,
    opt: Box<dyn Optimizer>,
    inputs: Tensor,
    targets: Tensor,
    graph: Option<StepGraph>,
}

impl TrainCase {
    /// The quickstart model and a batch of `batch` random images and labels.
    pub fn new(device: Device, dtype: DType, batch: usize, seed: u64) -> Result<TrainCase> {
        if batch == 0 {
            return Err(Error::invalid(
                "bench",
                "the training batch must hold at least one sample",
            ));
        }
        debug_assert_eq!(QUICKSTART_SIDE * QUICKSTART_SIDE, QUICKSTART_INPUTS);
        let mut rng = Rng::new(seed);
        let model = quickstart_model(&mut rng, dtype, device)?;
        let inputs = Tensor::rand_with(
            &[batch, 1, QUICKSTART_SIDE, QUICKSTART_SIDE],
            &mut rng,
            0.0,
            1.0,
            dtype,
            device,
        )?;
        let labels: Vec<i64> = (0..batch)
            .map(|_| rng.below(QUICKSTART_CLASSES as u64) as i64)
            .collect();
        let targets = Tensor::from_vec(labels, &[batch], device)?;
        // The quickstart's optimizer: plain SGD (no momentum), lr 1e-3.
        let mut opt: Box<dyn Optimizer> =
            Box::new(SGD::new(model.parameters(), SgdConfig::new(1e-3))?);
        opt.set_impl(Impl::Fused);
        Ok(TrainCase {
            model,
            loss: CrossEntropyLoss::new(),
            opt,
            inputs,
            targets,
            graph: None,
        })
    }

    /// From now on [`Self::run`] replays the step: one eager warm-up step, then the
    /// capture (a GPU device).
    pub fn capture(&mut self) -> Result<()> {
        self.eager_step()?;
        let (inputs, targets) = (self.inputs.clone(), self.targets.clone());
        let (graph, _loss) =
            StepGraph::capture(inputs.device(), &[&inputs, &targets], || self.eager_step())?;
        self.graph = Some(graph);
        Ok(())
    }

    fn eager_step(&mut self) -> Result<()> {
        let pred = self.model.forward(&self.inputs)?;
        let loss = self.loss.forward(&pred, &self.targets)?;
        self.opt.zero_grad(true)?;
        loss.backward()?;
        self.opt.step()
    }

    /// One training step.
    pub fn run(&mut self) -> Result<()> {
        match &self.graph {
            Some(g) => g.replay(),
            None => self.eager_step(),
        }
    }

    /// The model's parameters.
    pub fn parameters(&self) -> Vec<Tensor> {
        self.model.parameters()
    }

    /// `(tensors, elements)` of the model's parameters.
    pub fn size(&self) -> (usize, usize) {
        let ps = self.model.parameters();
        (ps.len(), ps.iter().map(Tensor::numel).sum())
    }
}

/// One of the quickstart's matrix products, its operands laid out as training lays them
/// out (the weight `[out, in]` row-major, transposed views where the layer takes them).
pub struct MatmulCase {
    /// The layer and the product: `fc1.forward`, `fc2.grad_input`, `fc3.grad_weight`.
    pub name: String,
    /// `(m, k, n)` of the product.
    pub shape: (usize, usize, usize),
    a: Tensor,
    b: Tensor,
}

impl MatmulCase {
    /// The nine products of the quickstart's three linear layers at batch `batch`: for
    /// each layer `x [batch, in] @ W^T` (forward), `g [batch, out] @ W` (the input's
    /// gradient; training skips it for the first layer) and `g^T @ x` (the weight's).
    pub fn quickstart(device: Device, dtype: DType, batch: usize) -> Result<Vec<MatmulCase>> {
        if batch == 0 {
            return Err(Error::invalid(
                "bench",
                "the batch must hold at least one sample",
            ));
        }
        let layers = [
            (QUICKSTART_INPUTS, QUICKSTART_HIDDEN),
            (QUICKSTART_HIDDEN, QUICKSTART_HIDDEN),
            (QUICKSTART_HIDDEN, QUICKSTART_CLASSES),
        ];
        let mut cases = Vec::new();
        for (i, &(inp, out)) in layers.iter().enumerate() {
            let seed = 10 * i as u64;
            let x = Tensor::rand(&[batch, inp], seed, dtype, device)?;
            let w = Tensor::rand(&[out, inp], seed + 1, dtype, device)?;
            let g = Tensor::rand(&[batch, out], seed + 2, dtype, device)?;
            let layer = format!("fc{}", i + 1);
            cases.push(MatmulCase {
                name: format!("{layer}.forward"),
                shape: (batch, inp, out),
                a: x.clone(),
                b: w.t()?,
            });
            cases.push(MatmulCase {
                name: format!("{layer}.grad_input"),
                shape: (batch, out, inp),
                a: g.clone(),
                b: w,
            });
            cases.push(MatmulCase {
                name: format!("{layer}.grad_weight"),
                shape: (out, batch, inp),
                a: g.t()?,
                b: x,
            });
        }
        Ok(cases)
    }

    /// Floating-point operations of one product (`2 m k n`).
    pub fn flops(&self) -> u64 {
        let (m, k, n) = self.shape;
        2 * (m * k * n) as u64
    }

    /// One product.
    pub fn run(&self) -> Result<()> {
        self.a.matmul(&self.b).map(drop)
    }
}

/// A large copy between two buffers of `bytes` bytes each (f32), the ceiling for
/// memory-bound kernels: time it and count `2 * bytes` (read + write).
pub struct CopyCase {
    src: Tensor,
    dst: Tensor,
}

impl CopyCase {
    /// Two buffers of `bytes` bytes (rounded down to whole f32 elements, at least one).
    pub fn new(device: Device, bytes: usize) -> Result<CopyCase> {
        let n = (bytes / 4).max(1);
        Ok(CopyCase {
            src: Tensor::rand(&[n], 7, DType::F32, device)?,
            dst: Tensor::zeros(&[n], DType::F32, device)?,
        })
    }

    /// One copy.
    pub fn run(&self) -> Result<()> {
        self.dst.copy_(&self.src)
    }

    /// Bytes read plus written.
    pub fn bytes(&self) -> u64 {
        2 * 4 * self.src.numel() as u64
    }
}
