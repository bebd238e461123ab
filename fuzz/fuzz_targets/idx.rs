//! IDX bytes (raw, and through the gzip reader): any input is `Ok` or `Err`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gradstep::data::idx::parse_idx(data, None);
    let path = std::env::temp_dir().join(format!("gradstep-fuzz-idx-{}.gz", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        let _ = gradstep::data::idx::read_idx(&path, None);
    }
});
