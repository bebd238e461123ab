//! The exact lines PyTorch's quickstart prints, with Python's float formatting.

/// Python's `f"{v:>{width}.{prec}f}"`: right-aligned, fixed decimals, `nan` / `inf`
/// spelled as Python spells them.
pub fn py_fixed(v: f64, width: usize, prec: usize) -> String {
    let body = if v.is_nan() {
        "nan".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{v:.prec$}")
    };
    format!("{body:>width$}")
}

/// `print(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]")` without the newline.
pub fn loss_line(loss: f64, current: usize, size: usize) -> String {
    format!("loss: {}  [{current:>5}/{size:>5}]", py_fixed(loss, 7, 6))
}

/// `print(f"Epoch {t+1}\n-------------------------------")` without the final newline;
/// `epoch` counts from 1.
pub fn epoch_header(epoch: usize) -> String {
    format!("Epoch {epoch}\n-------------------------------")
}

/// `print(f"Test Error: \n Accuracy: {(100*correct):>0.1f}%, Avg loss: {test_loss:>8f} \n")`
/// without print's final newline; `correct` is the fraction of correct predictions.
pub fn test_report(correct: f64, test_loss: f64) -> String {
    format!(
        "Test Error: \n Accuracy: {}%, Avg loss: {} \n",
        py_fixed(100.0 * correct, 0, 1),
        py_fixed(test_loss, 8, 6)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python() {
        // Expected strings printed by CPython 3.11 for the same values.
        assert_eq!(
            loss_line(2.303062, 0, 60000),
            "loss: 2.303062  [    0/60000]"
        );
        assert_eq!(loss_line(0.5, 6400, 60000), "loss: 0.500000  [ 6400/60000]");
        assert_eq!(loss_line(12.0, 64, 640), "loss: 12.000000  [   64/  640]");
        assert_eq!(loss_line(f64::NAN, 0, 10), "loss:     nan  [    0/   10]");
        assert_eq!(
            test_report(0.4567, 1.0 / 3.0),
            "Test Error: \n Accuracy: 45.7%, Avg loss: 0.333333 \n"
        );
        assert_eq!(epoch_header(3), "Epoch 3\n-------------------------------");
    }
}
