//! The `gradstep` binary as a user runs it: exit statuses, one-line errors, and the
//! replay of reference cases through `gradstep check`.

use std::path::{Path, PathBuf};

/// Writes `content` to a fresh file under the target's temporary directory.
fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, content).expect("temp file");
    p
}

/// Runs the `gradstep` binary; returns (exit code, stdout, stderr).
fn gradstep(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gradstep"))
        .args(args)
        .output()
        .expect("gradstep runs");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
    (out.status.code(), text(out.stdout), text(out.stderr))
}

#[test]
fn cli_errors_are_one_line_with_a_non_zero_exit() {
    let unknown = temp_file("cli_unknown.json", r#"{"format": "nope/1", "cases": []}"#);
    let invalid = temp_file("cli_invalid.json", "{");
    let unknown = unknown.to_str().expect("utf-8 path");
    let invalid = invalid.to_str().expect("utf-8 path");
    for args in [
        vec!["check", unknown],
        vec!["check", invalid],
        vec!["check", "no/such/file.json"],
        vec!["check", unknown, "--device", "tpu"],
        vec!["check", unknown, "--impl", "fastest"],
        vec!["check"],
        vec!["frobnicate"],
    ] {
        let (code, stdout, stderr) = gradstep(&args);
        assert_eq!(code, Some(2), "{args:?}: {stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}

#[test]
fn cli_check_exit_status_follows_failures() {
    let case = |out: &str| {
        format!(
            r#"{{"format": "ops-ref/1", "meta": {{}}, "cases": [{{
            "id": "neg/t/float32", "op": "neg", "dtype": "float32",
            "inputs": [{{"shape": [2], "data": [1.5, -2.0], "requires_grad": false}}],
            "output": {{"shape": [2], "data": {out}}},
            "grad_output": {{"shape": [2], "data": [1.0, 1.0]}},
            "grads": [null],
            "tolerance": {{"rtol": 1e-05, "atol": 1e-06}}}}]}}"#
        )
    };
    let good = temp_file("cli_good.json", &case("[-1.5, 2.0]"));
    let bad = temp_file("cli_bad.json", &case("[-1.5, 2.5]"));
    let (code, stdout, _) = gradstep(&["check", good.to_str().expect("path"), "--device", "cpu"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "1 passed, 0 failed\n"));
    let (code, stdout, _) = gradstep(&[
        "check",
        good.to_str().expect("path"),
        bad.to_str().expect("path"),
    ]);
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(
        stdout,
        "FAIL cli_bad.json neg/t/float32 [cpu]: output [1]: got 2 want 2.5 |diff| 5.0e-01 > 2.6e-05 (rtol 1e-05, atol 1e-06)\n1 passed, 1 failed\n"
    );
}

/// A scratch directory of its own for `name`.
fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Asserts that `args` fail with a non-zero exit and end in a one-line error (for
/// `check`, a `FAIL` line for the case), without a panic, an abort or an allocator
/// failure. Returns that line.
fn assert_clean_failure(args: &[&str]) -> String {
    let (code, stdout, stderr) = gradstep(args);
    assert!(
        matches!(code, Some(1) | Some(2)),
        "{args:?}: exit {code:?}\n{stdout}{stderr}"
    );
    for bad in [
        "panicked",
        "backtrace",
        "memory allocation",
        "capacity overflow",
        "internal error",
    ] {
        assert!(!stderr.contains(bad), "{args:?}: {stderr}");
    }
    if args[0] == "check" && stderr.is_empty() {
        let fail = stdout.lines().find(|l| l.starts_with("FAIL "));
        return fail
            .unwrap_or_else(|| panic!("{args:?}: {stdout}"))
            .to_string();
    }
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("error: "), "{args:?}: {stderr}");
    last.to_string()
}

#[test]
fn a_battery_of_bad_inputs_gives_one_line_errors() {
    let dir = temp_dir("battery");
    let d = |name: &str| dir.join(name).to_str().expect("utf-8").to_string();
    // A case whose shape's size overflows: taken as 2 elements before sizes were checked.
    let huge_case = temp_file(
        "cli_huge_shape.json",
        r#"{"format": "ops-ref/1", "meta": {}, "cases": [{
            "id": "neg/huge/float32", "op": "neg", "dtype": "float32",
            "inputs": [{"shape": [9223372036854775809, 2], "data": [1.5, -2.0], "requires_grad": false}],
            "output": {"shape": [2], "data": [-1.5, 2.0]},
            "grad_output": {"shape": [2], "data": [1.0, 1.0]},
            "grads": [null], "tolerance": {"rtol": 1e-05, "atol": 1e-06}}]}"#,
    );
    let huge_case = huge_case.to_str().expect("utf-8").to_string();
    std::fs::create_dir_all(dir.join("a-dir")).unwrap();
    // Each row: the arguments (split on spaces; `@D/` is the scratch directory, `@CASE`
    // the case file, `@TRAIN` a quick training run) and a word the error must contain.
    const TRAIN: &str = "train --epochs 1 --device cpu --train-samples 64 --test-samples 32";
    let rows = [
        (
            "bench step --set mixed99999999999 --quick --device cpu",
            "out of memory",
        ),
        (
            "bench zero --copy-mib 99999999999999 --quick --device cpu",
            "memory",
        ),
        (
            "bench zero --copy-mib 18446744073709551615 --quick --device cpu",
            "memory",
        ),
        (
            "bench train --batch 4000000000 --quick --device cpu",
            "failed",
        ),
        (
            "bench train --batch 99999999999999 --quick --device emu",
            "failed",
        ),
        (
            "bench zero --json @D/same.bin --plot @D/same.bin --device cpu",
            "same file",
        ),
        ("bench zero --json @D/a-dir --device cpu", "a directory"),
        ("check @CASE", "more elements"),
        ("check @CASE --device emu", "more elements"),
        ("@TRAIN --save @D/same.bin --plot @D/same.bin", "same file"),
        ("@TRAIN --save @D/a-dir", "a directory"),
        ("@TRAIN --save /dev/null", "device node"),
        ("@TRAIN --save @D/no-dir/x.st", "does not exist"),
        ("@TRAIN --plot @D/no-dir/x.png", "does not exist"),
        ("@TRAIN --resume @D/missing.st", "missing.st"),
        ("@TRAIN --batch-size 0", "batch"),
        ("@TRAIN --lr nan", "learning rate"),
        ("@TRAIN --zero-grad-every 0", "at least 1"),
        ("@TRAIN --log-every 0", "at least 1"),
        ("@TRAIN --data-dir @D/a-dir", "missing"),
        ("train --device cpu --train-samples 0", "empty"),
        ("train --device cpu --test-samples 0", "empty"),
    ];
    let cases: Vec<(Vec<String>, &str)> = rows
        .iter()
        .map(|(line, want)| {
            let args = line
                .split(' ')
                .flat_map(|a| match a {
                    "@TRAIN" => TRAIN.split(' ').map(String::from).collect(),
                    "@CASE" => vec![huge_case.clone()],
                    _ => match a.strip_prefix("@D/") {
                        Some(name) => vec![d(name)],
                        None => vec![a.to_string()],
                    },
                })
                .collect();
            (args, *want)
        })
        .collect();
    for (args, want) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let last = assert_clean_failure(&args);
        assert!(
            last.contains(want) || stderr_has(&args, want),
            "{args:?}: {last}"
        );
    }
    // Nothing was written where a refused output pointed.
    assert!(!dir.join("same.bin").exists());
    assert!(dir.join("a-dir").is_dir());
}

/// Whether a rerun of `args` mentions `want` anywhere on stderr (bench failures name the
/// cause on a line above the summary).
fn stderr_has(args: &[&str], want: &str) -> bool {
    gradstep(args).2.contains(want)
}

#[test]
fn resume_then_plot_onto_the_checkpoint_is_refused_and_the_checkpoint_kept() {
    let dir = temp_dir("resume-plot");
    let ckpt = dir.join("ckpt.safetensors");
    let ckpt = ckpt.to_str().expect("utf-8");
    let quick = [
        "train",
        "--device",
        "cpu",
        "--train-samples",
        "64",
        "--test-samples",
        "32",
    ];
    let (code, _, stderr) = gradstep(&[&quick[..], &["--epochs", "1", "--save", ckpt]].concat());
    assert_eq!(code, Some(0), "{stderr}");
    let before = std::fs::read(ckpt).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("ckpt.safetensors", dir.join("link.safetensors")).unwrap();
    let link = dir.join("link.safetensors");
    for plot in [ckpt, link.to_str().expect("utf-8")] {
        let args = [
            &quick[..],
            &["--epochs", "2", "--resume", ckpt, "--plot", plot],
        ]
        .concat();
        let last = assert_clean_failure(&args);
        assert!(last.contains("same file"), "{last}");
    }
    assert_eq!(
        std::fs::read(ckpt).unwrap(),
        before,
        "the checkpoint is unchanged"
    );
    // Resuming with another optimizer named explicitly overrides it, and says so.
    let args = [
        &quick[..],
        &[
            "--epochs",
            "2",
            "--resume",
            ckpt,
            "--optimizer",
            "adam",
            "--save",
            ckpt,
        ],
    ]
    .concat();
    let (code, _, stderr) = gradstep(&args);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("--optimizer adam overrides"), "{stderr}");
    #[cfg(unix)]
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}
