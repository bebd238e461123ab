//! Parity checks of the ops kernels against the CPU backend.

use super::Check;

/// The checks of this area.
pub fn checks() -> Vec<Check> {
    Vec::new()
}
