//! Data-parallel training: process groups and their collectives,
//! [`DistributedDataParallel`], and the sharded data order
//! ([`crate::data::DataLoader::shard`]).
//!
//! A [`ProcessGroup`] is one rank's handle on a group of ranks, each driving one device.
//! Its collectives (`all_reduce`, `broadcast`, `all_gather`, `reduce_scatter`, `barrier`)
//! work on device tensors in place and are issued through the device's launch path, in
//! stream order, counted in [`crate::Device::counters`] (`collectives`,
//! `collective_bytes`), and recorded by a graph capture like a launch (each rank's
//! replay joins the others'). Every rank must call the same collectives in the same
//! order.
//!
//! Backends:
//!
//! - **emulated** (`ProcessGroup::emulated`, feature `emu`): N emulated devices
//!   (`emu:0` … `emu:N-1`) act as N ranks in one process, one host thread per rank. The
//!   emulator performs the collectives, deterministically, so bucketing, ordering and the
//!   sampler run in every test. A rank that drops its group or does not arrive within
//!   the timeout makes the others fail with an error naming it.
//! - **NCCL** on CUDA GPUs: not built yet; see `docs/distributed.md`.

mod ddp;
pub mod rendezvous;

use std::time::Duration;

pub use crate::backend::collective::ReduceOp;
use crate::backend::collective::{self, Collective, CollectiveKind, Comm};
use crate::base::{Error, Result};
use crate::tensor::{DType, Device, Tensor};
pub use ddp::{BucketRecord, DdpOptions, DistributedDataParallel, NoSync};

/// Environment variable: the collectives' timeout in seconds (default 600, as NCCL's
/// process groups in PyTorch).
pub const TIMEOUT_ENV: &str = "GRADSTEP_DIST_TIMEOUT";

/// The default timeout of a collective waiting for the other ranks.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The timeout of `GRADSTEP_DIST_TIMEOUT` (seconds, > 0), else [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Result<Duration> {
    match std::env::var(TIMEOUT_ENV) {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                Error::invalid(
                    "distributed",
                    format!("{TIMEOUT_ENV}=`{v}`: expected a number of seconds > 0"),
                )
            }),
    }
}

/// One rank's handle on a group of ranks (torch.distributed's process group). Dropping
/// it leaves the group: collectives of the other ranks that wait for this one fail.
pub struct ProcessGroup {
    device: Device,
    comm: Comm,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ProcessGroup(rank {} of {}, {})",
            self.rank(),
            self.world_size(),
            self.device
        )
    }
}

impl ProcessGroup {
    /// `world_size` emulated ranks in this process, rank r on `Device::Emu(r)`, whose
    /// collectives wait at most `timeout` for the others. Hand each to its own thread.
    ///
    /// ```
    /// # fn main() -> gradstep::Result<()> {
    /// use gradstep::distributed::{ProcessGroup, ReduceOp};
    /// use gradstep::Tensor;
    /// let groups = ProcessGroup::emulated(2, std::time::Duration::from_secs(60))?;
    /// let sums = std::thread::scope(|s| {
    ///     let ranks: Vec<_> = groups
    ///         .into_iter()
    ///         .map(|pg| {
    ///             s.spawn(move || -> gradstep::Result<Vec<f64>> {
    ///                 let r = pg.rank() as f32;
    ///                 let t = Tensor::from_slice(&[r, 10.0 + r], &[2], pg.device())?;
    ///                 pg.all_reduce(&t, ReduceOp::Sum)?;
    ///                 t.to_vec_f64()
    ///             })
    ///         })
    ///         .collect();
    ///     ranks.into_iter().map(|h| h.join().unwrap()).collect::<gradstep::Result<Vec<_>>>()
    /// })?;
    /// assert_eq!(sums, vec![vec![1.0, 21.0], vec![1.0, 21.0]]);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "emu")]
    #[cfg_attr(docsrs, doc(cfg(feature = "emu")))]
    pub fn emulated(world_size: usize, timeout: Duration) -> Result<Vec<ProcessGroup>> {
        if world_size == 0 {
            return Err(Error::invalid(
                "distributed",
                "world_size must be at least 1",
            ));
        }
        if timeout.is_zero() {
            return Err(Error::invalid("distributed", "the timeout must be > 0"));
        }
        let members = crate::backend::emu::Clique::members(world_size, timeout);
        members
            .into_iter()
            .enumerate()
            .map(|(rank, comm)| {
                let device = Device::Emu(rank);
                device.synchronize()?; // opens it: a broken emulator fails here
                Ok(ProcessGroup { device, comm })
            })
            .collect()
    }

    /// One rank per CUDA device of `devices`, in this process (rank r on
    /// `Device::Cuda(devices[r])`, one host thread each), over NCCL
    /// (`ncclCommInitAll`). Errors when libnccl cannot be loaded.
    #[cfg(feature = "nccl")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nccl")))]
    pub fn nccl_local(devices: &[usize]) -> Result<Vec<ProcessGroup>> {
        if devices.is_empty() {
            return Err(Error::invalid("distributed", "no devices"));
        }
        let comms = crate::backend::cuda::nccl::NcclComm::init_all(devices)?;
        Ok(comms
            .into_iter()
            .zip(devices)
            .map(|(comm, &d)| ProcessGroup {
                device: Device::Cuda(d),
                comm,
            })
            .collect())
    }

    /// This process's rank of a multi-process run set up as `torchrun` does
    /// ([`rendezvous::RankEnv`]), on `Device::Cuda(LOCAL_RANK)` over NCCL: rank 0 makes
    /// the NCCL id and serves it at `MASTER_ADDR:MASTER_PORT`; the others fetch it, all
    /// within `timeout`. `Ok(None)` when `WORLD_SIZE` is unset.
    #[cfg(feature = "nccl")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nccl")))]
    pub fn nccl_from_env(timeout: Duration) -> Result<Option<ProcessGroup>> {
        let Some(env) = rendezvous::RankEnv::from_env()? else {
            return Ok(None);
        };
        let id = if env.rank == 0 {
            let id = crate::backend::cuda::nccl::unique_id()?;
            let server = rendezvous::Server::bind(&env.master_addr, env.master_port)?;
            let blob = id.to_vec();
            let world = env.world_size;
            // Serve while this rank joins the clique (which waits for the others).
            std::thread::spawn(move || server.serve(world, &blob, timeout));
            id
        } else {
            let blob = rendezvous::fetch(
                &env.master_addr,
                env.master_port,
                env.rank,
                env.world_size,
                timeout,
            )?;
            blob.try_into().map_err(|b: Vec<u8>| {
                Error::invalid(
                    "rendezvous",
                    format!("rank 0 sent {} bytes, not an NCCL id of 128", b.len()),
                )
            })?
        };
        let device = Device::Cuda(env.local_rank);
        let comm =
            crate::backend::cuda::nccl::NcclComm::init_rank(device, env.world_size, env.rank, id)?;
        Ok(Some(ProcessGroup { device, comm }))
    }

    /// This rank (0 ≤ rank < world size).
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// Ranks in the group.
    pub fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    /// The device of this rank: every tensor of its collectives lives there.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Checks that `t` is a contiguous tensor of this rank's device.
    fn check(&self, what: &'static str, name: &str, t: &Tensor) -> Result<()> {
        if t.device() != self.device {
            return Err(Error::invalid(
                what,
                format!(
                    "{name} is on {}, but rank {} of this group drives {}",
                    t.device(),
                    self.rank(),
                    self.device
                ),
            ));
        }
        if !t.is_contiguous() {
            return Err(Error::invalid(
                what,
                format!("{name} must be contiguous (call .contiguous() first)"),
            ));
        }
        Ok(())
    }

    fn check_reduce(what: &'static str, t: &Tensor, op: ReduceOp) -> Result<()> {
        if op == ReduceOp::Avg && !t.dtype().is_float() {
            return Err(Error::invalid(
                what,
                format!("avg needs a floating-point tensor, got {}", t.dtype()),
            ));
        }
        Ok(())
    }

    /// Runs `c`; bumps the versions of `written`.
    fn run(&self, c: Collective, written: &Tensor) -> Result<()> {
        // SAFETY: the public callers checked that the tensors are contiguous on this
        // rank's device with the sizes `c` says; they are borrowed for the whole call,
        // and the device's stream orders the collective after the work that made them.
        unsafe { collective::perform(self.device, &self.comm, &c)? };
        written.storage().bump_version();
        Ok(())
    }

    fn ptr(t: &Tensor) -> Result<u64> {
        if t.numel() == 0 {
            Ok(0)
        } else {
            t.device_ptr()
        }
    }

    /// Reduces `t` over the ranks, in place: every rank ends with the same result
    /// (`dist.all_reduce`). Not recorded by autograd.
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<()> {
        self.check("all_reduce", "the tensor", t)?;
        Self::check_reduce("all_reduce", t, op)?;
        let p = Self::ptr(t)?;
        self.run(
            Collective {
                kind: CollectiveKind::AllReduce(op),
                dtype: t.dtype(),
                send: p,
                recv: p,
                count: t.numel(),
            },
            t,
        )
    }

    /// Copies rank `root`'s `t` into every rank's `t` (`dist.broadcast`).
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        self.check("broadcast", "the tensor", t)?;
        if root >= self.world_size() {
            return Err(Error::invalid(
                "broadcast",
                format!("root rank {root} in a group of {} ranks", self.world_size()),
            ));
        }
        let p = Self::ptr(t)?;
        self.run(
            Collective {
                kind: CollectiveKind::Broadcast { root },
                dtype: t.dtype(),
                send: p,
                recv: p,
                count: t.numel(),
            },
            t,
        )
    }

    fn check_pair(
        &self,
        what: &'static str,
        out: &Tensor,
        input: &Tensor,
        out_numel: usize,
    ) -> Result<()> {
        self.check(what, "the output", out)?;
        self.check(what, "the input", input)?;
        if out.dtype() != input.dtype() {
            return Err(Error::invalid(
                what,
                format!(
                    "the output is {} and the input {}",
                    out.dtype(),
                    input.dtype()
                ),
            ));
        }
        if out.numel() != out_numel {
            return Err(Error::invalid(
                what,
                format!(
                    "the output has {} elements; {} ranks with an input of {} need {out_numel}",
                    out.numel(),
                    self.world_size(),
                    input.numel()
                ),
            ));
        }
        if out.shares_storage(input) {
            return Err(Error::invalid(
                what,
                "the output and the input must not share storage",
            ));
        }
        Ok(())
    }

    /// Fills `out` (world size × `input.numel()` elements) with every rank's `input`, in
    /// rank order (`dist.all_gather_into_tensor`).
    pub fn all_gather(&self, out: &Tensor, input: &Tensor) -> Result<()> {
        let n = input
            .numel()
            .checked_mul(self.world_size())
            .ok_or_else(|| Error::invalid("all_gather", "the output size overflows"))?;
        self.check_pair("all_gather", out, input, n)?;
        self.run(
            Collective {
                kind: CollectiveKind::AllGather,
                dtype: input.dtype(),
                send: Self::ptr(input)?,
                recv: Self::ptr(out)?,
                count: input.numel(),
            },
            out,
        )
    }

    /// Reduces `input` (world size × `out.numel()` elements) over the ranks and gives
    /// rank r the r-th slice of the result in `out` (`dist.reduce_scatter_tensor`).
    pub fn reduce_scatter(&self, out: &Tensor, input: &Tensor, op: ReduceOp) -> Result<()> {
        Self::check_reduce("reduce_scatter", input, op)?;
        if input.numel() % self.world_size() != 0 {
            return Err(Error::invalid(
                "reduce_scatter",
                format!(
                    "an input of {} elements does not split over {} ranks",
                    input.numel(),
                    self.world_size()
                ),
            ));
        }
        self.check_pair(
            "reduce_scatter",
            out,
            input,
            input.numel() / self.world_size(),
        )?;
        self.run(
            Collective {
                kind: CollectiveKind::ReduceScatter(op),
                dtype: input.dtype(),
                send: Self::ptr(input)?,
                recv: Self::ptr(out)?,
                count: input.numel(),
            },
            out,
        )
    }

    /// Returns once every rank has called it (`dist.barrier`): an all-reduce of one
    /// element, then a host synchronisation, as PyTorch's NCCL barrier does.
    pub fn barrier(&self) -> Result<()> {
        let t = Tensor::zeros(&[1], DType::F32, self.device)?;
        self.all_reduce(&t, ReduceOp::Sum)?;
        self.device.synchronize()
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let why = if std::thread::panicking() {
            "its thread panicked"
        } else {
            "its process group was dropped"
        };
        self.comm.leave(why);
    }
}
