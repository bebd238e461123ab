//! Seeded mutation fuzzing of every reader of untrusted bytes: IDX files (raw and
//! gzip-compressed), safetensors checkpoints, and reference-case files. Each mutant
//! (truncated, bytes flipped, huge sizes and offsets spliced in, ranges cut or
//! repeated) must give `Ok` or `Err`, never a panic or an abort. The runs are bounded
//! by count (`GRADSTEP_FUZZ_ITERS` mutants per reader, default 200), so they are the
//! same on every machine; the cargo-fuzz targets in `fuzz/` run the same readers for as
//! long as one wants.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use gradstep::data::idx::{encode_idx, parse_idx, read_idx};
use gradstep::tensor::Rng;
use gradstep::train::Checkpoint;

use super::common::gzip;
use super::train::{config, run, scratch};

/// Mutants per reader.
fn iters() -> usize {
    std::env::var("GRADSTEP_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Values that break size arithmetic, as little- and big-endian words.
const HUGE_WORDS: [u64; 6] = [
    u64::MAX,
    1 << 63,
    (1 << 63) + 1,
    u32::MAX as u64,
    1 << 31,
    0,
];
/// The same as JSON number text.
const HUGE_TEXT: [&str; 7] = [
    "18446744073709551615",
    "9223372036854775809",
    "4294967296",
    "-1",
    "1e308",
    "0",
    "2.5",
];

/// One mutant of `seed`.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    let at = |rng: &mut Rng, len: usize| rng.below(len as u64 + 1) as usize;
    for _ in 0..1 + rng.below(3) {
        match rng.below(6) {
            0 => b.truncate(at(rng, b.len())),
            1 => {
                for _ in 0..1 + rng.below(8) {
                    if !b.is_empty() {
                        let i = at(rng, b.len() - 1);
                        b[i] ^= 1 + rng.below(255) as u8;
                    }
                }
            }
            2 => {
                let w = HUGE_WORDS[rng.below(HUGE_WORDS.len() as u64) as usize];
                let bytes: Vec<u8> = match rng.below(3) {
                    0 => (w as u32).to_be_bytes().to_vec(),
                    1 => w.to_le_bytes().to_vec(),
                    _ => (w as u32).to_le_bytes().to_vec(),
                };
                let i = at(rng, b.len().saturating_sub(bytes.len()));
                for (k, x) in bytes.into_iter().enumerate() {
                    if i + k < b.len() {
                        b[i + k] = x;
                    }
                }
            }
            3 => {
                // Replace a run of digits (a JSON number, a header value) with a huge one.
                let starts: Vec<usize> = (0..b.len())
                    .filter(|&i| b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_digit()))
                    .collect();
                if !starts.is_empty() {
                    let s = starts[rng.below(starts.len() as u64) as usize];
                    let e = (s..b.len())
                        .find(|&i| !b[i].is_ascii_digit())
                        .unwrap_or(b.len());
                    let t = HUGE_TEXT[rng.below(HUGE_TEXT.len() as u64) as usize];
                    b.splice(s..e, t.bytes());
                }
            }
            4 => {
                let (i, j) = (at(rng, b.len()), at(rng, b.len()));
                b.drain(i.min(j)..i.max(j));
            }
            _ => {
                let (i, j) = (at(rng, b.len()), at(rng, b.len()));
                let piece = b[i.min(j)..i.max(j)].to_vec();
                let k = at(rng, b.len());
                b.splice(k..k, piece);
            }
        }
    }
    b
}

/// Feeds `iters()` mutants of each seed to `read`; fails naming the first mutant that
/// panicked (its bytes are written beside the scratch files for replay).
fn fuzz(name: &str, seeds: &[Vec<u8>], read: impl Fn(&[u8])) {
    let mut rng = Rng::new(0x5eed ^ name.len() as u64);
    for i in 0..iters() {
        let seed = &seeds[i % seeds.len()];
        let m = mutate(&mut rng, seed);
        if catch_unwind(AssertUnwindSafe(|| read(&m))).is_err() {
            let p = scratch(&format!("fuzz-{name}")).join(format!("crash-{i}"));
            std::fs::write(&p, &m).unwrap();
            panic!("{name}: mutant {i} panicked (bytes in {})", p.display());
        }
    }
}

#[test]
fn idx_readers_never_panic() {
    let images = encode_idx(&[3, 4, 5], &(0..60).collect::<Vec<u8>>()).unwrap();
    let labels = encode_idx(&[3], &[1, 9, 0]).unwrap();
    fuzz("idx", &[images.clone(), labels.clone()], |b| {
        let _ = parse_idx(b, None);
        let _ = parse_idx(b, Some(3));
    });
    let dir = scratch("fuzz-idx-gz");
    let path = dir.join("mutant.gz");
    fuzz("idx-gzip", &[gzip(&images), gzip(&labels)], |b| {
        std::fs::write(&path, b).unwrap();
        let _ = read_idx(&path, None);
    });
}

#[test]
fn checkpoint_reader_never_panics() {
    let dir = scratch("fuzz-ckpt");
    let path = dir.join("seed.safetensors");
    let mut cfg = config(1);
    cfg.train_samples = Some(64);
    cfg.test_samples = Some(32);
    cfg.save = Some(path.clone());
    run(&cfg);
    let seed = std::fs::read(&path).unwrap();
    let name = Path::new("mutant.safetensors");
    fuzz("checkpoint", &[seed], |b| {
        let _ = gradstep::io::decode(b, name);
        let _ = Checkpoint::decode(b, name);
    });
}

#[test]
fn case_file_reader_never_panics() {
    // A few cases of each format keep every mutant's replay short.
    let seeds: Vec<Vec<u8>> = [
        "ops.json",
        "optim_standard.json",
        "train.json",
        "nonfinite_optim.json",
    ]
    .iter()
    .map(|f| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(f);
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        let cases = v["cases"].as_array_mut().unwrap();
        cases.truncate(2);
        serde_json::to_vec(&v).unwrap()
    })
    .collect();
    fuzz("case-file", &seeds, |b| {
        let _ = gradstep::cli::replay_case_bytes(b);
    });
}
