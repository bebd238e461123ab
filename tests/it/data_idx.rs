//! The IDX reader, the bundled Fashion-MNIST files and the data loader.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gradstep::data::idx::{encode_idx, read_idx};
use gradstep::data::{DataLoader, Dataset, MnistDataset, Split};
use gradstep::tensor::Rng;
use gradstep::DType;

fn fashion_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist")
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gradstep-data-idx-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Writes a small MNIST-style split: image i has every pixel equal to 10 * i, label i % 10.
fn write_split(dir: &Path, prefix: &str, n: usize, rows: usize, cols: usize, gz: bool) {
    let px: Vec<u8> = (0..n)
        .flat_map(|i| vec![(10 * i) as u8; rows * cols])
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let files = [
        (
            format!("{prefix}-images-idx3-ubyte"),
            encode_idx(&[n, rows, cols], &px).unwrap(),
        ),
        (
            format!("{prefix}-labels-idx1-ubyte"),
            encode_idx(&[n], &labels).unwrap(),
        ),
    ];
    for (name, bytes) in files {
        if gz {
            std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn bundled_fashion_mnist_matches_reference_counts() {
    // References computed independently from the .gz files with Python's gzip module.
    let train = MnistDataset::load(&fashion_dir(), Split::Train).unwrap();
    assert_eq!(train.len(), 60_000);
    assert_eq!(train.image_size(), (28, 28));
    assert_eq!(&train.labels()[..10], &[9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
    let sum = |img: &[u8]| img.iter().map(|&b| b as u64).sum::<u64>();
    assert_eq!(sum(train.image(0).unwrap()), 76_247);
    assert_eq!(sum(train.image(59_999).unwrap()), 16_684);
    for class in 0..10u8 {
        assert_eq!(train.labels().iter().filter(|&&l| l == class).count(), 6000);
    }
    let test = MnistDataset::load(&fashion_dir(), Split::Test).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(&test.labels()[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    assert_eq!(sum(test.image(0).unwrap()), 33_456);
    assert_eq!(sum(test.image(9_999).unwrap()), 24_390);
}

#[test]
fn collate_is_to_tensor() {
    let test = MnistDataset::load(&fashion_dir(), Split::Test).unwrap();
    let batch = test
        .collate(&[9_999, 0])
        .unwrap()
        .to_device(gradstep::Device::Cpu)
        .unwrap();
    assert_eq!(batch.inputs.shape(), &[2, 1, 28, 28]);
    assert_eq!(batch.inputs.dtype(), DType::F32);
    assert_eq!(batch.targets.dtype(), DType::I64);
    assert_eq!(batch.targets.to_vec::<i64>().unwrap(), vec![5, 9]);
    let x = batch.inputs.to_vec::<f32>().unwrap();
    let raw: Vec<u8> = [test.image(9_999).unwrap(), test.image(0).unwrap()].concat();
    for (v, b) in x.iter().zip(&raw) {
        assert_eq!(*v, *b as f32 / 255.0);
    }
    assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(test.collate(&[10_000]).is_err());
}

#[test]
fn reads_raw_and_gzip_alike() {
    let dir = scratch("formats");
    write_split(&dir, "train", 7, 3, 2, true);
    write_split(&dir, "t10k", 7, 3, 2, false);
    let a = MnistDataset::load(&dir, Split::Train).unwrap();
    let b = MnistDataset::load(&dir, Split::Test).unwrap();
    assert_eq!(a.labels(), b.labels());
    assert_eq!(a.image(6).unwrap(), &[60; 6]);
    assert_eq!(a.input_shape(), vec![1, 3, 2]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Asserts that `err` names `path` and contains `what`.
fn assert_err(err: gradstep::Error, path: &Path, what: &str) {
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(what), "'{msg}' lacks '{what}'");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = scratch("bad");
    let good = encode_idx(&[4, 2, 2], &[7; 16]).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() - 3].to_vec(), "truncated"),
        ("trailing", [good.as_slice(), &[1]].concat(), "trailing"),
        (
            "magic",
            [&[1u8, 0, 8, 3][..], &good[4..]].concat(),
            "not an IDX file",
        ),
        ("short", vec![0, 0], "shorter than"),
        ("header", vec![0, 0, 8, 3, 0, 0], "truncated header"),
        (
            "dtype",
            [&[0u8, 0, 0x0D, 3][..], &good[4..]].concat(),
            "f32",
        ),
        (
            "gz-truncated",
            {
                let z = gzip(&good);
                z[..z.len() - 6].to_vec()
            },
            "corrupt gzip",
        ),
    ];
    for (name, bytes, what) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        assert_err(read_idx(&path, Some(3)).unwrap_err(), &path, what);
    }
    let path = dir.join("rank");
    std::fs::write(&path, &good).unwrap();
    assert_err(read_idx(&path, Some(1)).unwrap_err(), &path, "rank 1");
    assert_eq!(read_idx(&path, Some(3)).unwrap().dims, vec![4, 2, 2]);

    let missing = dir.join("nope");
    assert_err(
        MnistDataset::load(&missing, Split::Train).unwrap_err(),
        &missing,
        "not found",
    );
    assert_err(
        MnistDataset::load(&dir, Split::Train).unwrap_err(),
        &dir,
        "missing train-images",
    );

    // Labels that do not match the images in count.
    write_split(&dir, "t10k", 5, 2, 2, false);
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        encode_idx(&[4], &[0; 4]).unwrap(),
    )
    .unwrap();
    let labels = dir.join("t10k-labels-idx1-ubyte");
    assert_err(
        MnistDataset::load(&dir, Split::Test).unwrap_err(),
        &labels,
        "4 labels for 5 images",
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A data set of `n` images of 1x1 pixel whose value is the sample's index.
fn counting(n: usize) -> Arc<dyn Dataset> {
    let px: Vec<u8> = (0..n).map(|i| i as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| i as u8).collect();
    Arc::new(MnistDataset::from_parts(px, labels, 1, 1).unwrap())
}

fn epoch_targets(loader: &mut DataLoader) -> Vec<Vec<i64>> {
    loader
        .iter()
        .map(|b| b.unwrap().targets.to_vec::<i64>().unwrap())
        .collect()
}

#[test]
fn loader_batches_in_order_and_keeps_the_tail() {
    let mut loader = DataLoader::new(counting(10), 4).unwrap();
    assert_eq!(loader.len(), 3);
    let batches = epoch_targets(&mut loader);
    assert_eq!(
        batches,
        vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
    );
    let mut loader = DataLoader::new(counting(10), 4).unwrap().drop_last(true);
    assert_eq!(loader.len(), 2);
    assert_eq!(epoch_targets(&mut loader).len(), 2);
    assert!(DataLoader::new(counting(10), 0).is_err());
}

#[test]
fn loader_shuffle_is_seeded_and_a_permutation() {
    let make = || {
        DataLoader::new(counting(100), 16)
            .unwrap()
            .shuffle(Rng::new(7))
    };
    let (mut a, mut b) = (make(), make());
    let (e1, e2) = (epoch_targets(&mut a), epoch_targets(&mut a));
    assert_eq!(e1, epoch_targets(&mut b));
    assert_ne!(e1, e2, "each epoch draws a new order");
    for epoch in [&e1, &e2] {
        let mut all: Vec<i64> = epoch.concat();
        assert_ne!(all, (0..100).collect::<Vec<_>>());
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }
    // The generator state restores the order of the following epoch.
    let mut c = make();
    epoch_targets(&mut c);
    let state = c.rng_state().unwrap();
    let mut d = make();
    d.set_rng_state(state);
    assert_eq!(epoch_targets(&mut d), e2);
}

#[test]
fn loader_stops_cleanly_when_dropped_early() {
    let mut loader = DataLoader::new(counting(200), 1).unwrap().prefetch(1);
    let first: Vec<_> = loader
        .iter()
        .take(3)
        .map(|b| b.unwrap().targets.to_vec::<i64>().unwrap())
        .collect();
    assert_eq!(first, vec![vec![0], vec![1], vec![2]]);
    assert_eq!(epoch_targets(&mut loader).len(), 200);
}

#[test]
fn loader_consumed_on_every_pool_worker_at_once_does_not_starve_collation() {
    // Each rayon worker consumes a loader whose collation itself runs parallel pool
    // jobs: waiting workers must run those jobs instead of blocking all of the pool.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let per_worker = rayon::broadcast(|_| {
            let mut loader = DataLoader::new(counting(256), 128).unwrap();
            epoch_targets(&mut loader).concat()
        });
        let _ = tx.send(per_worker);
    });
    let per_worker = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("loaders consumed on the rayon workers made no progress (deadlock)");
    assert_eq!(per_worker.len(), rayon::current_num_threads());
    for targets in per_worker {
        let want: Vec<i64> = (0..256).map(|i| i64::from(i as u8)).collect();
        assert_eq!(targets, want);
    }
}
