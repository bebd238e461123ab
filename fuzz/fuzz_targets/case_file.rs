//! Reference-case files (`ops-ref/1`, `optim-ref/1`, `train-ref/1`), parsed and replayed
//! on the CPU: any input is `Ok` or `Err`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gradstep::cli::replay_case_bytes(data);
});
