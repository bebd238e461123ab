//! NCCL communicators (feature `nccl`): NCCL is loaded at run time under the name
//! `libnccl.so` (cudarc's; the runtime package and the `nvidia-nccl-cu13` wheel ship
//! `libnccl.so.2`, which `scripts/install-nccl` links to); its absence is an ordinary
//! error. A collective is queued on the device's one stream, in
//! order with its kernels, like a launch.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::nccl::{result as nc, sys};

use super::CudaApi;
use crate::backend::collective::{Collective, CollectiveKind, Comm, Communicator, ReduceOp};
use crate::base::{DType, Device, Error, Result};

/// Whether libnccl can be loaded (probed once; cudarc panics on a call without it).
fn present() -> Result<()> {
    static PRESENT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: only tries to open the library.
    if *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() }) {
        Ok(())
    } else {
        Err(Error::invalid(
            "nccl",
            "libnccl.so cannot be loaded (NCCL's runtime ships libnccl.so.2: link libnccl.so \
             to it), or run scripts/install-nccl and put the directory it prints on \
             LD_LIBRARY_PATH",
        ))
    }
}

fn nccl_error(what: impl std::fmt::Display, e: nc::NcclError) -> Error {
    Error::invalid("nccl", format!("{what}: {:?}", e.0))
}

/// A new NCCL unique id (rank 0 makes it and hands it to the others).
pub(crate) fn unique_id() -> Result<[u8; 128]> {
    present()?;
    let id = nc::get_uniqueid().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
    Ok(id.internal.map(|c| c as u8))
}

/// One rank's NCCL communicator.
pub(crate) struct NcclComm {
    comm: Mutex<sys::ncclComm_t>,
    rank: usize,
    world: usize,
    device: Device,
    aborted: AtomicBool,
}

// SAFETY: the raw communicator is used under its mutex, one call at a time, always with
// its own device's stream.
unsafe impl Send for NcclComm {}
// SAFETY: as above.
unsafe impl Sync for NcclComm {}

impl NcclComm {
    /// Rank `rank` of `world` on `device` (a `Device::Cuda`), joining the clique of `id`.
    /// Blocks until every rank has joined (NCCL's `ncclCommInitRank`).
    pub(crate) fn init_rank(
        device: Device,
        world: usize,
        rank: usize,
        id: [u8; 128],
    ) -> Result<Arc<NcclComm>> {
        present()?;
        let api = crate::backend::gpu::get(device)?;
        api.synchronize()?; // binds the context on this thread
        let uid = sys::ncclUniqueId {
            internal: id.map(|b| b as std::ffi::c_char),
        };
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        let n = i32::try_from(world).map_err(|_| Error::invalid("nccl", "world size too large"))?;
        // SAFETY: `comm` is written by the call; the id came from ncclGetUniqueId.
        unsafe { nc::comm_init_rank(&mut comm, n, uid, rank as i32) }.map_err(|e| {
            nccl_error(
                format!("ncclCommInitRank (rank {rank} of {world} on {device})"),
                e,
            )
        })?;
        Ok(Arc::new(NcclComm {
            comm: Mutex::new(comm),
            rank,
            world,
            device,
            aborted: AtomicBool::new(false),
        }))
    }

    /// One communicator per device of this process, rank r on `devices[r]`
    /// (`ncclCommInitAll`).
    pub(crate) fn init_all(devices: &[usize]) -> Result<Vec<Arc<NcclComm>>> {
        present()?;
        for &d in devices {
            crate::backend::gpu::get(Device::Cuda(d))?.synchronize()?;
        }
        let ords: Vec<i32> = devices.iter().map(|&d| d as i32).collect();
        let mut comms: Vec<sys::ncclComm_t> = vec![std::ptr::null_mut(); devices.len()];
        // SAFETY: `comms` has one slot per device, written by the call.
        unsafe { nc::comm_init_all(comms.as_mut_ptr(), ords.len() as i32, ords.as_ptr()) }
            .map_err(|e| nccl_error(format!("ncclCommInitAll over cuda {devices:?}"), e))?;
        Ok(comms
            .into_iter()
            .enumerate()
            .map(|(rank, comm)| {
                Arc::new(NcclComm {
                    comm: Mutex::new(comm),
                    rank,
                    world: devices.len(),
                    device: Device::Cuda(devices[rank]),
                    aborted: AtomicBool::new(false),
                })
            })
            .collect())
    }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn leave(&self, _why: &str) {
        if !self.aborted.swap(true, Ordering::AcqRel) {
            let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: a live communicator, aborted once; nothing uses it afterwards.
            let _ = unsafe { nc::comm_abort(*comm) };
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn data_type(d: DType) -> sys::ncclDataType_t {
    match d {
        DType::F16 => sys::ncclDataType_t::ncclFloat16,
        DType::BF16 => sys::ncclDataType_t::ncclBfloat16,
        DType::F32 => sys::ncclDataType_t::ncclFloat32,
        DType::F64 => sys::ncclDataType_t::ncclFloat64,
        DType::I64 => sys::ncclDataType_t::ncclInt64,
    }
}

fn red_op(op: ReduceOp) -> sys::ncclRedOp_t {
    match op {
        ReduceOp::Sum => sys::ncclRedOp_t::ncclSum,
        ReduceOp::Avg => sys::ncclRedOp_t::ncclAvg,
    }
}

impl CudaApi {
    /// Queues `c` on this device's stream with `comm`.
    ///
    /// # Safety
    /// As [`crate::backend::gpu::DeviceApi::collective`].
    pub(super) unsafe fn nccl(&self, comm: &Comm, c: &Collective) -> Result<()> {
        let comm = comm.as_any().downcast_ref::<NcclComm>().ok_or_else(|| {
            Error::invalid(
                "cuda",
                "a communicator of another backend (not an NCCL one)",
            )
        })?;
        if comm.device != self.device {
            return Err(Error::invalid(
                "nccl",
                format!(
                    "the communicator of {} used on {}",
                    comm.device, self.device
                ),
            ));
        }
        if comm.aborted.load(Ordering::Acquire) {
            return Err(Error::invalid(
                "nccl",
                "the communicator was aborted (its rank left)",
            ));
        }
        self.bind("an NCCL collective")?;
        let raw = comm.comm.lock().unwrap_or_else(|e| e.into_inner());
        let stream = self.stream.cu_stream() as sys::cudaStream_t;
        let (send, recv) = (
            c.send as *const std::ffi::c_void,
            c.recv as *mut std::ffi::c_void,
        );
        let dt = data_type(c.dtype);
        // SAFETY: the caller's contract: both buffers hold what `c` says on this device,
        // whose stream the call is queued on; the communicator is live (not aborted).
        let r = unsafe {
            match c.kind {
                CollectiveKind::AllReduce(op) => {
                    nc::all_reduce(send, recv, c.count, dt, red_op(op), *raw, stream)
                }
                CollectiveKind::Broadcast { root } => {
                    nc::broadcast(send, recv, c.count, dt, root as i32, *raw, stream)
                }
                CollectiveKind::AllGather => nc::all_gather(send, recv, c.count, dt, *raw, stream),
                CollectiveKind::ReduceScatter(op) => nc::reduce_scatter(
                    send,
                    recv,
                    c.recv_count(comm.world),
                    dt,
                    red_op(op),
                    *raw,
                    stream,
                ),
            }
        };
        r.map(drop)
            .map_err(|e| nccl_error(format!("{} on {}", c.kind.name(), self.device), e))
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        if !self.aborted.load(Ordering::Acquire) {
            let comm = self.comm.get_mut().unwrap_or_else(|e| e.into_inner());
            // SAFETY: a live communicator that nothing uses any more.
            let _ = unsafe { nc::comm_destroy(*comm) };
        }
    }
}
