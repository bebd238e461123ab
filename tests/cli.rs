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
