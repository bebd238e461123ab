//! Optimizers: zero_grad and step.
