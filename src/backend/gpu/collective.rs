//! The launch path's side of a collective: counted and issued in stream order.

use super::{graph, GpuDevice};
use crate::backend::collective::{Collective, Communicator};
use crate::backend::gpu::Event;
use crate::base::Result;

impl GpuDevice {
    /// Performs `c` with `comm` in stream order. Counted (collectives and the bytes
    /// sent). Refused inside a graph capture.
    ///
    /// # Safety
    /// As [`crate::backend::collective::perform`].
    pub(crate) unsafe fn collective(&self, comm: &dyn Communicator, c: &Collective) -> Result<()> {
        let issue = self.issue();
        if issue.mine {
            return Err(graph::refused(&format!(
                "a collective ({}); capture the step without it",
                c.kind.name()
            )));
        }
        self.counters
            .record(Event::Collective(c.send_bytes() as u64));
        // SAFETY: forwarded contract.
        unsafe { self.api.collective(comm, c) }
    }
}
