//! A per-epoch progress display for `--progress`.

use std::io::Write;

/// A one-line progress display on stderr, redrawn in place.
pub struct EpochBar {
    epoch: usize,
    total: usize,
    last_loss: std::cell::Cell<Option<f64>>,
}

impl EpochBar {
    /// A display for epoch `epoch` (from 1) of `total` batches.
    pub fn new(epoch: usize, total: usize) -> Self {
        EpochBar {
            epoch,
            total,
            last_loss: std::cell::Cell::new(None),
        }
    }

    /// Records that batch `batch` (from 0) is done, with its loss when it was logged.
    pub fn tick(&self, batch: usize, loss: Option<f64>) {
        if loss.is_some() {
            self.last_loss.set(loss);
        }
        if batch % 10 == 0 || batch + 1 == self.total {
            let loss = self
                .last_loss
                .get()
                .map(|l| format!("{l:.6}"))
                .unwrap_or_default();
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\repoch {} [{:>5}/{:>5}] loss {loss}",
                self.epoch,
                batch + 1,
                self.total
            );
            let _ = err.flush();
        }
    }

    /// Ends the line.
    pub fn finish(&self) {
        let _ = writeln!(std::io::stderr().lock());
    }
}
