//! Reverse-mode automatic differentiation.

mod meta;

pub use meta::{AutogradMeta, Node};
