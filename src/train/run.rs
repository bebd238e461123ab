//! The whole `gradstep train` and `gradstep eval` runs, as library calls.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::base::{Error, Result};
use crate::data::{DataLoader, Dataset, MnistDataset, Split};
use crate::distributed::{DdpOptions, DistributedDataParallel, ProcessGroup};
use crate::nn::{CrossEntropyLoss, Module, Sequential};
use crate::optim::{GradScaler, Impl, LrScheduler};
use crate::tensor::{DType, Device, Rng, Tensor};
use crate::train::checkpoint::{Checkpoint, CheckpointMeta, History, RunSettings};
use crate::train::loops::{self, GraphedStep, LoopOptions, Report, Trainee};
use crate::train::model::{quickstart_model, OptimizerKind, QUICKSTART_INPUTS};
use crate::train::pyfmt;
use crate::train::schedule::LrSchedule;

/// Everything `gradstep train` takes. [`Default`] is the quickstart: SGD with lr 1e-3,
/// batch 64, 5 epochs, shuffled, on the CPU.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Total number of epochs (a resumed run continues up to this count).
    pub epochs: usize,
    /// Samples per batch (training and test).
    pub batch_size: usize,
    /// Learning rate (the base lr of a schedule).
    pub lr: f64,
    /// SGD's momentum (0: none, as in the quickstart).
    pub momentum: f64,
    /// A learning-rate schedule stepped after every optimizer step.
    pub lr_schedule: Option<LrSchedule>,
    /// Capture the training step as a graph after a warm-up step and replay it per batch
    /// (GPU devices; see [`crate::train::train_loop`]).
    pub graph: bool,
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// How `step` is computed.
    pub imp: Impl,
    /// Where the model trains.
    pub device: Device,
    /// Parameter dtype (F16 means mixed precision).
    pub dtype: DType,
    /// Mixed precision: the GradScaler's initial scale (PyTorch's default 65536).
    pub init_scale: f64,
    /// Seeds the initialisation and the shuffling.
    pub seed: u64,
    /// Reshuffle the training set every epoch.
    pub shuffle: bool,
    /// The loop's zero_grad / step schedule and logging.
    pub loop_options: LoopOptions,
    /// Write a checkpoint here after every epoch.
    pub save: Option<PathBuf>,
    /// Continue from this checkpoint.
    pub resume: Option<PathBuf>,
    /// A progress bar instead of the loss lines.
    pub progress: bool,
    /// Directory of the MNIST-style IDX files.
    pub data_dir: PathBuf,
    /// Use only the first N training samples.
    pub train_samples: Option<usize>,
    /// Use only the first N test samples.
    pub test_samples: Option<usize>,
    /// Which settings override a resumed checkpoint's (see [`ResumeOverrides`]).
    pub resume_overrides: ResumeOverrides,
    /// Data-parallel ranks (1: one device). With N > 1 on `emu`, N emulated devices train
    /// in this process, one thread each, with [`DistributedDataParallel`]; `batch_size`
    /// is per rank, and the run sees the samples of a one-rank run with batch
    /// N × `batch_size` in the same order. Rank 0 prints, evaluates and saves.
    pub world_size: usize,
    /// Train through [`DistributedDataParallel`] even with one rank (to measure its
    /// overhead, or run NCCL with one GPU); always on when `world_size` > 1.
    pub ddp: bool,
}

/// The rule for a resumed run whose settings disagree with its checkpoint (PyTorch's:
/// the loaded state wins unless the setting is given explicitly). A `false` field takes
/// the checkpoint's value; a `true` one keeps the configured value, and the run says so
/// on stderr. `gradstep train` sets a field when its flag is on the command line.
///
/// Overriding the optimizer keeps the parameters and starts the optimizer afresh (its
/// state does not fit another optimizer); overriding the dtype casts the parameters and
/// starts a fresh GradScaler (f16) or drops it (f32); overriding the batch size keeps the
/// shuffling generator; overriding the lr sets every group's lr (or a schedule's base).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResumeOverrides {
    /// `lr` overrides the checkpoint's learning rate.
    pub lr: bool,
    /// `optimizer` overrides the checkpoint's optimizer.
    pub optimizer: bool,
    /// `dtype` overrides the checkpoint's parameter dtype.
    pub dtype: bool,
    /// `batch_size` overrides the checkpoint's batch size.
    pub batch_size: bool,
}

/// What a resumed run takes from its checkpoint: the config it runs with, whether the
/// optimizer state and the scaler are restored, and the notes for stderr.
struct Resumed {
    cfg: TrainConfig,
    optimizer_state: bool,
    scaler_state: bool,
    set_lr: bool,
    notes: Vec<String>,
}

/// Applies [`ResumeOverrides`] to `cfg` for a checkpoint with `meta`.
fn resolve_resume(cfg: &TrainConfig, meta: &CheckpointMeta, path: &Path) -> Result<Resumed> {
    let mut r = Resumed {
        cfg: cfg.clone(),
        optimizer_state: true,
        scaler_state: true,
        set_lr: false,
        notes: Vec::new(),
    };
    let o = cfg.resume_overrides;
    let from = path.display();
    let saved_opt = OptimizerKind::parse(&meta.optimizer).map_err(|e| Error::Format {
        path: from.to_string(),
        msg: format!("optimizer: {e}"),
    })?;
    if saved_opt != cfg.optimizer {
        if o.optimizer {
            r.optimizer_state = false;
            r.notes.push(format!(
                "--optimizer {} overrides {}'s {}: the parameters are resumed, the optimizer starts afresh",
                cfg.optimizer.name(), from, saved_opt.name()
            ));
        } else {
            r.cfg.optimizer = saved_opt;
            r.notes.push(format!(
                "resuming with {from}'s optimizer {}",
                saved_opt.name()
            ));
        }
    }
    let saved_dtype = match &meta.settings {
        // Checked to be f32, f16 or bf16 when the checkpoint was loaded.
        Some(s) => DType::parse(&s.dtype).unwrap_or(DType::F32),
        None if meta.scaler.is_some() => DType::F16,
        None => DType::F32,
    };
    if saved_dtype != cfg.dtype {
        if o.dtype {
            r.scaler_state = false;
            r.notes.push(format!(
                "--dtype {} overrides {}'s {}: the parameters are cast{}",
                cfg.dtype,
                from,
                saved_dtype,
                if cfg.dtype == DType::F16 {
                    ", the GradScaler starts afresh"
                } else {
                    ", the GradScaler is dropped"
                }
            ));
        } else {
            r.cfg.dtype = saved_dtype;
            r.notes
                .push(format!("resuming with {from}'s dtype {}", saved_dtype));
        }
    }
    if let Some(s) = &meta.settings {
        if s.batch_size != cfg.batch_size {
            if o.batch_size {
                r.notes.push(format!(
                    "--batch-size {} overrides {}'s {}",
                    cfg.batch_size, from, s.batch_size
                ));
            } else {
                r.cfg.batch_size = s.batch_size;
                r.notes.push(format!(
                    "resuming with {from}'s batch size {}",
                    s.batch_size
                ));
            }
        }
    }
    // The base lr: saved in the settings, else the first group's (older checkpoints).
    let saved_lr = match &meta.settings {
        Some(s) => Some(s.lr),
        None => meta
            .optimizer_state
            .param_groups
            .first()
            .and_then(|g| g.hyper.get("lr"))
            .and_then(|v| v.as_f64()),
    };
    if let Some(lr) = saved_lr.filter(|&lr| lr != cfg.lr) {
        if o.lr {
            r.set_lr = true;
            r.notes
                .push(format!("--lr {} overrides {}'s {lr}", cfg.lr, from));
        } else {
            r.cfg.lr = lr;
            r.notes.push(format!("resuming with {from}'s lr {lr}"));
        }
    }
    Ok(r)
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 5,
            batch_size: 64,
            lr: 1e-3,
            momentum: 0.0,
            lr_schedule: None,
            graph: false,
            optimizer: OptimizerKind::Sgd,
            imp: Impl::default(),
            device: Device::Cpu,
            dtype: DType::F32,
            init_scale: 65536.0,
            seed: 0,
            shuffle: true,
            loop_options: LoopOptions::default(),
            save: None,
            resume: None,
            progress: false,
            data_dir: crate::data::default_data_dir(),
            train_samples: None,
            test_samples: None,
            resume_overrides: ResumeOverrides::default(),
            world_size: 1,
            ddp: false,
        }
    }
}

/// What a training run did.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// The device it ran on.
    pub device: Device,
    /// Losses and accuracies, including those of the run it resumed.
    pub history: History,
    /// Epochs trained by this run (not counting resumed ones).
    pub epochs_run: usize,
    /// Batches trained by this run.
    pub batches: usize,
    /// Of those, the steps replayed from the captured graph (`graph` runs).
    pub replayed_steps: usize,
    /// Seconds spent in the training loops (not in testing).
    pub train_seconds: f64,
    /// The trained parameters by name.
    pub parameters: Vec<(String, Tensor)>,
    /// Mixed precision: the GradScaler's scale at the end (below the initial scale after
    /// a skipped step, as long as fewer steps than its growth interval, 2000, ran).
    pub grad_scale: Option<f64>,
}

impl TrainReport {
    /// Training batches per second.
    pub fn batches_per_second(&self) -> f64 {
        if self.train_seconds > 0.0 {
            self.batches as f64 / self.train_seconds
        } else {
            0.0
        }
    }
}

/// Loads a split, keeping only the first `limit` samples when given.
fn load_split(dir: &Path, split: Split, limit: Option<usize>) -> Result<Arc<dyn Dataset>> {
    let d = MnistDataset::load(dir, split)?;
    let d = match limit {
        Some(n) => d.take(n),
        None => d,
    };
    if d.len() == 0 {
        let (which, flag) = match split {
            Split::Train => ("training", "train"),
            Split::Test => ("test", "test"),
        };
        return Err(Error::invalid(
            "train",
            format!(
                "the {which} set in {} is empty (check --{flag}-samples and the data files)",
                dir.display()
            ),
        ));
    }
    Ok(Arc::new(d))
}

/// Checks that the data set's samples fit the quickstart model.
fn check_input_size(data: &dyn Dataset, dir: &Path) -> Result<()> {
    let shape = data.input_shape();
    let features: usize = shape.iter().product();
    if features != QUICKSTART_INPUTS {
        return Err(Error::Format {
            path: dir.display().to_string(),
            msg: format!(
                "images of shape {shape:?} ({features} values) do not fit the model, which takes 1x28x28 ({QUICKSTART_INPUTS})"
            ),
        });
    }
    Ok(())
}

/// Checks the device is usable before any work (a missing driver or GPU is an error).
fn open_device(device: Device) -> Result<()> {
    if device.is_gpu() {
        device.synchronize()?;
    }
    Ok(())
}

/// Runs the quickstart: prints `Using {device} device`, then for each epoch the header,
/// the loss lines and the test report, then `Done!`, exactly as PyTorch's quickstart does.
///
/// On the CPU, call it on a rayon worker, best through
/// [`with_spinning_workers`](crate::train::with_spinning_workers) as
/// `gradstep train` does: parallel ops then start on the calling thread instead of
/// waking the pool and waiting (about 20% faster on 2 cores), and the other workers
/// poll for work between ops instead of sleeping (the step 1.25x faster again).
///
/// With `resume`, settings that disagree with the checkpoint follow
/// [`ResumeOverrides`]; each disagreement is a `note:` line on stderr.
pub fn train(cfg: &TrainConfig, out: &mut dyn Write) -> Result<TrainReport> {
    let resume = cfg
        .resume
        .as_deref()
        .map(|p| Checkpoint::load(p).map(|c| (p, c)))
        .transpose()?;
    let resumed = match &resume {
        Some((path, ckpt)) => Some(resolve_resume(cfg, ckpt.training_meta(path)?, path)?),
        None => None,
    };
    if let Some(r) = &resumed {
        for n in &r.notes {
            eprintln!("note: {n}");
        }
    }
    let cfg = resumed.as_ref().map_or(cfg, |r| &r.cfg);
    if !matches!(cfg.dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::invalid(
            "train",
            format!("dtype {} is not supported (f32, f16 or bf16)", cfg.dtype),
        ));
    }
    if cfg.epochs == 0 {
        return Err(Error::invalid("train", "epochs must be at least 1"));
    }
    if !(1..=MAX_EMULATED_RANKS).contains(&cfg.world_size) {
        return Err(Error::invalid(
            "train",
            format!(
                "--world-size (world_size) must be between 1 and {MAX_EMULATED_RANKS}, got {}",
                cfg.world_size
            ),
        ));
    }
    cfg.loop_options.validate()?;
    if cfg.graph && !cfg.device.is_gpu() {
        return Err(Error::invalid(
            "train",
            format!(
                "--graph captures the step as a GPU graph: {} has none (use cuda or emu)",
                cfg.device
            ),
        ));
    }
    if let Some(p) = &cfg.save {
        crate::io::check_output(p)?;
    }
    let train_data = load_split(&cfg.data_dir, Split::Train, cfg.train_samples)?;
    let test_data = load_split(&cfg.data_dir, Split::Test, cfg.test_samples)?;
    check_input_size(train_data.as_ref(), &cfg.data_dir)?;
    check_input_size(test_data.as_ref(), &cfg.data_dir)?;
    open_device(cfg.device)?;
    let data = (train_data, test_data);
    let resume = resume.as_ref().map(|(p, c)| (*p, c));
    #[cfg(feature = "nccl")]
    if let Some(pg) = torchrun_group(cfg)? {
        let quiet = &mut std::io::sink();
        let out = if pg.rank() == 0 { out } else { quiet };
        return train_rank(cfg, resume, resumed.as_ref(), &data, Some(pg), out);
    }
    if cfg.world_size <= 1 && !cfg.ddp {
        return train_rank(cfg, resume, resumed.as_ref(), &data, None, out);
    }
    let groups = process_groups(cfg)?;
    std::thread::scope(|s| {
        let mut groups = groups.into_iter();
        let first = groups.next();
        let others: Vec<_> = groups
            .map(|pg| {
                let data = &data;
                let resumed = resumed.as_ref();
                s.spawn(move || {
                    train_rank(cfg, resume, resumed, data, Some(pg), &mut std::io::sink())
                })
            })
            .collect();
        let mine = train_rank(cfg, resume, resumed.as_ref(), &data, first, out);
        let theirs = others.into_iter().map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::invalid("train", "a rank's thread panicked")))
        });
        first_cause(std::iter::once(mine).chain(theirs).collect())
    })
}

/// The most ranks a run takes (each emulated rank is a thread and a device).
const MAX_EMULATED_RANKS: usize = 64;

/// This process's rank when `torchrun` (or the like) started it on a CUDA device: the
/// `WORLD_SIZE`/`RANK` variables are set; `None` otherwise.
#[cfg(feature = "nccl")]
fn torchrun_group(cfg: &TrainConfig) -> Result<Option<ProcessGroup>> {
    if !matches!(cfg.device, Device::Cuda(_)) || std::env::var_os("WORLD_SIZE").is_none() {
        return Ok(None);
    }
    if cfg.world_size > 1 {
        return Err(Error::invalid(
            "train",
            "--world-size launches ranks in this process; WORLD_SIZE says a launcher \
             started this one: use one or the other",
        ));
    }
    ProcessGroup::nccl_from_env(crate::distributed::timeout_from_env()?)
}

/// The process group of each rank of a `world_size` > 1 run.
fn process_groups(cfg: &TrainConfig) -> Result<Vec<ProcessGroup>> {
    match cfg.device {
        #[cfg(feature = "emu")]
        Device::Emu(0) => {
            ProcessGroup::emulated(cfg.world_size, crate::distributed::timeout_from_env()?)
        }
        #[cfg(feature = "nccl")]
        Device::Cuda(0) => ProcessGroup::nccl_local(&(0..cfg.world_size).collect::<Vec<_>>()),
        d => Err(Error::invalid(
            "train",
            format!(
                "--world-size {} (or --ddp) needs emulated ranks (--device emu), or NCCL \
                 on cuda (the `nccl` feature); {d} has neither in this build",
                cfg.world_size
            ),
        )),
    }
}

/// Rank 0's report, or the error that caused the others: a rank that failed by itself
/// rather than one that failed because another left.
fn first_cause(results: Vec<Result<TrainReport>>) -> Result<TrainReport> {
    let is_echo = |e: &Error| {
        let m = e.to_string();
        m.contains("left the group") || m.contains("did not join")
    };
    let mut echo = None;
    let mut report = None;
    for r in results {
        match r {
            Ok(rep) => report = report.or(Some(rep)),
            Err(e) if is_echo(&e) => echo = echo.or(Some(e)),
            Err(e) => return Err(e),
        }
    }
    match (echo, report) {
        (Some(e), _) => Err(e),
        (None, Some(r)) => Ok(r),
        (None, None) => Err(Error::invalid("train", "no rank ran")),
    }
}

/// One rank's run (the whole run when `pg` is None).
fn train_rank(
    cfg: &TrainConfig,
    resume: Option<(&Path, &Checkpoint)>,
    resumed: Option<&Resumed>,
    (train_data, test_data): &(Arc<dyn Dataset>, Arc<dyn Dataset>),
    pg: Option<ProcessGroup>,
    out: &mut dyn Write,
) -> Result<TrainReport> {
    let rank = pg.as_ref().map_or(0, ProcessGroup::rank);
    let device = pg.as_ref().map_or(cfg.device, ProcessGroup::device);
    let w = |e| Error::io("<output>", e);
    writeln!(out, "Using {} device", cfg.device).map_err(w)?;

    let mut rng = Rng::new(cfg.seed);
    let mut model = quickstart_model(&mut rng, cfg.dtype, device)?;
    let mut optimizer = cfg
        .optimizer
        .build(model.parameters(), cfg.lr, cfg.momentum, cfg.imp)?;
    // Built before a checkpoint is applied: its base lrs are the configured ones.
    let mut scheduler = cfg
        .lr_schedule
        .map(|s| s.build(optimizer.as_mut()))
        .transpose()?;
    // Mixed precision: f16 or bf16 parameters and f32 master weights and state in the
    // optimizer; f16 also a GradScaler (bf16 has f32's range and needs none).
    if cfg.dtype.is_half() {
        optimizer.core_mut().set_master_weights(true);
    }
    let mut scaler = if cfg.dtype == DType::F16 {
        Some(GradScaler::with_options(
            device,
            cfg.init_scale,
            2.0,
            0.5,
            2000,
        )?)
    } else {
        None
    };
    let loss_fn = CrossEntropyLoss::new();
    let mut train_loader = DataLoader::new(train_data.clone(), cfg.batch_size)?.device(device);
    if let Some(pg) = &pg {
        train_loader = train_loader.shard(pg.rank(), pg.world_size())?;
    }
    if cfg.shuffle {
        train_loader = train_loader.shuffle(rng);
    }
    // Rank 0 tests with the global batch, as a one-rank run with that batch does.
    let test_batch = cfg.batch_size * pg.as_ref().map_or(1, ProcessGroup::world_size);
    let mut test_loader = DataLoader::new(test_data.clone(), test_batch)?.device(device);

    let mut history = History::default();
    let mut first_epoch = 0;
    if let (Some((path, ckpt)), Some(r)) = (resume, resumed) {
        let meta = ckpt.apply_parts(
            &mut model,
            r.optimizer_state.then_some(optimizer.as_mut()),
            scaler.as_mut().filter(|_| r.scaler_state),
            path,
        )?;
        if r.set_lr && scheduler.is_none() {
            for g in 0..optimizer.param_groups().len() {
                optimizer.set_lr(g, cfg.lr)?;
            }
        }
        if let Some(state) = meta.rng_state {
            train_loader.set_rng_state(state);
        }
        history = meta.history.clone();
        first_epoch = meta.epoch;
    }
    if let Some(s) = scheduler.as_mut() {
        // The schedule continues after the steps of the resumed epochs.
        let per_epoch = train_loader
            .len()
            .div_ceil(cfg.loop_options.zero_grad_every);
        for _ in 0..first_epoch * per_epoch {
            s.step(optimizer.as_mut())?;
        }
    }
    let ddp = pg
        .map(|pg| DistributedDataParallel::new(model.parameters(), pg, DdpOptions::default()))
        .transpose()?;
    let mut graph = cfg.graph.then(GraphedStep::new);
    if first_epoch >= cfg.epochs && rank == 0 {
        eprintln!(
            "note: the checkpoint has {first_epoch} completed epochs and --epochs is {}: nothing to train",
            cfg.epochs
        );
    }

    let mut report = TrainReport {
        device: cfg.device,
        history: History::default(),
        epochs_run: 0,
        batches: 0,
        replayed_steps: 0,
        train_seconds: 0.0,
        parameters: Vec::new(),
        grad_scale: None,
    };
    let per_epoch = train_loader.len() as u64;
    for t in first_epoch..cfg.epochs {
        writeln!(out, "{}", pyfmt::epoch_header(t + 1)).map_err(w)?;
        let offset = t as u64 * per_epoch;
        let bar = cfg
            .progress
            .then(|| crate::train::progress::EpochBar::new(t + 1, train_loader.len()));
        let mut tick = |batch: usize, loss: Option<f64>| {
            if let Some(bar) = &bar {
                bar.tick(batch, loss)
            }
        };
        let lines = match &bar {
            Some(_) => Report::Callback(&mut tick),
            None => Report::Lines(&mut *out),
        };
        let mut trainee = Trainee {
            model: &mut model,
            loss_fn: &loss_fn,
            optimizer: optimizer.as_mut(),
            scaler: scaler.as_mut(),
            scheduler: scheduler.as_mut().map(|s| &mut **s as &mut dyn LrScheduler),
            graph: graph.as_mut(),
            ddp: ddp.as_ref(),
        };
        let stats = loops::train_loop(
            &mut train_loader,
            &mut trainee,
            &cfg.loop_options,
            offset,
            &mut history,
            lines,
        );
        if let Some(bar) = &bar {
            bar.finish();
        }
        let stats = stats?;
        report.batches += stats.batches;
        report.train_seconds += stats.seconds;
        if rank != 0 {
            continue; // rank 0 evaluates and saves
        }
        let (correct, test_loss) = loops::test_loop(&mut test_loader, &mut model, &loss_fn, out)?;
        history.accuracy.push(correct);
        history.test_loss.push(test_loss);
        report.epochs_run += 1;
        if let Some(path) = &cfg.save {
            Checkpoint::capture(
                &model,
                optimizer.as_ref(),
                cfg.optimizer.name(),
                scaler.as_ref(),
                t + 1,
                train_loader.rng_state(),
                &history,
            )?
            .with_settings(RunSettings {
                batch_size: cfg.batch_size,
                dtype: cfg.dtype.as_str().into(),
                lr: cfg.lr,
            })
            .save(path)?;
        }
    }
    writeln!(out, "Done!").map_err(w)?;
    report.history = history;
    report.replayed_steps = graph.as_ref().map_or(0, GraphedStep::replays);
    report.parameters = model.named_parameters();
    report.grad_scale = scaler.map(|s| s.state_dict()).transpose()?.map(|s| s.scale);
    Ok(report)
}

/// Everything `gradstep eval` takes.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// A checkpoint, or a bare state dict (e.g. `safetensors.torch.save_file(model.state_dict())`).
    pub load: PathBuf,
    /// Where the model runs.
    pub device: Device,
    /// Test batch size.
    pub batch_size: usize,
    /// Directory of the MNIST-style IDX files.
    pub data_dir: PathBuf,
    /// Use only the first N test samples.
    pub test_samples: Option<usize>,
}

/// Builds the quickstart model from a checkpoint or state dict file.
pub fn load_model(path: &Path, device: Device) -> Result<Sequential> {
    let ckpt = Checkpoint::load(path)?;
    let mut model = quickstart_model(&mut Rng::new(0), DType::F32, device)?;
    ckpt.apply_model(&mut model, path)?;
    Ok(model)
}

/// Evaluates a saved model on the test split; prints the quickstart's test report and
/// returns `(correct fraction, average loss)`.
pub fn eval(cfg: &EvalConfig, out: &mut dyn Write) -> Result<(f64, f64)> {
    let test_data = load_split(&cfg.data_dir, Split::Test, cfg.test_samples)?;
    check_input_size(test_data.as_ref(), &cfg.data_dir)?;
    open_device(cfg.device)?;
    let mut model = load_model(&cfg.load, cfg.device)?;
    let mut loader = DataLoader::new(test_data, cfg.batch_size)?.device(cfg.device);
    loops::test_loop(&mut loader, &mut model, &CrossEntropyLoss::new(), out)
}
