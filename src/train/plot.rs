//! PNG plots of a training run.

use std::path::Path;

use crate::error::{Error, Result};
use crate::train::checkpoint::History;

/// Writes a PNG of the training loss per logged step and the test accuracy per epoch.
pub fn plot_history(_history: &History, path: &Path) -> Result<()> {
    Err(Error::invalid(
        "plot",
        format!("{}: plotting is not implemented yet", path.display()),
    ))
}
