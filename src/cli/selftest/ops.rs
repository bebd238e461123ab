//! Parity checks of the ops kernels against the CPU backend.
//!
//! Every check builds its inputs on the CPU, copies them to the GPU device with the same
//! strided layout (offsets into a larger buffer, transposes, padded rows, broadcast
//! stride 0), runs the same dispatch call on both, and compares. Sizes are odd (not
//! multiples of a block, a warp or a vector), and each family has empty cases. In-place
//! ops compare the whole underlying buffer, so a write outside the view fails.

use super::Check;
use crate::backend::{BinaryOp, CrossEntropyOpts, Reduction, UnaryOp};
use crate::base::{Error, Result};
use crate::tensor::prim;
use crate::tensor::{contiguous_strides, DType, Device, Layout, Rng, Tensor};

const FLOATS: [DType; 4] = [DType::F16, DType::BF16, DType::F32, DType::F64];
const ALL: [DType; 5] = [DType::F16, DType::BF16, DType::F32, DType::F64, DType::I64];

/// How an input is laid out in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    /// Row-major at offset 0 (16-byte aligned: the vector paths).
    Dense,
    /// Row-major at an odd offset (unaligned: the scalar paths).
    Offset,
    /// The last two dims swapped (a transposed view), offset 1.
    Transposed,
    /// Rows of a wider buffer (last dim padded by 3), offset 1.
    Padded,
    /// The first dim broadcast from 1 (stride 0), offset 2.
    Broadcast,
}

impl View {
    fn name(self) -> &'static str {
        match self {
            View::Dense => "dense",
            View::Offset => "offset",
            View::Transposed => "transposed",
            View::Padded => "padded",
            View::Broadcast => "broadcast",
        }
    }

    /// The length of the buffer and the layout of a view of `shape` in it.
    fn layout(self, shape: &[usize]) -> (usize, Layout) {
        let n: usize = shape.iter().product();
        let r = shape.len();
        let strided = |base: &[usize], offset: usize| {
            Layout::new(base.to_vec(), contiguous_strides(base), offset)
        };
        match self {
            View::Transposed if r >= 2 => {
                let mut s = shape.to_vec();
                s.swap(r - 2, r - 1);
                (n + 1, strided(&s, 1).transpose(r - 2, r - 1))
            }
            View::Padded if r >= 1 => {
                let mut s = shape.to_vec();
                s[r - 1] += 3;
                let l = strided(&s, 1);
                (
                    s.iter().product::<usize>() + 1,
                    Layout::new(shape.to_vec(), l.strides().to_vec(), 1),
                )
            }
            View::Broadcast if r >= 1 => {
                let mut s = shape.to_vec();
                s[0] = 1;
                let l = strided(&s, 2)
                    .broadcast_to(shape)
                    .expect("a dim of 1 broadcasts");
                (s.iter().product::<usize>() + 2, l)
            }
            View::Dense => (n, Layout::contiguous(shape)),
            _ => (n + 3, strided(shape, 3)),
        }
    }
}

/// One input: the same values and layout on the CPU and on the GPU device.
struct Input {
    cpu: Tensor,
    gpu: Tensor,
}

impl Input {
    /// A view of `shape` over a buffer of random values in `[lo, hi)` (integers for i64).
    fn new(
        dev: Device,
        shape: &[usize],
        dtype: DType,
        view: View,
        range: (f64, f64),
        seed: u64,
    ) -> Result<Input> {
        let int = dtype == DType::I64;
        Input::generate(dev, shape, dtype, view, seed, |rng| {
            let v = rng.uniform_range(range.0, range.1);
            if int {
                v.floor()
            } else {
                v
            }
        })
    }

    /// A view of `shape` over a buffer of values drawn by `value`.
    fn generate(
        dev: Device,
        shape: &[usize],
        dtype: DType,
        view: View,
        seed: u64,
        value: impl Fn(&mut Rng) -> f64,
    ) -> Result<Input> {
        let (len, layout) = view.layout(shape);
        let mut rng = Rng::new(seed);
        let data: Vec<f64> = (0..len).map(|_| value(&mut rng)).collect();
        let base = Tensor::from_f64s(&data, &[len], dtype, Device::Cpu)?;
        let gpu_base = base.to_device(dev)?;
        Ok(Input {
            cpu: base.with_layout(layout.clone())?,
            gpu: gpu_base.with_layout(layout)?,
        })
    }

    /// Class or embedding indices in `0..classes`, every `ignore_every`-th replaced by
    /// `ignore` (when given).
    fn indices(
        dev: Device,
        shape: &[usize],
        classes: usize,
        ignore: Option<(usize, i64)>,
        seed: u64,
    ) -> Result<Input> {
        let mut rng = Rng::new(seed);
        let n: usize = shape.iter().product();
        let v: Vec<i64> = (0..n)
            .map(|i| match ignore {
                Some((every, value)) if i % every == every - 1 => value,
                _ => rng.below(classes.max(1) as u64) as i64,
            })
            .collect();
        let cpu = Tensor::from_vec(v, shape, Device::Cpu)?;
        let gpu = cpu.to_device(dev)?;
        Ok(Input { cpu, gpu })
    }

    fn side(&self, gpu: bool) -> &Tensor {
        if gpu {
            &self.gpu
        } else {
            &self.cpu
        }
    }
}

/// The whole buffer under a view (to see writes outside it).
fn whole(t: &Tensor) -> Result<Tensor> {
    let len = t.storage().len();
    t.with_layout(Layout::contiguous(&[len]))
}

/// Checks that the next synchronisation of `dev` reports the error an op recorded on the
/// device, naming `what`, and that the one after it is clean.
fn deferred_error(dev: Device, what: &str) -> Result<()> {
    match dev.synchronize() {
        Err(Error::InvalidArgument { msg, .. }) if msg.contains(what) => {}
        other => {
            return Err(fail(format!(
                "expected an error naming {what}, got {other:?}"
            )))
        }
    }
    dev.synchronize()
        .map_err(|e| fail(format!("the error was reported twice: {e}")))
}

fn fail(msg: String) -> Error {
    Error::invalid("selftest", msg)
}

/// Tolerance `(rtol, atol)` of a GPU result against the CPU's in `dtype`: a few roundings
/// (reductions add in another order; f16 results may round to a neighbour).
fn tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F16 => (1e-2, 2e-3),
        DType::BF16 => (4e-2, 1e-2),
        DType::F32 => (1e-4, 1e-5),
        DType::F64 => (1e-10, 1e-12),
        DType::I64 => (0.0, 0.0),
    }
}

/// Compares a GPU result with the CPU result: shape, dtype and every value.
fn close(what: &str, got: &Tensor, want: &Tensor, (rtol, atol): (f64, f64)) -> Result<()> {
    if got.shape() != want.shape() || got.dtype() != want.dtype() {
        return Err(fail(format!(
            "{what}: got {:?} {}, want {:?} {}",
            got.shape(),
            got.dtype(),
            want.shape(),
            want.dtype()
        )));
    }
    let (g, w) = (got.to_vec_f64()?, want.to_vec_f64()?);
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let ok = a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= atol + rtol * b.abs();
        if !ok {
            return Err(fail(format!(
                "{what}[{i}]: got {a}, want {b} (shape {:?})",
                want.shape()
            )));
        }
    }
    Ok(())
}

/// Runs `f` on the CPU inputs and on the GPU inputs and compares every output.
fn parity(
    inputs: &[Input],
    tol: (f64, f64),
    f: impl Fn(bool, &[&Tensor]) -> Result<Vec<Tensor>>,
) -> Result<()> {
    let run = |gpu: bool| {
        let ts: Vec<&Tensor> = inputs.iter().map(|i| i.side(gpu)).collect();
        f(gpu, &ts)
    };
    let (want, got) = (run(false)?, run(true)?);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        close(&format!("output {i}"), g, w, tol)?;
    }
    Ok(())
}

/// Collects checks.
struct Checks(Vec<Check>);

impl Checks {
    fn add(&mut self, name: String, f: impl Fn(Device) -> Result<()> + Send + Sync + 'static) {
        self.0.push(Check {
            name: format!("ops/{name}"),
            run: Box::new(f),
        });
    }
}

/// The checks of this area.
pub fn checks() -> Vec<Check> {
    let mut c = Checks(Vec::new());
    elementwise(&mut c);
    in_place(&mut c);
    copies(&mut c);
    reductions(&mut c);
    matmuls(&mut c);
    softmaxes(&mut c);
    cross_entropies(&mut c);
    layer_norms(&mut c);
    indexing(&mut c);
    c.0
}

const UNARY: [UnaryOp; 15] = UnaryOp::ALL;

fn elementwise(c: &mut Checks) {
    let views = [View::Dense, View::Offset, View::Transposed, View::Padded];
    for (i, op) in UNARY.into_iter().enumerate() {
        let range = if matches!(op, UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Recip) {
            (0.25, 3.0)
        } else {
            (-3.0, 3.0)
        };
        for dt in FLOATS {
            // Cycle the views over the ops so each dtype meets every layout.
            let view = views[(i + dt as usize) % views.len()];
            c.add(format!("unary/{op:?}/{dt}/{}", view.name()), move |dev| {
                let x = Input::new(dev, &[29, 37], dt, view, range, 11 + i as u64)?;
                parity(&[x], tol(dt), |_, t| Ok(vec![prim::unary(op, t[0])?]))
            });
        }
    }
    let ops = BinaryOp::ALL;
    // (shape a, view a, shape b, view b): same-shape dense (vector path with a tail),
    // unaligned, transposed against a broadcast row, a column broadcast, and empty.
    let cases: [(&[usize], View, &[usize], View); 5] = [
        (&[1031], View::Dense, &[1031], View::Dense),
        (&[13, 31], View::Offset, &[13, 31], View::Padded),
        (&[17, 19], View::Transposed, &[19], View::Offset),
        (&[5, 1], View::Offset, &[3, 5, 7], View::Broadcast),
        (&[0, 3], View::Dense, &[3], View::Dense),
    ];
    for (i, op) in ops.into_iter().enumerate() {
        for dt in FLOATS {
            for (j, &(sa, va, sb, vb)) in cases.iter().enumerate() {
                c.add(format!("binary/{op:?}/{dt}/case{j}"), move |dev| {
                    let a = Input::new(dev, sa, dt, va, (-2.0, 2.0), 21 + i as u64)?;
                    // Division keeps b away from 0; the threshold needs both signs.
                    let range = if op == BinaryOp::ThresholdBackward {
                        (-2.0, 2.0)
                    } else {
                        (0.5, 2.0)
                    };
                    let b = Input::new(dev, sb, dt, vb, range, 31 + j as u64)?;
                    parity(&[a, b], tol(dt), |_, t| {
                        Ok(vec![prim::binary(op, t[0], t[1])?])
                    })
                });
            }
        }
    }
    for dt in FLOATS {
        for view in [View::Dense, View::Transposed] {
            c.add(format!("affine/{dt}/{}", view.name()), move |dev| {
                let x = Input::new(dev, &[23, 45], dt, view, (-2.0, 2.0), 41)?;
                parity(&[x], tol(dt), |_, t| {
                    Ok(vec![prim::affine(t[0], -1.5, 0.25)?])
                })
            });
        }
    }
}

fn in_place(c: &mut Checks) {
    for dt in FLOATS {
        // A dense aligned destination (vector path) and an offset one (scalar path); the
        // source strided or broadcast.
        for (dv, sv) in [
            (View::Dense, View::Transposed),
            (View::Offset, View::Broadcast),
            (View::Dense, View::Dense),
        ] {
            c.add(
                format!("add_/{dt}/{}-{}", dv.name(), sv.name()),
                move |dev| {
                    let d = Input::new(dev, &[11, 37], dt, dv, (-1.0, 1.0), 51)?;
                    let s = Input::new(dev, &[11, 37], dt, sv, (-1.0, 1.0), 52)?;
                    parity(&[d, s], tol(dt), |_, t| {
                        prim::add_(t[0], t[1], 0.75)?;
                        Ok(vec![whole(t[0])?])
                    })
                },
            );
        }
    }
    for dt in ALL {
        c.add(format!("copy_/{dt}/offset-transposed"), move |dev| {
            let d = Input::new(dev, &[9, 21], dt, View::Offset, (-9.0, 9.0), 61)?;
            let s = Input::new(dev, &[9, 21], dt, View::Transposed, (-9.0, 9.0), 62)?;
            parity(&[d, s], tol(dt), |_, t| {
                prim::copy_(t[0], t[1])?;
                Ok(vec![whole(t[0])?])
            })
        });
        c.add(format!("copy_/{dt}/offset-dense"), move |dev| {
            let d = Input::new(dev, &[9, 21], dt, View::Offset, (-9.0, 9.0), 63)?;
            let s = Input::new(dev, &[9, 21], dt, View::Offset, (-9.0, 9.0), 64)?;
            parity(&[d, s], tol(dt), |_, t| {
                prim::copy_(t[0], t[1])?;
                Ok(vec![whole(t[0])?])
            })
        });
        for (name, shape) in [("offset", &[7usize, 13][..]), ("empty", &[0, 4][..])] {
            c.add(format!("fill_/{dt}/{name}"), move |dev| {
                let d = Input::new(dev, shape, dt, View::Offset, (-9.0, 9.0), 65)?;
                parity(&[d], tol(dt), |_, t| {
                    prim::fill_(t[0], -3.0)?;
                    Ok(vec![whole(t[0])?])
                })
            });
            c.add(format!("zero_/{dt}/{name}"), move |dev| {
                let d = Input::new(dev, shape, dt, View::Offset, (-9.0, 9.0), 66)?;
                parity(&[d], tol(dt), |_, t| {
                    prim::zero_(t[0])?;
                    Ok(vec![whole(t[0])?])
                })
            });
        }
    }
}

fn copies(c: &mut Checks) {
    for dt in ALL {
        for view in [
            View::Dense,
            View::Offset,
            View::Transposed,
            View::Padded,
            View::Broadcast,
        ] {
            c.add(format!("contiguous/{dt}/{}", view.name()), move |dev| {
                let x = Input::new(dev, &[3, 7, 11], dt, view, (-50.0, 50.0), 71)?;
                parity(&[x], tol(dt), |_, t| Ok(vec![prim::contiguous(t[0])?]))
            });
        }
        for to in ALL {
            c.add(format!("cast/{dt}-{to}/transposed"), move |dev| {
                let x = Input::new(dev, &[13, 9], dt, View::Transposed, (-50.0, 50.0), 72)?;
                parity(&[x], tol(to), |_, t| Ok(vec![prim::cast(t[0], to)?]))
            });
        }
    }
}

fn reductions(c: &mut Checks) {
    // (shape, view, dims, keepdim): short reductions (one thread per output), long ones
    // (one block per output), strided inputs, all dims, no dims, and empty extents.
    let cases: [(&[usize], View, &[usize], bool); 9] = [
        (&[7, 33, 5], View::Dense, &[1], false),
        (&[7, 33, 5], View::Padded, &[0, 2], true),
        (&[5, 301], View::Transposed, &[1], false),
        (&[301, 6], View::Offset, &[0], true),
        (&[3, 70, 9], View::Broadcast, &[0, 1, 2], false),
        (&[4, 5], View::Offset, &[], false),
        (&[0, 5], View::Dense, &[0], false),
        (&[5, 0], View::Dense, &[0], true),
        (&[6, 0], View::Dense, &[1], false),
    ];
    for dt in FLOATS {
        for (i, &(shape, view, dims, keepdim)) in cases.iter().enumerate() {
            c.add(format!("sum/{dt}/case{i}-{}", view.name()), move |dev| {
                let x = Input::new(dev, shape, dt, view, (-1.0, 1.0), 81 + i as u64)?;
                parity(&[x], tol(dt), |_, t| {
                    Ok(vec![prim::sum_dims(t[0], dims, keepdim)?])
                })
            });
        }
    }
}

fn matmuls(c: &mut Checks) {
    // (a, view a, b, view b): batched with a shared 2-D b, batched pairs, transposed
    // operands, a broadcast batch, sizes across tile edges, k = 0 and m = 0.
    let cases: [(&[usize], View, &[usize], View); 7] = [
        (&[2, 13, 17], View::Dense, &[17, 11], View::Dense),
        (&[3, 5, 7], View::Offset, &[3, 7, 19], View::Transposed),
        (&[33, 18], View::Transposed, &[18, 21], View::Padded),
        (&[3, 9, 4], View::Broadcast, &[3, 4, 6], View::Offset),
        (&[2, 17, 33], View::Padded, &[2, 33, 5], View::Broadcast),
        (&[4, 0], View::Dense, &[0, 3], View::Dense),
        (&[0, 4], View::Dense, &[4, 3], View::Dense),
    ];
    for dt in FLOATS {
        for (i, &(sa, va, sb, vb)) in cases.iter().enumerate() {
            c.add(format!("matmul/{dt}/case{i}"), move |dev| {
                let a = Input::new(dev, sa, dt, va, (-1.0, 1.0), 91 + i as u64)?;
                let b = Input::new(dev, sb, dt, vb, (-1.0, 1.0), 101 + i as u64)?;
                parity(&[a, b], tol(dt), |_, t| Ok(vec![prim::matmul(t[0], t[1])?]))
            });
        }
    }
}

fn softmaxes(c: &mut Checks) {
    let cases: [(&[usize], View); 5] = [
        (&[7, 33], View::Dense),
        (&[3, 5, 301], View::Padded),
        (&[19, 6], View::Transposed),
        (&[37], View::Offset),
        (&[0, 5], View::Dense),
    ];
    for dt in FLOATS {
        for log in [false, true] {
            let name = if log { "log_softmax" } else { "softmax" };
            for (i, &(shape, view)) in cases.iter().enumerate() {
                c.add(format!("{name}/{dt}/case{i}-{}", view.name()), move |dev| {
                    let x = Input::new(dev, shape, dt, view, (-4.0, 4.0), 111 + i as u64)?;
                    let dy = Input::new(dev, shape, dt, View::Offset, (-1.0, 1.0), 121 + i as u64)?;
                    parity(&[x, dy], tol(dt), |_, t| {
                        let y = prim::softmax(t[0], log)?;
                        let dx = prim::softmax_backward(&y, t[1], log)?;
                        Ok(vec![y, dx])
                    })
                });
            }
        }
    }
}

fn cross_entropies(c: &mut Checks) {
    let reductions = [Reduction::None, Reduction::Mean, Reduction::Sum];
    for dt in FLOATS {
        for (i, reduction) in reductions.into_iter().enumerate() {
            for (j, (rows, classes, view, smoothing, ignore)) in [
                (13usize, 37usize, View::Dense, 0.0, Some(4usize)),
                (9, 300, View::Padded, 0.1, None),
                (11, 5, View::Transposed, 0.25, Some(3)),
                (0, 7, View::Dense, 0.0, None),
            ]
            .into_iter()
            .enumerate()
            {
                c.add(
                    format!("cross_entropy/{dt}/{reduction:?}/case{j}-{}", view.name()),
                    move |dev| {
                        let opts = CrossEntropyOpts {
                            ignore_index: -100,
                            label_smoothing: smoothing,
                            reduction,
                        };
                        let x = Input::new(
                            dev,
                            &[rows, classes],
                            dt,
                            view,
                            (-3.0, 3.0),
                            131 + j as u64,
                        )?;
                        let t = Input::indices(
                            dev,
                            &[rows],
                            classes,
                            ignore.map(|e| (e, -100)),
                            141 + j as u64,
                        )?;
                        let gshape: &[usize] = if reduction == Reduction::None {
                            &[rows]
                        } else {
                            &[]
                        };
                        let g =
                            Input::new(dev, gshape, dt, View::Offset, (0.5, 2.0), 151 + i as u64)?;
                        parity(&[x, t, g], tol(dt), |_, t| {
                            let (loss, lse) = prim::cross_entropy(t[0], t[1], &opts)?;
                            let dx = prim::cross_entropy_backward(t[0], t[1], &lse, t[2], &opts)?;
                            Ok(vec![loss, lse, dx])
                        })
                    },
                );
            }
        }
        c.add(
            format!("cross_entropy/{dt}/target-out-of-range"),
            move |dev| {
                let x = Input::new(dev, &[6, 5], dt, View::Dense, (-1.0, 1.0), 161)?;
                let bad = Tensor::from_vec(vec![0i64, 4, 5, 1, -100, 2], &[6], dev)?;
                // No synchronisation in the op: the error surfaces at the next one.
                prim::cross_entropy(&x.gpu, &bad, &CrossEntropyOpts::default())?;
                deferred_error(dev, "row 2")
            },
        );
    }
}

fn layer_norms(c: &mut Checks) {
    let cases: [(&[usize], View, bool); 5] = [
        (&[9, 70], View::Dense, true),
        (&[3, 4, 33], View::Padded, true),
        (&[17, 7], View::Transposed, false),
        (&[300], View::Offset, true),
        (&[0, 6], View::Dense, true),
    ];
    for dt in FLOATS {
        for (i, &(shape, view, affine)) in cases.iter().enumerate() {
            c.add(
                format!("layer_norm/{dt}/case{i}-{}", view.name()),
                move |dev| {
                    let d = *shape.last().unwrap_or(&1);
                    let x = Input::new(dev, shape, dt, view, (-2.0, 3.0), 171 + i as u64)?;
                    let dy = Input::new(dev, shape, dt, View::Offset, (-1.0, 1.0), 181 + i as u64)?;
                    let w = Input::new(dev, &[d], dt, View::Offset, (0.5, 1.5), 191)?;
                    let b = Input::new(dev, &[d], dt, View::Dense, (-0.5, 0.5), 192)?;
                    parity(&[x, dy, w, b], tol(dt), |_, t| {
                        let (w, b) = if affine {
                            (Some(t[2]), Some(t[3]))
                        } else {
                            (None, None)
                        };
                        let (y, mean, rstd) = prim::layer_norm(t[0], w, b, 1e-5)?;
                        let (dx, dw, db) = prim::layer_norm_backward(t[1], t[0], &mean, &rstd, w)?;
                        let mut out = vec![y, mean, rstd, dx];
                        out.extend(dw.into_iter().chain(db));
                        Ok(out)
                    })
                },
            );
        }
    }
}

fn indexing(c: &mut Checks) {
    for dt in FLOATS {
        for (i, (idx_shape, view)) in [
            (&[3usize, 5][..], View::Dense),
            (&[7][..], View::Transposed),
            (&[0, 2][..], View::Dense),
        ]
        .into_iter()
        .enumerate()
        {
            c.add(
                format!("embedding/{dt}/case{i}-{}", view.name()),
                move |dev| {
                    let w = Input::new(dev, &[11, 6], dt, view, (-1.0, 1.0), 201)?;
                    // Few distinct indices, so the gradient's atomics collide.
                    let idx = Input::indices(dev, idx_shape, 4, None, 202 + i as u64)?;
                    let mut gshape = idx_shape.to_vec();
                    gshape.push(6);
                    let g = Input::new(dev, &gshape, dt, View::Padded, (-1.0, 1.0), 203)?;
                    parity(&[w, idx, g], tol(dt), |_, t| {
                        let y = prim::embedding(t[0], t[1])?;
                        let dw = prim::embedding_backward(t[2], t[1], 11)?;
                        Ok(vec![y, dw])
                    })
                },
            );
        }
        c.add(format!("embedding/{dt}/index-out-of-range"), move |dev| {
            let w = Input::new(dev, &[4, 3], dt, View::Dense, (-1.0, 1.0), 211)?;
            let bad = Tensor::from_vec(vec![0i64, 3, 4, 1], &[4], dev)?;
            prim::embedding(&w.gpu, &bad)?;
            deferred_error(dev, "position 2")
        });
        for (i, (shape, view)) in [
            (&[13usize, 37][..], View::Dense),
            (&[5, 300][..], View::Padded),
            (&[9, 4][..], View::Transposed),
        ]
        .into_iter()
        .enumerate()
        {
            c.add(format!("argmax/{dt}/case{i}-{}", view.name()), move |dev| {
                // Integer values in a small range: many ties, where the first index wins.
                let x = Input::generate(dev, shape, dt, view, 221 + i as u64, |r| {
                    (r.uniform() * 4.0).floor()
                })?;
                parity(&[x], tol(DType::I64), |_, t| Ok(vec![prim::argmax(t[0])?]))
            });
        }
        for (name, shape, p) in [
            ("odd", &[1031usize][..], 0.3),
            ("p0", &[5, 7][..], 0.0),
            ("empty", &[0][..], 0.5),
        ] {
            c.add(format!("dropout/{dt}/{name}"), move |dev| {
                // Bit-identical masks: compared exactly.
                let want = prim::dropout_mask(shape, p, 0xDEAD_BEEF, dt, Device::Cpu)?;
                let got = prim::dropout_mask(shape, p, 0xDEAD_BEEF, dt, dev)?;
                close("mask", &got, &want, (0.0, 0.0))
            });
        }
    }
}
