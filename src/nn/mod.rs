//! Neural-network layers and losses.
