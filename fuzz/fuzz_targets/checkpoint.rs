//! safetensors and checkpoint bytes: any input is `Ok` or `Err`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = Path::new("fuzz.safetensors");
    let _ = gradstep::io::decode(data, name);
    let _ = gradstep::train::Checkpoint::decode(data, name);
});
