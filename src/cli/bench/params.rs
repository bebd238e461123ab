//! The parameter sets of the benchmarks, identical to those of `scripts/torch_bench.py`
//! (public API only: the criterion benches include this file as it is).

use super::api::{DType, Device, Error, Result, Rng, Tensor};

/// A named list of parameter shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamSet {
    /// Ten tensors of 10,000,000 elements (`10x10M`).
    TenBy10M,
    /// The 148 parameter tensors of GPT-2 124M (`gpt2-124m`).
    Gpt2_124M,
    /// The first `n` tensors of the mixed small sizes: tensor `i` has
    /// `1 + (i * 7919 + 13) % 16000` elements (`mixedN`; `mixed1000` is the standard set).
    Mixed(usize),
}

/// The mean number of elements of a mixed tensor (sizes 1..=16000).
const MIXED_MEAN_NUMEL: usize = 8000;
/// The largest mixed set [`ParamSet::parse`] takes: 64 GiB of f16 parameters and grads
/// (the run itself checks the set against the memory there is).
const MIXED_MAX_BYTES: usize = 1 << 36;

impl ParamSet {
    /// The three standard sets, in the order the tables list them.
    pub const STANDARD: [ParamSet; 3] = [
        ParamSet::TenBy10M,
        ParamSet::Gpt2_124M,
        ParamSet::Mixed(1000),
    ];

    /// The set's name (`10x10M`, `gpt2-124m`, `mixedN`).
    pub fn name(self) -> String {
        match self {
            ParamSet::TenBy10M => "10x10M".into(),
            ParamSet::Gpt2_124M => "gpt2-124m".into(),
            ParamSet::Mixed(n) => format!("mixed{n}"),
        }
    }

    /// Parses a name as written by [`ParamSet::name`] (`mixedN` for any `N >= 1`).
    pub fn parse(s: &str) -> Result<ParamSet> {
        match s {
            "10x10M" => Ok(ParamSet::TenBy10M),
            "gpt2-124m" => Ok(ParamSet::Gpt2_124M),
            _ => s
                .strip_prefix("mixed")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    Error::invalid(
                        "bench",
                        format!("unknown parameter set '{s}' (expected 10x10M, gpt2-124m or mixedN, e.g. mixed1000)"),
                    )
                })
                .and_then(|n| {
                    // The sizes average 8000 elements: bound the set by what its f16
                    // parameters and gradients alone would take, before listing it.
                    match n.checked_mul(MIXED_MEAN_NUMEL * 4) {
                        Some(bytes) if bytes <= MIXED_MAX_BYTES => Ok(ParamSet::Mixed(n)),
                        bytes => Err(Error::OutOfMemory {
                            device: Device::Cpu,
                            bytes: bytes.unwrap_or(usize::MAX),
                        }),
                    }
                }),
        }
    }

    /// The shapes of the set's tensors, in order.
    pub fn shapes(self) -> Vec<Vec<usize>> {
        match self {
            ParamSet::TenBy10M => vec![vec![10_000_000]; 10],
            ParamSet::Gpt2_124M => gpt2_124m_shapes(),
            ParamSet::Mixed(n) => mixed_sizes(n).into_iter().map(|s| vec![s]).collect(),
        }
    }

    /// Number of tensors.
    pub fn tensors(self) -> usize {
        match self {
            ParamSet::TenBy10M => 10,
            ParamSet::Gpt2_124M => 148,
            ParamSet::Mixed(n) => n,
        }
    }

    /// Total number of elements.
    pub fn numel(self) -> usize {
        match self {
            ParamSet::Mixed(n) => (0..n).map(mixed_size).sum(),
            _ => self
                .shapes()
                .iter()
                .map(|s| s.iter().product::<usize>())
                .sum(),
        }
    }
}

/// The parameter shapes of GPT-2 124M (d = 768, vocabulary 50257, context 1024, 12 layers):
/// token and position embeddings, then per layer ln_1 (weight, bias), attention
/// (c_attn weight, bias, c_proj weight, bias), ln_2, MLP (c_fc, c_proj), and the final
/// layer norm. 148 tensors, 124,439,808 elements.
pub fn gpt2_124m_shapes() -> Vec<Vec<usize>> {
    let (d, vocab, ctx, layers) = (768, 50257, 1024, 12);
    let mut shapes = vec![vec![vocab, d], vec![ctx, d]];
    for _ in 0..layers {
        shapes.extend([
            vec![d],
            vec![d],
            vec![d, 3 * d],
            vec![3 * d],
            vec![d, d],
            vec![d],
            vec![d],
            vec![d],
            vec![d, 4 * d],
            vec![4 * d],
            vec![4 * d, d],
            vec![d],
        ]);
    }
    shapes.extend([vec![d], vec![d]]);
    shapes
}

/// The sizes of the first `n` mixed tensors: `1 + (i * 7919 + 13) % 16000`.
pub fn mixed_sizes(n: usize) -> Vec<usize> {
    (0..n).map(mixed_size).collect()
}

/// The size of mixed tensor `i`.
fn mixed_size(i: usize) -> usize {
    1 + (i * 7919 + 13) % 16000
}

/// Leaf parameters of the given shapes (uniform in [-0.5, 0.5)), each with a gradient
/// (uniform in [-0.005, 0.005)), drawn from `seed`. Never zeros, so no benchmark runs
/// on zeros.
pub fn make_params(
    shapes: &[Vec<usize>],
    dtype: DType,
    device: Device,
    seed: u64,
) -> Result<Vec<Tensor>> {
    if !dtype.is_float() {
        return Err(Error::invalid(
            "bench",
            format!("parameters must be floating point, got {dtype}"),
        ));
    }
    let mut rng = Rng::new(seed);
    shapes
        .iter()
        .map(|shape| {
            let p = Tensor::rand_with(shape, &mut rng, -0.5, 0.5, dtype, device)?;
            p.requires_grad_(true)?;
            p.set_grad(Some(Tensor::rand_with(
                shape, &mut rng, -5e-3, 5e-3, dtype, device,
            )?))?;
            Ok(p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [
            ParamSet::TenBy10M,
            ParamSet::Gpt2_124M,
            ParamSet::Mixed(1000),
            ParamSet::Mixed(7),
        ] {
            assert_eq!(ParamSet::parse(&s.name()).unwrap(), s);
        }
        for bad in ["", "mixed", "mixed0", "mixedx", "gpt2", "10x10m"] {
            assert!(ParamSet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gpt2_has_the_published_size() {
        let s = ParamSet::Gpt2_124M;
        assert_eq!(s.shapes().len(), 148);
        assert_eq!(s.tensors(), 148);
        // GPT-2 small with tied embeddings: 124,439,808 parameters.
        assert_eq!(s.numel(), 124_439_808);
    }

    #[test]
    fn mixed_sizes_match_the_torch_script() {
        // Worked by hand: 1 + 13, 1 + 7932, 1 + 15851, 1 + (23770 % 16000).
        assert_eq!(mixed_sizes(4), vec![14, 7933, 15852, 7771]);
        let s = ParamSet::Mixed(1000);
        assert_eq!(s.tensors(), 1000);
        assert!(s
            .shapes()
            .iter()
            .all(|sh| sh.len() == 1 && (1..=16000).contains(&sh[0])));
        assert_eq!(ParamSet::TenBy10M.numel(), 100_000_000);
    }

    #[test]
    fn params_have_nonzero_grads() {
        let ps = make_params(&[vec![3, 2], vec![5]], DType::F32, Device::Cpu, 1).unwrap();
        assert_eq!(ps.len(), 2);
        for p in &ps {
            assert!(p.requires_grad());
            let g = p.grad().unwrap().to_vec_f64().unwrap();
            assert_eq!(g.len(), p.numel());
            assert!(g.iter().all(|&x| x != 0.0 && x.abs() < 5e-3));
        }
        assert!(make_params(&[vec![1]], DType::I64, Device::Cpu, 1).is_err());
    }
}
