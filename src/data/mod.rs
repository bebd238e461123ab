//! Datasets and the data loader.
