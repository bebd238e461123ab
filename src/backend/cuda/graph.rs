//! CUDA graphs: stream capture of the device's stream, instantiated once and launched
//! per replay.

use std::any::Any;

use cudarc::driver::result as cu;
use cudarc::driver::sys::{CUgraph, CUgraphExec, CUgraphInstantiate_flags};

use super::error;
use crate::backend::gpu::DeviceGraph;
use crate::base::Result;

/// An instantiated graph and the graph it came from.
pub(super) struct CudaGraph {
    graph: CUgraph,
    exec: CUgraphExec,
}

// SAFETY: graph handles are plain driver objects; the driver serialises their use, and
// gradstep launches a graph only on its device's one stream.
unsafe impl Send for CudaGraph {}
// SAFETY: as above.
unsafe impl Sync for CudaGraph {}

impl CudaGraph {
    /// Instantiates a captured graph.
    ///
    /// # Safety
    /// `graph` came from `cuStreamEndCapture` and is owned by nothing else.
    pub(super) unsafe fn instantiate(graph: CUgraph) -> Result<CudaGraph> {
        // SAFETY: the caller's contract.
        match unsafe { cu::graph::instantiate(graph, CUgraphInstantiate_flags(0)) } {
            Ok(exec) => Ok(CudaGraph { graph, exec }),
            Err(e) => {
                // SAFETY: the graph is ours and unused.
                let _ = unsafe { cu::graph::destroy(graph) };
                Err(error::cuda("cuGraphInstantiate", e))
            }
        }
    }

    /// The executable graph.
    pub(super) fn exec(&self) -> CUgraphExec {
        self.exec
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: both handles are ours; a launched graph's work is stream-ordered
        // before any later reuse of its memory.
        unsafe {
            let _ = cu::graph::exec_destroy(self.exec);
            let _ = cu::graph::destroy(self.graph);
        }
    }
}

impl DeviceGraph for CudaGraph {
    fn as_any(&self) -> &dyn Any {
        self
    }
}
