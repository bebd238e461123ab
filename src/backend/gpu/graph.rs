//! Capturing a device's work into a graph and replaying it: the mechanism under
//! `gradstep::graph::StepGraph`, shared by CUDA (stream capture, `cuGraphLaunch`) and the
//! emulator (each launch recorded with its parameter bytes copied at capture time).
//!
//! While a device captures, nothing it is given runs; work that cannot be recorded is
//! refused with an error naming it: a host synchronisation (a download, `item`,
//! `Device::synchronize`), a copy from the host (a table or a batch uploaded during the
//! step: upload it before capturing), a second capture. Host values frozen into the
//! recorded launches that may change later are registered ([`GpuDevice::freeze`]) and
//! checked at every replay.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::counters::Event;
use super::GpuDevice;
use crate::base::{Error, Result};

/// A backend's recorded graph (a `CUgraphExec`, or the emulator's list of launches).
pub(crate) trait DeviceGraph: Send + Sync {
    /// The concrete graph, for the backend that made it.
    fn as_any(&self) -> &dyn Any;
}

/// A host value a captured launch holds by value, and where its current value is.
struct Frozen {
    what: String,
    value: f64,
    source: Arc<AtomicU64>,
}

/// The state of a capture under way.
pub(super) struct Capture {
    graph_id: u64,
    /// The capturing thread.
    thread: std::thread::ThreadId,
    frozen: Vec<Frozen>,
}

/// A captured graph of one device, with the memory it may write held for it.
pub(crate) struct CapturedGraph {
    device: Arc<GpuDevice>,
    graph: Box<dyn DeviceGraph>,
    graph_id: u64,
    frozen: Vec<Frozen>,
}

impl Drop for CapturedGraph {
    fn drop(&mut self) {
        self.device.mem.drop_graph(self.graph_id);
    }
}

/// The error of an operation a capture cannot record.
pub(super) fn refused(what: &str) -> Error {
    Error::invalid(
        "graph capture",
        format!(
            "{what} cannot be captured into a graph (replays run no host code): do it \
             before or after the captured step"
        ),
    )
}

/// A capture that ended: what the backend's `stop` returned, and the capture's graph
/// id and frozen values.
struct Finished<R> {
    recorded: R,
    graph_id: u64,
    frozen: Vec<Frozen>,
}

/// See [`GpuDevice::issue`].
pub(crate) struct Issue<'a> {
    /// This thread is the one capturing: its work is recorded.
    pub(crate) mine: bool,
    _held: Option<std::sync::RwLockReadGuard<'a, ()>>,
}

impl GpuDevice {
    /// Whether this thread is capturing. A capture is of the whole device (its one
    /// stream), so another thread's work would land in the graph: while one thread
    /// captures, every other thread that issues work to the device waits here until the
    /// capture ends. One atomic load when nothing is captured.
    pub(crate) fn capturing(&self) -> bool {
        if !self.capturing.load(Ordering::Acquire) {
            return false;
        }
        let me = std::thread::current().id();
        let mut state = self.capture_state();
        loop {
            match state.as_ref() {
                None => return false,
                Some(c) if c.thread == me => return true,
                Some(_) => {
                    state = self
                        .capture_ended
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner())
                }
            }
        }
    }

    /// The permit to issue one call: waits while another thread captures (as
    /// [`Self::capturing`]); `mine` says whether this thread is the one capturing.
    /// Otherwise it holds the device's issue lock until dropped, so that a capture cannot
    /// begin between the check and the call's work, which would then land in its graph.
    pub(crate) fn issue(&self) -> Issue<'_> {
        loop {
            if self.capturing() {
                return Issue {
                    mine: true,
                    _held: None,
                };
            }
            let held = self.issue_lock.read().unwrap_or_else(|e| e.into_inner());
            // A capture may have begun since the check; with the lock held none can.
            if !self.capturing.load(Ordering::Acquire) {
                return Issue {
                    mine: false,
                    _held: Some(held),
                };
            }
        }
    }

    /// The capture state, locked.
    fn capture_state(&self) -> std::sync::MutexGuard<'_, Option<Capture>> {
        self.capture.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts capturing: from now on the device's work is recorded, not run.
    pub(crate) fn begin_capture(&self) -> Result<()> {
        if self.capturing() {
            return Err(refused("a second capture inside a capture"));
        }
        let mut state = self.capture_state();
        // Another thread may have started one since `capturing` returned.
        while state.is_some() {
            state = self
                .capture_ended
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        // No other thread is inside a call from here on (see `issue`).
        let _exclusive = self.issue_lock.write().unwrap_or_else(|e| e.into_inner());
        let graph_id = self.mem.begin_graph();
        if let Err(e) = self.api.begin_capture() {
            self.mem.end_capture(graph_id);
            self.mem.drop_graph(graph_id);
            return Err(e);
        }
        *state = Some(Capture {
            graph_id,
            thread: std::thread::current().id(),
            frozen: Vec::new(),
        });
        self.capturing.store(true, Ordering::Release);
        Ok(())
    }

    /// Ends the capture: the graph of everything issued since [`Self::begin_capture`].
    pub(crate) fn end_capture(self: &Arc<Self>) -> Result<CapturedGraph> {
        let c = self.finish_capture(|| self.api.end_capture())?;
        match c.recorded {
            Ok(graph) => Ok(CapturedGraph {
                device: self.clone(),
                graph,
                graph_id: c.graph_id,
                frozen: c.frozen,
            }),
            Err(e) => {
                self.mem.drop_graph(c.graph_id);
                Err(e)
            }
        }
    }

    /// Abandons a capture after an error; nothing recorded is kept.
    pub(crate) fn abort_capture(&self) {
        if let Ok(c) = self.finish_capture(|| self.api.abort_capture()) {
            self.mem.drop_graph(c.graph_id);
        }
    }

    /// Stops the backend's recording with `stop` and the allocator's capture, then lets
    /// the other threads issue work again, in this order: until the backend stops
    /// recording, their work would land in the graph (and not run now).
    fn finish_capture<R>(&self, stop: impl FnOnce() -> R) -> Result<Finished<R>> {
        if !self.capturing() {
            return Err(Error::invalid(
                "graph capture",
                "this thread is not capturing",
            ));
        }
        let recorded = stop();
        let mut state = self.capture_state();
        let c = state
            .take()
            .ok_or_else(|| Error::invalid("graph capture", "no capture is under way"))?;
        self.mem.end_capture(c.graph_id);
        self.capturing.store(false, Ordering::Release);
        drop(state);
        self.capture_ended.notify_all();
        #[cfg(test)]
        tests::AFTER_RELEASE.with(|h| h.take().map(|f| f()));
        Ok(Finished {
            recorded,
            graph_id: c.graph_id,
            frozen: c.frozen,
        })
    }

    /// Registers a host value that a launch being captured holds by value (`what` names
    /// it; `source` holds its current value as f64 bits): a replay after it changed is
    /// refused. A no-op when this thread is not capturing.
    pub(crate) fn freeze(&self, what: impl Into<String>, value: f64, source: &Arc<AtomicU64>) {
        let me = std::thread::current().id();
        // Another thread's capture holds nothing of this thread's launches.
        if let Some(c) = self.capture_state().as_mut().filter(|c| c.thread == me) {
            c.frozen.push(Frozen {
                what: what.into(),
                value,
                source: source.clone(),
            });
        }
    }

    /// Runs a captured graph of this device: one graph launch, no kernel launch issued
    /// from the host, no synchronisation. An error (and nothing run) when a frozen host
    /// value changed since the capture.
    pub(crate) fn replay(&self, g: &CapturedGraph) -> Result<()> {
        if !std::ptr::eq(self, &*g.device) {
            return Err(Error::invalid(
                "graph replay",
                "the graph was captured on another device",
            ));
        }
        let issue = self.issue();
        if issue.mine {
            return Err(refused("replaying a graph"));
        }
        for f in &g.frozen {
            let now = f64::from_bits(f.source.load(Ordering::Acquire));
            if now.to_bits() != f.value.to_bits() {
                return Err(Error::invalid(
                    "graph replay",
                    format!(
                        "the captured step holds {} = {} by value, but it is {now} now: \
                         the replay would use the old value. Capture a step that reads it \
                         from the device (a capturable optimizer), or capture again",
                        f.what, f.value
                    ),
                ));
            }
        }
        self.counters.record(Event::GraphLaunch);
        // SAFETY: the graph's memory is pinned to it until `g` is dropped (graph pools).
        unsafe { self.api.launch_graph(g.graph.as_ref()) }
    }
}

/// Shared by `Mutex<Option<Capture>>` users.
pub(super) type CaptureCell = Mutex<Option<Capture>>;

#[cfg(all(test, feature = "emu"))]
mod tests {
    use std::cell::Cell;

    use crate::backend::gpu;
    use crate::base::Device;

    thread_local! {
        /// Run by the capturing thread once other threads may issue work again.
        pub(super) static AFTER_RELEASE: Cell<Option<Box<dyn FnOnce()>>> = const { Cell::new(None) };
    }

    #[test]
    fn work_issued_once_a_capture_ended_runs_now_and_stays_out_of_the_graph() {
        let dev = gpu::get(Device::Emu(0)).unwrap();
        let buf = dev.alloc(4).unwrap();
        let (other, ptr) = (dev.clone(), buf.ptr());
        let read = || {
            let mut b = [0u8; 4];
            dev.dtoh(ptr, &mut b).unwrap();
            b
        };
        dev.htod(&[1; 4], ptr).unwrap();
        dev.begin_capture().unwrap();
        // Another thread zeroes the buffer as soon as it may: its memset must run, not
        // be recorded by a capture whose recording has not stopped.
        AFTER_RELEASE.with(|h| {
            h.set(Some(Box::new(move || {
                std::thread::spawn(move || other.memset_zero(ptr, 4).unwrap())
                    .join()
                    .unwrap()
            })))
        });
        let graph = dev.end_capture().unwrap();
        assert_eq!(read(), [0; 4], "the other thread's memset did not run");
        dev.htod(&[1; 4], ptr).unwrap();
        dev.replay(&graph).unwrap();
        assert_eq!(
            read(),
            [1; 4],
            "the graph replayed the other thread's memset"
        );
    }
}
