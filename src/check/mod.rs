//! The conformance runner: replays PyTorch reference cases (`gradstep check`).
