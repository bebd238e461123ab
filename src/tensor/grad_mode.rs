//! The thread-local switch that decides whether ops record the backward graph.

use std::cell::Cell;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record the backward graph (true unless inside
/// [`no_grad`], or inside a backward pass without `create_graph`).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous grad mode when dropped; see [`no_grad`] and [`set_grad_enabled`].
#[must_use = "the grad mode is restored as soon as the guard is dropped"]
pub struct GradModeGuard {
    previous: bool,
    // Grad mode is per thread: the guard must be dropped on the thread that made it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Sets the grad mode of this thread until the returned guard is dropped.
pub fn set_grad_enabled(enabled: bool) -> GradModeGuard {
    let previous = GRAD_ENABLED.with(|g| g.replace(enabled));
    GradModeGuard {
        previous,
        _not_send: std::marker::PhantomData,
    }
}

/// Stops recording the graph on this thread until the guard is dropped (PyTorch's
/// `torch.no_grad()`); guards nest: `let _g = gradstep::autograd::no_grad();`.
pub fn no_grad() -> GradModeGuard {
    set_grad_enabled(false)
}

/// Records the graph on this thread until the guard is dropped, even inside
/// [`no_grad`] (PyTorch's `torch.enable_grad()`).
pub fn enable_grad() -> GradModeGuard {
    set_grad_enabled(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_nest_and_restore() {
        assert!(is_grad_enabled());
        {
            let _a = no_grad();
            assert!(!is_grad_enabled());
            {
                let _b = enable_grad();
                assert!(is_grad_enabled());
                let _c = no_grad();
                assert!(!is_grad_enabled());
            }
            assert!(!is_grad_enabled());
        }
        assert!(is_grad_enabled());
    }
}
