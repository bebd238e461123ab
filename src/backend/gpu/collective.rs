//! The launch path's side of a collective: counted and issued in stream order.

use super::GpuDevice;
use crate::backend::collective::{Collective, Comm};
use crate::backend::gpu::Event;
use crate::base::Result;

impl GpuDevice {
    /// Performs `c` with `comm` in stream order, or records it into this thread's
    /// capture (a replay performs it again, joining the other ranks' replays). Counted
    /// (collectives and the bytes sent) when issued.
    ///
    /// # Safety
    /// As [`crate::backend::collective::perform`]; a recorded collective's buffers stay
    /// allocated while the graph lives.
    pub(crate) unsafe fn collective(&self, comm: &Comm, c: &Collective) -> Result<()> {
        let _issue = self.issue(); // waits while another thread captures
        self.counters
            .record(Event::Collective(c.send_bytes() as u64));
        // SAFETY: forwarded contract.
        unsafe { self.api.collective(comm, c) }
    }
}
