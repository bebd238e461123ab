//! The quickstart training and test loops, checkpoints and plots.
