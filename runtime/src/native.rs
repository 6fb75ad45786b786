//! The native step engine: the ONNX step graph translated, once at load, into a static plan
//! over preallocated `f32` buffers, run one hop at a time with no heap allocation.
//!
//! tract stays the loader and the reference: [`crate::model::Model`] builds this plan beside
//! tract's, runs a probe through both and serves the native plan only when they agree (see
//! `hark::model`). This module knows nothing of that; it translates and runs.
//!
//! # What it translates
//!
//! The graph is walked in its (topological) order with every shape concrete (`features`
//! `[1, 1, n_mels]`, `h_in`/`c_in` `[layers, 1, hidden]`). Supported, in the default domain:
//!
//! - `LSTM`: forward direction, default activations (sigmoid, tanh, tanh), `layout = 0`, no
//!   clip, no peepholes, no `sequence_lens`; `B`, `initial_h`, `initial_c` optional; `W`, `R`
//!   and `B` constant. Packed at load into one `[4H, I + H]` matrix (rows `W | R`, so a gate is
//!   one contiguous dot product with `[x, h]`) and one bias `Wb + Rb`.
//! - `MatMul` (numpy broadcasting; a constant 2-D right side is packed transposed, one
//!   contiguous row per output), `Gemm` (`transA`, `transB`, `alpha`, `beta`, `C` optional).
//! - `Add`, `Sub`, `Mul`, `Div` with multidirectional broadcasting.
//! - `Sigmoid`, `Tanh`, `Relu`, `Exp`, `Log`, `Neg`, `Abs`, `Sqrt`, `Softmax` (any axis).
//! - `ReduceMean`, `ReduceSum` (axes as attribute or input, `keepdims`).
//! - `Conv`, one-dimensional (`[1, C, T]`, the causal CNN's step: its past frames are
//!   concatenated in front of the new one, so no padding): constant `W` and `B`, any
//!   dilation, `group = 1`, stride 1, no padding. Run as one mat-vec per output frame over the
//!   gathered taps (`[C_in * kernel]`, the weights' own row layout).
//! - `Reshape`, `Flatten`, `Squeeze`, `Unsqueeze`, `Identity` and a `Transpose` that keeps
//!   the memory order: no work at all, the output is a view of the input's buffer;
//!   `Slice` (a contiguous range is a view too), `Concat`, other `Transpose`s: copies (block
//!   copies where the elements come in contiguous runs, as a slice along the last axis does).
//! - `Constant`, initializers; a node whose inputs are all constant is computed at load.
//!
//! Anything else (an op, an attribute value, an integer tensor computed at run time) makes
//! [`NativePlan::build`] decline with a reason naming the node.
//!
//! # How it runs
//!
//! Every value computed per hop has a buffer of its own, allocated when a stream is made
//! ([`NativePlan::state`]); constants live in the shared plan. A step takes its output
//! buffers out of the stream's buffer list (`std::mem::take`, which leaves an empty `Vec`
//! and allocates nothing), computes them from its inputs and puts them back: plain safe
//! Rust, no allocation per hop (`runtime/tests/model_alloc.rs` counts).
//!
//! The mat-vec products are written for the auto-vectoriser: four rows at a time, sixteen
//! accumulators each. On x86-64 the same code is also compiled with AVX2 and FMA enabled
//! and chosen at run time when the CPU has them (the one `unsafe` call, below); aarch64
//! (Raspberry Pi) has NEON and fused multiply-add in its base instruction set, so its
//! portable build uses them directly. `tanh` and the sigmoid use a rational approximation
//! (absolute error below 1e-6) that vectorises, as tract's own kernels do.

use std::collections::HashMap;

use tract_onnx::pb;

/// At most this many outputs per step (the LSTM's three and its scratch buffer).
const MAX_OUTS: usize = 4;

/// Where a value lives: a constant of the plan or a buffer of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    Const,
    Work,
}

/// A value's elements: `len` floats from `off` in buffer `buf` of `space`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    space: Space,
    buf: usize,
    off: usize,
    len: usize,
}

/// A value during translation.
#[derive(Debug, Clone)]
enum Val {
    /// A float tensor.
    F { slot: Slot, shape: Vec<usize> },
    /// A constant integer tensor (shapes, axes, slice bounds).
    I { data: Vec<i64>, shape: Vec<usize> },
}

#[derive(Debug, Clone, Copy)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy)]
enum UnOp {
    Sigmoid,
    Tanh,
    Relu,
    Exp,
    Log,
    Neg,
    Abs,
    Sqrt,
}

/// How an operand of a broadcasting op is read at output element `i`.
#[derive(Debug, Clone)]
enum Bcast {
    /// Element `i` (same shape as the output).
    Same,
    /// Element 0.
    Scalar,
    /// Element `i % len` (a suffix of the output's shape).
    Cycle(usize),
    /// Element `map[i]`.
    Map(Vec<u32>),
}

impl Bcast {
    #[inline]
    fn at(&self, x: &[f32], i: usize) -> f32 {
        match self {
            Bcast::Same => x[i],
            Bcast::Scalar => x[0],
            Bcast::Cycle(n) => x[i % n],
            Bcast::Map(m) => x[m[i] as usize],
        }
    }
}

#[derive(Debug, Clone)]
struct LstmStep {
    seq: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    has_h0: bool,
    has_c0: bool,
}

#[derive(Debug, Clone)]
struct GeneralMatMul {
    m: usize,
    k: usize,
    n: usize,
    /// Element strides of A along m and k, of B along k and n.
    sa: (usize, usize),
    sb: (usize, usize),
    alpha: f32,
    /// (A offset, B offset, output offset) of every batch.
    batches: Vec<(usize, usize, usize)>,
}

/// What a step computes. Inputs and outputs are in [`Step::ins`] and [`Step::outs`].
#[derive(Debug, Clone)]
enum Kind {
    /// ins: X, packed `[4H, I+H]` weights, bias `[4H]`, then `h0`, `c0` when present;
    /// outs: Y, Y_h, Y_c, scratch `[I + H + 4H]`.
    Lstm(LstmStep),
    /// ins: A (`rows x k`, contiguous), packed weights `[n, k]`, optional bias `[rows*n]`.
    MatVec { rows: usize, k: usize, n: usize },
    /// ins: A, B.
    MatMul(GeneralMatMul),
    /// ins: a, b.
    Binary { op: BinOp, a: Bcast, b: Bcast },
    /// ins: x.
    Unary(UnOp),
    /// ins: x.
    Softmax {
        outer: usize,
        axis: usize,
        inner: usize,
    },
    /// ins: x; `map[i]` is the output element input element `i` adds to.
    Reduce { map: Vec<u32>, scale: f32 },
    /// ins: x; output element `i` is input element `idx[i]`.
    Gather { idx: Vec<u32> },
    /// ins: x; the output is the input's runs `(start, len)` one after the other (a gather
    /// whose indices come in contiguous runs, such as a slice along the last axis: one
    /// block copy per run).
    Runs { runs: Vec<(u32, u32)> },
    /// ins: the parts; `chunks[j]` contiguous elements of part `j`, `outer` times.
    Concat { outer: usize, chunks: Vec<usize> },
    /// ins: x (`[c_in, t_in]`), weights `[c_out, c_in * kernel]`, optional bias `[c_out]`;
    /// outs: y (`[c_out, t_out]`), taps scratch `[c_in * kernel]`, column scratch `[c_out]`.
    Conv(ConvStep),
    /// ins: x.
    Copy,
}

#[derive(Debug, Clone)]
struct ConvStep {
    c_in: usize,
    t_in: usize,
    t_out: usize,
    kernel: usize,
    dilation: usize,
}

#[derive(Debug, Clone)]
struct Step {
    kind: Kind,
    ins: Vec<Slot>,
    outs: Vec<Slot>,
}

/// A translated step graph, shared by every stream of a model.
#[derive(Debug)]
pub struct NativePlan {
    consts: Vec<Vec<f32>>,
    work_sizes: Vec<usize>,
    steps: Vec<Step>,
    features: Slot,
    h_in: Slot,
    c_in: Slot,
    scores: Slot,
    h_out: Slot,
    c_out: Slot,
    simd: bool,
    summary: String,
}

/// One stream's buffers: every value of the plan, the LSTM state in `h_in`/`c_in`.
#[derive(Debug, Clone)]
pub struct NativeState {
    bufs: Vec<Vec<f32>>,
}

struct Inputs<'a> {
    consts: &'a [Vec<f32>],
    bufs: &'a [Vec<f32>],
}

impl<'a> Inputs<'a> {
    #[inline]
    fn get(&self, s: &Slot) -> &'a [f32] {
        let b = match s.space {
            Space::Const => &self.consts[s.buf],
            Space::Work => &self.bufs[s.buf],
        };
        &b[s.off..s.off + s.len]
    }
}

/// Runs one step: takes its output buffers out of `bufs`, fills them, puts them back.
fn exec(step: &Step, consts: &[Vec<f32>], bufs: &mut [Vec<f32>], simd: bool) {
    let mut outs: heapless::Vec<Vec<f32>, MAX_OUTS> = heapless::Vec::new();
    for o in &step.outs {
        // Never fails: a step has at most MAX_OUTS outputs (checked when it is made).
        let _ = outs.push(std::mem::take(&mut bufs[o.buf]));
    }
    {
        let inp = Inputs {
            consts,
            bufs: &*bufs,
        };
        run_kind(&step.kind, &step.ins, &inp, &mut outs, simd);
    }
    for (o, v) in step.outs.iter().zip(outs) {
        bufs[o.buf] = v;
    }
}

fn run_kind(kind: &Kind, ins: &[Slot], inp: &Inputs<'_>, outs: &mut [Vec<f32>], simd: bool) {
    match kind {
        Kind::Lstm(l) => {
            let x = inp.get(&ins[0]);
            let w = inp.get(&ins[1]);
            let bias = inp.get(&ins[2]);
            let mut next = 3;
            let h0 = l.has_h0.then(|| {
                next += 1;
                inp.get(&ins[next - 1])
            });
            let c0 = l.has_c0.then(|| inp.get(&ins[next]));
            let [y, yh, yc, scratch] = outs else {
                unreachable!("an LSTM step has four outputs")
            };
            match h0 {
                Some(h0) => yh.copy_from_slice(h0),
                None => yh.fill(0.0),
            }
            match c0 {
                Some(c0) => yc.copy_from_slice(c0),
                None => yc.fill(0.0),
            }
            let (i_n, h_n) = (l.input, l.hidden);
            let (xh, gates) = scratch.split_at_mut(i_n + h_n);
            for t in 0..l.seq {
                for b in 0..l.batch {
                    let xt = &x[(t * l.batch + b) * i_n..][..i_n];
                    let h = &mut yh[b * h_n..][..h_n];
                    let c = &mut yc[b * h_n..][..h_n];
                    xh[..i_n].copy_from_slice(xt);
                    xh[i_n..].copy_from_slice(h);
                    kernels::matvec(simd, w, xh, Some(bias), gates);
                    kernels::lstm_cell(simd, gates, c, h);
                    y[(t * l.batch + b) * h_n..][..h_n].copy_from_slice(h);
                }
            }
        }
        Kind::MatVec { rows, k, n } => {
            let a = inp.get(&ins[0]);
            let w = inp.get(&ins[1]);
            let bias = ins.get(2).map(|s| inp.get(s));
            let out = &mut outs[0];
            for r in 0..*rows {
                kernels::matvec(
                    simd,
                    w,
                    &a[r * k..(r + 1) * k],
                    bias.map(|b| &b[r * n..(r + 1) * n]),
                    &mut out[r * n..(r + 1) * n],
                );
            }
        }
        Kind::MatMul(g) => {
            let (a, b) = (inp.get(&ins[0]), inp.get(&ins[1]));
            let out = &mut outs[0];
            for &(ao, bo, oo) in &g.batches {
                for i in 0..g.m {
                    for j in 0..g.n {
                        let mut s = 0.0f32;
                        for kk in 0..g.k {
                            s +=
                                a[ao + i * g.sa.0 + kk * g.sa.1] * b[bo + kk * g.sb.0 + j * g.sb.1];
                        }
                        out[oo + i * g.n + j] = g.alpha * s;
                    }
                }
            }
        }
        Kind::Binary { op, a, b } => {
            let (x, y) = (inp.get(&ins[0]), inp.get(&ins[1]));
            let out = &mut outs[0];
            match op {
                BinOp::Add => binary(out, x, a, y, b, |p, q| p + q),
                BinOp::Sub => binary(out, x, a, y, b, |p, q| p - q),
                BinOp::Mul => binary(out, x, a, y, b, |p, q| p * q),
                BinOp::Div => binary(out, x, a, y, b, |p, q| p / q),
            }
        }
        Kind::Unary(op) => {
            let x = inp.get(&ins[0]);
            let out = &mut outs[0][..];
            let f = |g: fn(f32) -> f32, out: &mut [f32]| {
                for (o, v) in out.iter_mut().zip(x) {
                    *o = g(*v);
                }
            };
            match op {
                UnOp::Sigmoid => f(kernels::sigmoid, out),
                UnOp::Tanh => f(kernels::tanh, out),
                UnOp::Relu => f(|v| v.max(0.0), out),
                UnOp::Exp => f(f32::exp, out),
                UnOp::Log => f(f32::ln, out),
                UnOp::Neg => f(|v| -v, out),
                UnOp::Abs => f(f32::abs, out),
                UnOp::Sqrt => f(f32::sqrt, out),
            }
        }
        Kind::Softmax { outer, axis, inner } => {
            let x = inp.get(&ins[0]);
            let out = &mut outs[0];
            for o in 0..*outer {
                for i in 0..*inner {
                    let at = |j: usize| (o * axis + j) * inner + i;
                    let m = (0..*axis)
                        .map(|j| x[at(j)])
                        .fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0;
                    for j in 0..*axis {
                        let e = (x[at(j)] - m).exp();
                        out[at(j)] = e;
                        sum += e;
                    }
                    for j in 0..*axis {
                        out[at(j)] /= sum;
                    }
                }
            }
        }
        Kind::Reduce { map, scale } => {
            let x = inp.get(&ins[0]);
            let out = &mut outs[0];
            out.fill(0.0);
            for (v, &m) in x.iter().zip(map) {
                out[m as usize] += v;
            }
            if *scale != 1.0 {
                out.iter_mut().for_each(|v| *v *= scale);
            }
        }
        Kind::Gather { idx } => {
            let x = inp.get(&ins[0]);
            for (o, &i) in outs[0].iter_mut().zip(idx) {
                *o = x[i as usize];
            }
        }
        Kind::Runs { runs } => {
            let x = inp.get(&ins[0]);
            let out = &mut outs[0];
            let mut at = 0;
            for &(start, len) in runs {
                let (start, len) = (start as usize, len as usize);
                copy_short(&mut out[at..at + len], &x[start..start + len]);
                at += len;
            }
        }
        Kind::Concat { outer, chunks } => {
            let out = &mut outs[0];
            let mut at = 0;
            for o in 0..*outer {
                for (s, &n) in ins.iter().zip(chunks) {
                    copy_short(&mut out[at..at + n], &inp.get(s)[o * n..(o + 1) * n]);
                    at += n;
                }
            }
        }
        Kind::Conv(c) => {
            let x = inp.get(&ins[0]);
            let w = inp.get(&ins[1]);
            let bias = ins.get(2).map(|s| inp.get(s));
            let [y, taps, col] = outs else {
                unreachable!("a Conv step has three outputs")
            };
            for t in 0..c.t_out {
                for ci in 0..c.c_in {
                    let row = &x[ci * c.t_in..(ci + 1) * c.t_in];
                    for k in 0..c.kernel {
                        taps[ci * c.kernel + k] = row[t + k * c.dilation];
                    }
                }
                kernels::matvec(simd, w, taps, bias, col);
                for (o, &v) in col.iter().enumerate() {
                    y[o * c.t_out + t] = v;
                }
            }
        }
        Kind::Copy => outs[0].copy_from_slice(inp.get(&ins[0])),
    }
}

/// `dst.copy_from_slice(src)` without a `memcpy` call for the few elements of a chunk of
/// Concat or a run of a slice (the CNN's state moves as 48 chunks of 2 to 33 floats per
/// layer, where the call costs more than the copy).
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    debug_assert_eq!(dst.len(), src.len());
    if dst.len() <= 32 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    } else {
        dst.copy_from_slice(src);
    }
}

#[inline(always)]
fn binary(
    out: &mut [f32],
    x: &[f32],
    a: &Bcast,
    y: &[f32],
    b: &Bcast,
    f: impl Fn(f32, f32) -> f32,
) {
    match (a, b) {
        (Bcast::Same, Bcast::Same) => {
            for ((o, p), q) in out.iter_mut().zip(x).zip(y) {
                *o = f(*p, *q);
            }
        }
        (Bcast::Same, Bcast::Cycle(n)) => {
            for (oc, xc) in out.chunks_exact_mut(*n).zip(x.chunks_exact(*n)) {
                for ((o, p), q) in oc.iter_mut().zip(xc).zip(y) {
                    *o = f(*p, *q);
                }
            }
        }
        (Bcast::Same, Bcast::Scalar) => {
            let q = y[0];
            for (o, p) in out.iter_mut().zip(x) {
                *o = f(*p, q);
            }
        }
        _ => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f(a.at(x, i), b.at(y, i));
            }
        }
    }
}

/// The arithmetic kernels, portable and (x86-64) AVX2 + FMA.
pub mod kernels {
    /// Lanes of one accumulator row (two AVX registers, four NEON registers).
    const L: usize = 16;

    /// Whether this CPU runs the AVX2 + FMA build of the kernels (x86-64 only).
    pub fn simd_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Fused multiply-add where the target has it in its base instruction set (aarch64);
    /// elsewhere the portable build multiplies and adds (`mul_add` without hardware FMA is
    /// a slow library call).
    const PORTABLE_FMA: bool = cfg!(target_arch = "aarch64");

    #[inline(always)]
    fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
        if FMA { a.mul_add(b, c) } else { a * b + c }
    }

    #[inline(always)]
    fn hsum(v: &[f32; L]) -> f32 {
        let mut s = [0.0f32; 4];
        for c in v.chunks_exact(4) {
            for j in 0..4 {
                s[j] += c[j];
            }
        }
        (s[0] + s[2]) + (s[1] + s[3])
    }

    /// `out[r] = bias[r] + w[r, ..] · x` for every row `r` of the row-major
    /// `[out.len(), x.len()]` matrix `w`.
    #[inline(always)]
    fn matvec_impl<const FMA: bool>(w: &[f32], x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        let cols = x.len();
        let rows = out.len();
        assert_eq!(w.len(), rows * cols, "matrix and vectors do not fit");
        if let Some(b) = bias {
            assert_eq!(b.len(), rows);
        }
        let (xc, xt) = x.as_chunks::<L>();
        let main = xc.len() * L;
        let mut r = 0;
        while r + 4 <= rows {
            let w4 = &w[r * cols..(r + 4) * cols];
            let (w0, rest) = w4.split_at(cols);
            let (w1, rest) = rest.split_at(cols);
            let (w2, w3) = rest.split_at(cols);
            let rows4 = [w0, w1, w2, w3];
            // Four accumulator rows in locals (not an indexed array, which LLVM would keep
            // on the stack), iterated by zip (no bounds checks): each `j` loop becomes
            // vector fused multiply-adds.
            let (mut a0, mut a1, mut a2, mut a3) =
                ([0.0f32; L], [0.0f32; L], [0.0f32; L], [0.0f32; L]);
            let chunks = xc
                .iter()
                .zip(w0.as_chunks::<L>().0)
                .zip(w1.as_chunks::<L>().0)
                .zip(w2.as_chunks::<L>().0)
                .zip(w3.as_chunks::<L>().0);
            for ((((xv, v0), v1), v2), v3) in chunks {
                for j in 0..L {
                    a0[j] = fmadd::<FMA>(v0[j], xv[j], a0[j]);
                    a1[j] = fmadd::<FMA>(v1[j], xv[j], a1[j]);
                    a2[j] = fmadd::<FMA>(v2[j], xv[j], a2[j]);
                    a3[j] = fmadd::<FMA>(v3[j], xv[j], a3[j]);
                }
            }
            let acc = [a0, a1, a2, a3];
            for i in 0..4 {
                let mut s = hsum(&acc[i]);
                for (k, xv) in xt.iter().enumerate() {
                    s = fmadd::<FMA>(rows4[i][main + k], *xv, s);
                }
                out[r + i] = s + bias.map_or(0.0, |b| b[r + i]);
            }
            r += 4;
        }
        while r < rows {
            let wr = &w[r * cols..(r + 1) * cols];
            let (wc, wt) = wr.as_chunks::<L>();
            let mut acc = [0.0f32; L];
            for (wv, xv) in wc.iter().zip(xc) {
                for j in 0..L {
                    acc[j] = fmadd::<FMA>(wv[j], xv[j], acc[j]);
                }
            }
            let mut s = hsum(&acc);
            for (a, b) in wt.iter().zip(xt) {
                s = fmadd::<FMA>(*a, *b, s);
            }
            out[r] = s + bias.map_or(0.0, |b| b[r]);
            r += 1;
        }
    }

    /// One LSTM cell update from its gate pre-activations `gates` (`[4H]`, ONNX order i, o,
    /// f, c): `c = f c + i g`, `h = o tanh(c)`, in place.
    #[inline(always)]
    fn lstm_cell_impl(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
        let n = c.len();
        assert!(gates.len() == 4 * n && h.len() == n);
        let (gi, rest) = gates.split_at(n);
        let (go, rest) = rest.split_at(n);
        let (gf, gc) = rest.split_at(n);
        for k in 0..n {
            let i = sigmoid(gi[k]);
            let o = sigmoid(go[k]);
            let f = sigmoid(gf[k]);
            let g = tanh(gc[k]);
            let cn = f * c[k] + i * g;
            c[k] = cn;
            h[k] = o * tanh(cn);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn matvec_avx2(w: &[f32], x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        matvec_impl::<true>(w, x, bias, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn lstm_cell_avx2(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
        lstm_cell_impl(gates, c, h)
    }

    /// `out[r] = bias[r] + w[r, ..] · x`; `simd` selects the AVX2 + FMA build (only ever
    /// true where [`simd_available`] said so).
    pub fn matvec(simd: bool, w: &[f32], x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is only true when the CPU has AVX2 and FMA (simd_available),
            // which is all a `target_feature` function needs; the function itself is safe
            // code (slices, bounds-checked).
            return unsafe { matvec_avx2(w, x, bias, out) };
        }
        let _ = simd;
        matvec_impl::<PORTABLE_FMA>(w, x, bias, out)
    }

    /// The LSTM cell update (see `lstm_cell_impl`); `simd` as in [`matvec`].
    pub fn lstm_cell(simd: bool, gates: &[f32], c: &mut [f32], h: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: as in `matvec`.
            return unsafe { lstm_cell_avx2(gates, c, h) };
        }
        let _ = simd;
        lstm_cell_impl(gates, c, h)
    }

    /// tanh by a rational approximation (Eigen's `generic_fast_tanh_float`): odd degree-13
    /// numerator, even degree-6 denominator, input clamped to ±7.905311 (beyond, tanh rounds to ±1). Branch-free, so loops over
    /// it vectorise; absolute error below 1e-6.
    #[inline(always)]
    pub fn tanh(x: f32) -> f32 {
        let x = x.clamp(-7.905_311, 7.905_311);
        let x2 = x * x;
        let p = x2 * -2.760_768_5e-16 + 2.000_188e-13;
        let p = p * x2 + -8.604_672e-11;
        let p = p * x2 + 5.122_297e-8;
        let p = p * x2 + 1.485_722_4e-5;
        let p = p * x2 + 6.372_619_3e-4;
        let p = p * x2 + 4.893_524_6e-3;
        let p = p * x;
        let q = x2 * 1.198_258_4e-6 + 1.185_347_1e-4;
        let q = q * x2 + 2.268_434_6e-3;
        let q = q * x2 + 4.893_525e-3;
        p / q
    }

    /// The logistic sigmoid, `(1 + tanh(x / 2)) / 2`.
    #[inline(always)]
    pub fn sigmoid(x: f32) -> f32 {
        0.5 + 0.5 * tanh(0.5 * x)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn tanh_and_sigmoid_are_within_1e6_of_std() {
            let (mut et, mut es) = (0.0f64, 0.0f64);
            for i in -400_000..=400_000 {
                let x = i as f32 * 5e-5;
                et = et.max((tanh(x) as f64 - (x as f64).tanh()).abs());
                let s = 1.0 / (1.0 + (-(x as f64)).exp());
                es = es.max((sigmoid(x) as f64 - s).abs());
            }
            for x in [-1e30f32, -50.0, 50.0, 1e30] {
                assert_eq!(tanh(x).abs(), 1.0);
            }
            assert!(et < 1e-6, "tanh error {et}");
            assert!(es < 1e-6, "sigmoid error {es}");
        }

        #[test]
        fn matvec_matches_a_plain_loop_in_both_builds() {
            for (rows, cols) in [(1, 1), (4, 16), (7, 33), (256, 128), (5, 3)] {
                let w: Vec<f32> = (0..rows * cols)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                    .collect();
                let x: Vec<f32> = (0..cols)
                    .map(|i| ((i * 11 % 17) as f32 - 8.0) / 8.0)
                    .collect();
                let b: Vec<f32> = (0..rows).map(|i| i as f32 * 0.01).collect();
                let want: Vec<f32> = (0..rows)
                    .map(|r| b[r] + (0..cols).map(|k| w[r * cols + k] * x[k]).sum::<f32>())
                    .collect();
                for simd in [false, simd_available()] {
                    let mut out = vec![0.0; rows];
                    matvec(simd, &w, &x, Some(&b), &mut out);
                    for (o, e) in out.iter().zip(&want) {
                        assert!(
                            (o - e).abs() < 1e-4,
                            "{rows}x{cols} simd {simd}: {o} vs {e}"
                        );
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Translation.

/// The step that gathers input elements `idx` in order: block copies when the indices come
/// in runs of 4 or more on average, one index per element otherwise.
fn gather(idx: Vec<u32>) -> Kind {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &i in &idx {
        match runs.last_mut() {
            Some((start, len)) if *start + *len == i => *len += 1,
            _ => runs.push((i, 1)),
        }
    }
    if runs.len() * 4 <= idx.len() {
        Kind::Runs { runs }
    } else {
        Kind::Gather { idx }
    }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Normalises a possibly negative axis against `rank`.
fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} out of range for rank {rank}"))
    }
}

/// Numpy broadcast of two shapes.
fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let r = a.len().max(b.len());
    let pad = |s: &[usize]| -> Vec<usize> {
        std::iter::repeat_n(1, r - s.len())
            .chain(s.iter().copied())
            .collect()
    };
    let (pa, pb) = (pad(a), pad(b));
    pa.iter()
        .zip(&pb)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y => Ok(x),
            (1, _) => Ok(y),
            (_, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// For every element of `out` (row-major), the element of `src` (broadcast to it) it reads.
fn broadcast_map(src: &[usize], out: &[usize]) -> Vec<u32> {
    let pad: Vec<usize> = std::iter::repeat_n(1, out.len() - src.len())
        .chain(src.iter().copied())
        .collect();
    let ss = strides(&pad);
    let eff: Vec<usize> = pad
        .iter()
        .zip(&ss)
        .map(|(&d, &s)| if d == 1 { 0 } else { s })
        .collect();
    index_map(out, &eff)
}

/// For every element of a row-major tensor of `shape`, `sum(index[d] * strides[d])`.
fn index_map(shape: &[usize], strides: &[usize]) -> Vec<u32> {
    let n = numel(shape);
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        out.push(idx.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>() as u32);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn bcast_of(src: &[usize], out: &[usize]) -> Bcast {
    let n = numel(src);
    if src == out
        || (n == numel(out)
            && src
                .iter()
                .filter(|&&d| d != 1)
                .eq(out.iter().filter(|&&d| d != 1)))
    {
        Bcast::Same
    } else if n == 1 {
        Bcast::Scalar
    } else {
        // A suffix of the output shape (leading ones aside) repeats every n elements.
        let core: Vec<usize> = src.iter().copied().skip_while(|&d| d == 1).collect();
        if out.ends_with(&core) && numel(&core) == n {
            Bcast::Cycle(n)
        } else {
            Bcast::Map(broadcast_map(src, out))
        }
    }
}

fn attr<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn attr_i(n: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}

fn attr_f(n: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map_or(default, |a| a.f)
}

fn attr_s(n: &pb::NodeProto, name: &str) -> Option<String> {
    attr(n, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

fn attr_ints(n: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

/// A constant tensor read from its protobuf.
enum Parsed {
    F(Vec<f32>, Vec<usize>),
    I(Vec<i64>, Vec<usize>),
}

/// A constant tensor from its protobuf.
fn tensor(t: &pb::TensorProto) -> Result<Parsed, String> {
    use pb::tensor_proto::DataType;
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err(format!(
            "tensor {:?} keeps its data in an external file",
            t.name
        ));
    }
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("tensor {:?} has dimension {d}", t.name)))
        .collect::<Result<Vec<_>, _>>()?;
    let n = numel(&shape);
    let raw = &t.raw_data;
    let check = |got: usize| {
        if got == n {
            Ok(())
        } else {
            Err(format!(
                "tensor {:?} holds {got} values for shape {shape:?}",
                t.name
            ))
        }
    };
    if t.data_type == DataType::Float as i32 {
        let data: Vec<f32> = if raw.is_empty() {
            t.float_data.clone()
        } else {
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        check(data.len())?;
        return Ok(Parsed::F(data, shape));
    }
    let data: Vec<i64> = if t.data_type == DataType::Int64 as i32 {
        if raw.is_empty() {
            t.int64_data.clone()
        } else {
            raw.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect()
        }
    } else if t.data_type == DataType::Int32 as i32 {
        if raw.is_empty() {
            t.int32_data.iter().map(|&v| i64::from(v)).collect()
        } else {
            raw.chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes(b.try_into().expect("4 bytes"))))
                .collect()
        }
    } else {
        return Err(format!(
            "tensor {:?} has element type {} (the native engine takes float32, int64, int32)",
            t.name, t.data_type
        ));
    };
    check(data.len())?;
    Ok(Parsed::I(data, shape))
}

struct Builder {
    vals: HashMap<String, Val>,
    consts: Vec<Vec<f32>>,
    work: Vec<usize>,
    steps: Vec<Step>,
}

impl Builder {
    fn konst(&mut self, data: Vec<f32>, shape: Vec<usize>) -> Val {
        let len = data.len();
        self.consts.push(data);
        Val::F {
            slot: Slot {
                space: Space::Const,
                buf: self.consts.len() - 1,
                off: 0,
                len,
            },
            shape,
        }
    }

    fn tensor(&mut self, t: &pb::TensorProto) -> Result<Val, String> {
        Ok(match tensor(t)? {
            Parsed::F(data, shape) => self.konst(data, shape),
            Parsed::I(data, shape) => Val::I { data, shape },
        })
    }

    fn work_buf(&mut self, len: usize) -> Slot {
        self.work.push(len);
        Slot {
            space: Space::Work,
            buf: self.work.len() - 1,
            off: 0,
            len,
        }
    }

    fn data(&self, s: &Slot) -> &[f32] {
        assert_eq!(s.space, Space::Const);
        &self.consts[s.buf][s.off..s.off + s.len]
    }

    /// Adds a step; when every input is constant it is computed now and its outputs are
    /// constants.
    fn emit(&mut self, kind: Kind, ins: Vec<Slot>, out_shapes: Vec<Vec<usize>>) -> Vec<Val> {
        assert!(out_shapes.len() <= MAX_OUTS);
        if ins.iter().all(|s| s.space == Space::Const) {
            let mut tmp: Vec<Vec<f32>> = out_shapes.iter().map(|s| vec![0.0; numel(s)]).collect();
            let step = Step {
                kind,
                ins,
                outs: out_shapes
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Slot {
                        space: Space::Work,
                        buf: i,
                        off: 0,
                        len: numel(s),
                    })
                    .collect(),
            };
            exec(&step, &self.consts, &mut tmp, false);
            return tmp
                .into_iter()
                .zip(out_shapes)
                .map(|(d, s)| self.konst(d, s))
                .collect();
        }
        let outs: Vec<Slot> = out_shapes.iter().map(|s| self.work_buf(numel(s))).collect();
        self.steps.push(Step {
            kind,
            ins,
            outs: outs.clone(),
        });
        outs.into_iter()
            .zip(out_shapes)
            .map(|(slot, shape)| Val::F { slot, shape })
            .collect()
    }

    fn get(&self, name: &str, node: &pb::NodeProto) -> Result<&Val, String> {
        self.vals.get(name).ok_or_else(|| {
            format!(
                "node {:?} reads {name:?}, which nothing computes before it",
                node.name
            )
        })
    }

    /// Input `i` of `node` if present (not absent, not the empty name).
    fn opt_input(&self, node: &pb::NodeProto, i: usize) -> Result<Option<&Val>, String> {
        match node.input.get(i) {
            Some(n) if !n.is_empty() => self.get(n, node).map(Some),
            _ => Ok(None),
        }
    }

    fn float_in(&self, node: &pb::NodeProto, i: usize) -> Result<(Slot, Vec<usize>), String> {
        match self.opt_input(node, i)? {
            Some(Val::F { slot, shape }) => Ok((*slot, shape.clone())),
            Some(Val::I { .. }) => Err(format!(
                "node {:?} ({}): input {i} is an integer tensor (the native engine computes float32 only)",
                node.name, node.op_type
            )),
            None => Err(format!(
                "node {:?} ({}): input {i} is missing",
                node.name, node.op_type
            )),
        }
    }

    fn ints_in(&self, node: &pb::NodeProto, i: usize) -> Result<Option<Vec<i64>>, String> {
        match self.opt_input(node, i)? {
            Some(Val::I { data, .. }) => Ok(Some(data.clone())),
            Some(Val::F { .. }) => Err(format!(
                "node {:?} ({}): input {i} must be a constant integer tensor",
                node.name, node.op_type
            )),
            None => Ok(None),
        }
    }

    fn set(&mut self, node: &pb::NodeProto, i: usize, v: Val) {
        if let Some(name) = node.output.get(i).filter(|n| !n.is_empty()) {
            self.vals.insert(name.clone(), v);
        }
    }

    /// A view of `slot` with another shape (same elements, same order).
    fn view(slot: Slot, shape: Vec<usize>) -> Val {
        Val::F { slot, shape }
    }

    fn node(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let op = node.op_type.as_str();
        let here = || format!("node {:?} ({op})", node.name);
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(format!(
                "{}: domain {:?} is not supported",
                here(),
                node.domain
            ));
        }
        match op {
            "Constant" => {
                let v = if let Some(t) = attr(node, "value").and_then(|a| a.t.as_ref()) {
                    self.tensor(t)?
                } else if let Some(a) = attr(node, "value_float") {
                    self.konst(vec![a.f], vec![])
                } else if let Some(a) = attr(node, "value_floats") {
                    self.konst(a.floats.clone(), vec![a.floats.len()])
                } else if let Some(a) = attr(node, "value_int") {
                    Val::I {
                        data: vec![a.i],
                        shape: vec![],
                    }
                } else if let Some(a) = attr(node, "value_ints") {
                    Val::I {
                        data: a.ints.clone(),
                        shape: vec![a.ints.len()],
                    }
                } else {
                    return Err(format!("{}: no supported value attribute", here()));
                };
                self.set(node, 0, v);
            }
            "Identity" => {
                let v = self.get(&node.input[0], node)?.clone();
                self.set(node, 0, v);
            }
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
                let x = self.get(&node.input[0], node)?.clone();
                let in_shape = match &x {
                    Val::F { shape, .. } | Val::I { shape, .. } => shape.clone(),
                };
                let shape = self.reshaped(node, &in_shape)?;
                if numel(&shape) != numel(&in_shape) {
                    return Err(format!(
                        "{}: cannot reshape {in_shape:?} to {shape:?}",
                        here()
                    ));
                }
                let v = match x {
                    Val::F { slot, .. } => Self::view(slot, shape),
                    Val::I { data, .. } => Val::I { data, shape },
                };
                self.set(node, 0, v);
            }
            "Transpose" => {
                let (slot, shape) = self.float_in(node, 0)?;
                let r = shape.len();
                let perm: Vec<usize> = match attr_ints(node, "perm") {
                    Some(p) => p.iter().map(|&a| axis(a, r)).collect::<Result<_, _>>()?,
                    None => (0..r).rev().collect(),
                };
                let mut seen = perm.clone();
                seen.sort_unstable();
                if seen != (0..r).collect::<Vec<_>>() {
                    return Err(format!("{}: perm {perm:?} is not a permutation", here()));
                }
                let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
                let moved: Vec<usize> = perm.iter().copied().filter(|&p| shape[p] != 1).collect();
                if moved.windows(2).all(|w| w[0] < w[1]) {
                    self.set(node, 0, Self::view(slot, out));
                } else {
                    let st = strides(&shape);
                    let ps: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
                    let idx = index_map(&out, &ps);
                    let v = self.emit(gather(idx), vec![slot], vec![out]);
                    self.set(node, 0, v.into_iter().next().expect("one output"));
                }
            }
            "Slice" => self.slice(node)?,
            "Concat" => self.concat(node)?,
            "Add" | "Sub" | "Mul" | "Div" => {
                let (a, sa) = self.float_in(node, 0)?;
                let (b, sb) = self.float_in(node, 1)?;
                let out = broadcast(&sa, &sb).map_err(|e| format!("{}: {e}", here()))?;
                let op = match op {
                    "Add" => BinOp::Add,
                    "Sub" => BinOp::Sub,
                    "Mul" => BinOp::Mul,
                    _ => BinOp::Div,
                };
                let kind = Kind::Binary {
                    op,
                    a: bcast_of(&sa, &out),
                    b: bcast_of(&sb, &out),
                };
                let v = self.emit(kind, vec![a, b], vec![out]);
                self.set(node, 0, v.into_iter().next().expect("one output"));
            }
            "Sigmoid" | "Tanh" | "Relu" | "Exp" | "Log" | "Neg" | "Abs" | "Sqrt" => {
                let (x, shape) = self.float_in(node, 0)?;
                let u = match op {
                    "Sigmoid" => UnOp::Sigmoid,
                    "Tanh" => UnOp::Tanh,
                    "Relu" => UnOp::Relu,
                    "Exp" => UnOp::Exp,
                    "Log" => UnOp::Log,
                    "Neg" => UnOp::Neg,
                    "Abs" => UnOp::Abs,
                    _ => UnOp::Sqrt,
                };
                let v = self.emit(Kind::Unary(u), vec![x], vec![shape]);
                self.set(node, 0, v.into_iter().next().expect("one output"));
            }
            "Softmax" => {
                let (x, shape) = self.float_in(node, 0)?;
                let a = axis(attr_i(node, "axis", -1), shape.len())
                    .map_err(|e| format!("{}: {e}", here()))?;
                let kind = Kind::Softmax {
                    outer: numel(&shape[..a]),
                    axis: shape[a],
                    inner: numel(&shape[a + 1..]),
                };
                let v = self.emit(kind, vec![x], vec![shape]);
                self.set(node, 0, v.into_iter().next().expect("one output"));
            }
            "ReduceMean" | "ReduceSum" => {
                let (x, shape) = self.float_in(node, 0)?;
                let axes = match attr_ints(node, "axes") {
                    Some(a) => Some(a),
                    None => self.ints_in(node, 1)?,
                };
                let mut axes: Vec<usize> = match axes {
                    Some(a) if !a.is_empty() => a
                        .iter()
                        .map(|&v| axis(v, shape.len()))
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("{}: {e}", here()))?,
                    _ if attr_i(node, "noop_with_empty_axes", 0) != 0 => {
                        self.set(node, 0, Self::view(x, shape));
                        return Ok(());
                    }
                    _ => (0..shape.len()).collect(),
                };
                axes.sort_unstable();
                axes.dedup();
                let keep = attr_i(node, "keepdims", 1) != 0;
                let st_out_full: Vec<usize> = shape
                    .iter()
                    .enumerate()
                    .map(|(d, &n)| if axes.contains(&d) { 1 } else { n })
                    .collect();
                let ost = strides(&st_out_full);
                let eff: Vec<usize> = ost
                    .iter()
                    .enumerate()
                    .map(|(d, &s)| if axes.contains(&d) { 0 } else { s })
                    .collect();
                let map = index_map(&shape, &eff);
                let count: usize = axes.iter().map(|&a| shape[a]).product();
                let scale = if op == "ReduceMean" {
                    1.0 / count.max(1) as f32
                } else {
                    1.0
                };
                let out_shape: Vec<usize> = if keep {
                    st_out_full
                } else {
                    shape
                        .iter()
                        .enumerate()
                        .filter(|(d, _)| !axes.contains(d))
                        .map(|(_, &n)| n)
                        .collect()
                };
                let v = self.emit(Kind::Reduce { map, scale }, vec![x], vec![out_shape]);
                self.set(node, 0, v.into_iter().next().expect("one output"));
            }
            "MatMul" => self.matmul(node)?,
            "Gemm" => self.gemm(node)?,
            "LSTM" => self.lstm(node)?,
            "Conv" => self.conv(node)?,
            _ => {
                return Err(format!("{}: the op {op} is not supported", here()));
            }
        }
        Ok(())
    }

    /// The output shape of Reshape, Flatten, Squeeze, Unsqueeze.
    fn reshaped(&self, node: &pb::NodeProto, s: &[usize]) -> Result<Vec<usize>, String> {
        let here = || format!("node {:?} ({})", node.name, node.op_type);
        match node.op_type.as_str() {
            "Reshape" => {
                let spec = self
                    .ints_in(node, 1)?
                    .ok_or_else(|| format!("{}: no shape", here()))?;
                let allowzero = attr_i(node, "allowzero", 0) != 0;
                let mut out = Vec::with_capacity(spec.len());
                let mut infer = None;
                for (i, &d) in spec.iter().enumerate() {
                    match d {
                        0 if !allowzero => out.push(*s.get(i).ok_or_else(|| {
                            format!("{}: 0 at {i} beyond the input's rank", here())
                        })?),
                        -1 if infer.is_none() => {
                            infer = Some(i);
                            out.push(1);
                        }
                        d if d >= 0 => out.push(d as usize),
                        _ => return Err(format!("{}: bad shape {spec:?}", here())),
                    }
                }
                if let Some(i) = infer {
                    let rest = numel(&out);
                    if rest == 0 || !numel(s).is_multiple_of(rest) {
                        return Err(format!("{}: cannot infer -1 in {spec:?} for {s:?}", here()));
                    }
                    out[i] = numel(s) / rest;
                }
                Ok(out)
            }
            "Flatten" => {
                let a = attr_i(node, "axis", 1);
                let a = if a == s.len() as i64 {
                    s.len()
                } else {
                    axis(a, s.len())?
                };
                Ok(vec![numel(&s[..a]), numel(&s[a..])])
            }
            "Squeeze" => {
                let axes = match attr_ints(node, "axes") {
                    Some(a) => Some(a),
                    None => self.ints_in(node, 1)?,
                };
                match axes {
                    None => Ok(s.iter().copied().filter(|&d| d != 1).collect()),
                    Some(a) => {
                        let a: Vec<usize> = a
                            .iter()
                            .map(|&v| axis(v, s.len()))
                            .collect::<Result<_, _>>()?;
                        if a.iter().any(|&d| s[d] != 1) {
                            return Err(format!(
                                "{}: squeezes a dimension that is not 1 in {s:?}",
                                here()
                            ));
                        }
                        Ok(s.iter()
                            .enumerate()
                            .filter(|(d, _)| !a.contains(d))
                            .map(|(_, &n)| n)
                            .collect())
                    }
                }
            }
            _ => {
                let axes = match attr_ints(node, "axes") {
                    Some(a) => a,
                    None => self
                        .ints_in(node, 1)?
                        .ok_or_else(|| format!("{}: no axes", here()))?,
                };
                let r = s.len() + axes.len();
                let a: Vec<usize> = axes.iter().map(|&v| axis(v, r)).collect::<Result<_, _>>()?;
                let mut rest = s.iter();
                Ok((0..r)
                    .map(|d| {
                        if a.contains(&d) {
                            1
                        } else {
                            *rest.next().unwrap_or(&1)
                        }
                    })
                    .collect())
            }
        }
    }

    fn slice(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let here = || format!("node {:?} (Slice)", node.name);
        let (slot, shape) = self.float_in(node, 0)?;
        let need =
            |v: Option<Vec<i64>>, what: &str| v.ok_or_else(|| format!("{}: no {what}", here()));
        let starts = need(self.ints_in(node, 1)?, "starts")?;
        let ends = need(self.ints_in(node, 2)?, "ends")?;
        let axes: Vec<usize> = match self.ints_in(node, 3)? {
            Some(a) => a
                .iter()
                .map(|&v| axis(v, shape.len()))
                .collect::<Result<_, _>>()?,
            None => (0..starts.len()).collect(),
        };
        let steps = self
            .ints_in(node, 4)?
            .unwrap_or_else(|| vec![1; starts.len()]);
        if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            return Err(format!(
                "{}: starts, ends, axes and steps differ in length",
                here()
            ));
        }
        let mut begin = vec![0i64; shape.len()];
        let mut step = vec![1i64; shape.len()];
        let mut out = shape.clone();
        for (((&a, &s), &e), &st) in axes.iter().zip(&starts).zip(&ends).zip(&steps) {
            if st == 0 {
                return Err(format!("{}: step 0", here()));
            }
            let d = shape[a] as i64;
            let norm = |v: i64| if v < 0 { v + d } else { v };
            let (b, n) = if st > 0 {
                let b = norm(s).clamp(0, d);
                let e = norm(e).clamp(0, d);
                (b, if e > b { (e - b + st - 1) / st } else { 0 })
            } else {
                let b = norm(s).clamp(-1, d - 1);
                let e = norm(e).clamp(-1, d - 1);
                (b, if b > e { (b - e - st - 1) / -st } else { 0 })
            };
            begin[a] = b;
            step[a] = st;
            out[a] = n as usize;
        }
        let st = strides(&shape);
        let base: i64 = begin.iter().zip(&st).map(|(&b, &s)| b * s as i64).sum();
        // Element strides of the output in the input (steps are applied per axis).
        let mut idx: Vec<u32> = Vec::with_capacity(numel(&out));
        let mut pos = vec![0usize; out.len()];
        for _ in 0..numel(&out) {
            let off: i64 = base
                + pos
                    .iter()
                    .zip(&st)
                    .zip(&step)
                    .map(|((&p, &s), &k)| p as i64 * k * s as i64)
                    .sum::<i64>();
            idx.push(off as u32);
            for d in (0..out.len()).rev() {
                pos[d] += 1;
                if pos[d] < out[d] {
                    break;
                }
                pos[d] = 0;
            }
        }
        if idx.windows(2).all(|w| w[1] == w[0] + 1) {
            let off = idx.first().copied().unwrap_or(0) as usize;
            let v = Self::view(
                Slot {
                    off: slot.off + off,
                    len: idx.len(),
                    ..slot
                },
                out,
            );
            self.set(node, 0, v);
        } else {
            let v = self.emit(gather(idx), vec![slot], vec![out]);
            self.set(node, 0, v.into_iter().next().expect("one output"));
        }
        Ok(())
    }

    fn concat(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let here = || format!("node {:?} (Concat)", node.name);
        let parts: Vec<Val> = node
            .input
            .iter()
            .map(|n| self.get(n, node).cloned())
            .collect::<Result<_, _>>()?;
        let first = match &parts[0] {
            Val::F { shape, .. } | Val::I { shape, .. } => shape.clone(),
        };
        let a =
            axis(attr_i(node, "axis", 0), first.len()).map_err(|e| format!("{}: {e}", here()))?;
        if parts.iter().all(|p| matches!(p, Val::I { .. })) && first.len() == 1 {
            let data: Vec<i64> = parts
                .iter()
                .flat_map(|p| match p {
                    Val::I { data, .. } => data.clone(),
                    Val::F { .. } => unreachable!(),
                })
                .collect();
            let n = data.len();
            self.set(
                node,
                0,
                Val::I {
                    data,
                    shape: vec![n],
                },
            );
            return Ok(());
        }
        let mut out = first.clone();
        out[a] = 0;
        let mut slots = Vec::new();
        let mut chunks = Vec::new();
        for p in &parts {
            let Val::F { slot, shape } = p else {
                return Err(format!("{}: an integer input among float ones", here()));
            };
            if shape.len() != first.len()
                || shape
                    .iter()
                    .enumerate()
                    .any(|(d, &n)| d != a && n != first[d])
            {
                return Err(format!(
                    "{}: shapes {first:?} and {shape:?} do not concatenate",
                    here()
                ));
            }
            out[a] += shape[a];
            slots.push(*slot);
            chunks.push(numel(&shape[a..]));
        }
        let kind = Kind::Concat {
            outer: numel(&first[..a]),
            chunks,
        };
        let v = self.emit(kind, slots, vec![out]);
        self.set(node, 0, v.into_iter().next().expect("one output"));
        Ok(())
    }

    /// `A @ B` with numpy semantics; `alpha` scales; a constant 2-D `B` is packed.
    fn matmul_of(
        &mut self,
        node: &pb::NodeProto,
        (a, sa): (Slot, Vec<usize>),
        (b, sb): (Slot, Vec<usize>),
    ) -> Result<Val, String> {
        let here = || format!("node {:?} ({})", node.name, node.op_type);
        if sa.is_empty() || sb.is_empty() {
            return Err(format!("{}: a scalar operand", here()));
        }
        let a2: Vec<usize> = if sa.len() == 1 {
            vec![1, sa[0]]
        } else {
            sa.clone()
        };
        let b2: Vec<usize> = if sb.len() == 1 {
            vec![sb[0], 1]
        } else {
            sb.clone()
        };
        let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
        let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
        if k != kb {
            return Err(format!(
                "{}: {sa:?} @ {sb:?}: inner dimensions differ",
                here()
            ));
        }
        let batch_a = &a2[..a2.len() - 2];
        let batch_b = &b2[..b2.len() - 2];
        let batch = broadcast(batch_a, batch_b).map_err(|e| format!("{}: {e}", here()))?;
        let mut out: Vec<usize> = batch.clone();
        if sa.len() > 1 {
            out.push(m);
        }
        if sb.len() > 1 {
            out.push(n);
        }
        if b.space == Space::Const && batch_b.iter().all(|&d| d == 1) {
            // Pack B transposed: one contiguous row of k per output column.
            let bd = self.data(&b).to_vec();
            let mut packed = vec![0.0f32; n * k];
            for kk in 0..k {
                for j in 0..n {
                    packed[j * k + kk] = bd[kk * n + j];
                }
            }
            let Val::F { slot: w, .. } = self.konst(packed, vec![n, k]) else {
                unreachable!()
            };
            let rows = numel(&a2) / k;
            let kind = Kind::MatVec { rows, k, n };
            let v = self.emit(kind, vec![a, w], vec![out]);
            return Ok(v.into_iter().next().expect("one output"));
        }
        let ma = broadcast_map(batch_a, &batch);
        let mb = broadcast_map(batch_b, &batch);
        let batches = (0..numel(&batch))
            .map(|i| (ma[i] as usize * m * k, mb[i] as usize * k * n, i * m * n))
            .collect();
        let kind = Kind::MatMul(GeneralMatMul {
            m,
            k,
            n,
            sa: (k, 1),
            sb: (n, 1),
            alpha: 1.0,
            batches,
        });
        let v = self.emit(kind, vec![a, b], vec![out]);
        Ok(v.into_iter().next().expect("one output"))
    }

    fn matmul(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let a = self.float_in(node, 0)?;
        let b = self.float_in(node, 1)?;
        let v = self.matmul_of(node, a, b)?;
        self.set(node, 0, v);
        Ok(())
    }

    fn gemm(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let here = || format!("node {:?} (Gemm)", node.name);
        let (a, sa) = self.float_in(node, 0)?;
        let (b, sb) = self.float_in(node, 1)?;
        if sa.len() != 2 || sb.len() != 2 {
            return Err(format!("{}: A {sa:?} and B {sb:?} must be 2-D", here()));
        }
        let (ta, tb) = (
            attr_i(node, "transA", 0) != 0,
            attr_i(node, "transB", 0) != 0,
        );
        let (alpha, beta) = (attr_f(node, "alpha", 1.0), attr_f(node, "beta", 1.0));
        let (m, k) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
        let (kb, n) = if tb { (sb[1], sb[0]) } else { (sb[0], sb[1]) };
        if k != kb {
            return Err(format!("{}: inner dimensions differ", here()));
        }
        let c = self.opt_input(node, 2)?.cloned();
        let mut ins;
        let kind;
        if b.space == Space::Const && !ta {
            let bd = self.data(&b).to_vec();
            let mut packed = vec![0.0f32; n * k];
            for kk in 0..k {
                for j in 0..n {
                    let v = if tb { bd[j * k + kk] } else { bd[kk * n + j] };
                    packed[j * k + kk] = alpha * v;
                }
            }
            let Val::F { slot: w, .. } = self.konst(packed, vec![n, k]) else {
                unreachable!()
            };
            ins = vec![a, w];
            kind = Kind::MatVec { rows: m, k, n };
            // A constant C (times beta), broadcast to [m, n], is the bias.
            if let Some(Val::F { slot, shape }) = &c
                && slot.space == Space::Const
            {
                if beta != 0.0 {
                    let cd = self.data(slot).to_vec();
                    broadcast(&shape.clone(), &[m, n])
                        .map_err(|e| format!("{}: C: {e}", here()))?;
                    let map = broadcast_map(shape, &[m, n]);
                    let bias: Vec<f32> = map.iter().map(|&i| beta * cd[i as usize]).collect();
                    let Val::F { slot: bs, .. } = self.konst(bias, vec![m, n]) else {
                        unreachable!()
                    };
                    ins.push(bs);
                }
                let v = self.emit(kind, ins, vec![vec![m, n]]);
                self.set(node, 0, v.into_iter().next().expect("one output"));
                return Ok(());
            }
        } else {
            ins = vec![a, b];
            kind = Kind::MatMul(GeneralMatMul {
                m,
                k,
                n,
                sa: if ta { (1, m) } else { (k, 1) },
                sb: if tb { (1, k) } else { (n, 1) },
                alpha,
                batches: vec![(0, 0, 0)],
            });
        }
        let prod = self.emit(kind, ins, vec![vec![m, n]]);
        let Some(Val::F { slot: p, .. }) = prod.into_iter().next() else {
            unreachable!()
        };
        let v = match c {
            None => Self::view(p, vec![m, n]),
            Some(Val::I { .. }) => return Err(format!("{}: C is an integer tensor", here())),
            Some(Val::F { slot, shape }) => {
                if beta != 1.0 {
                    return Err(format!("{}: beta {beta} with a computed C", here()));
                }
                broadcast(&shape, &[m, n]).map_err(|e| format!("{}: C: {e}", here()))?;
                let kind = Kind::Binary {
                    op: BinOp::Add,
                    a: Bcast::Same,
                    b: bcast_of(&shape, &[m, n]),
                };
                self.emit(kind, vec![p, slot], vec![vec![m, n]])
                    .into_iter()
                    .next()
                    .expect("one output")
            }
        };
        self.set(node, 0, v);
        Ok(())
    }

    fn conv(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let here = || format!("node {:?} (Conv)", node.name);
        let (x, sx) = self.float_in(node, 0)?;
        let (w, sw) = self.float_in(node, 1)?;
        if sx.len() != 3 || sx[0] != 1 {
            return Err(format!(
                "{}: input {sx:?} (only one-dimensional [1, C, T] is supported)",
                here()
            ));
        }
        if w.space != Space::Const || sw.len() != 3 {
            return Err(format!(
                "{}: weights {sw:?} must be a constant [C_out, C_in, K]",
                here()
            ));
        }
        let (c_out, c_in, kernel) = (sw[0], sw[1], sw[2]);
        let t_in = sx[2];
        if sx[1] != c_in {
            return Err(format!(
                "{}: input channels {} but weights {sw:?}",
                here(),
                sx[1]
            ));
        }
        let group = attr_i(node, "group", 1);
        if group != 1 {
            return Err(format!("{}: group {group} (only 1 is supported)", here()));
        }
        if let Some(p) = attr_s(node, "auto_pad")
            && p != "NOTSET"
            && p != "VALID"
        {
            return Err(format!("{}: auto_pad {p} (only VALID or NOTSET)", here()));
        }
        let one = |name: &str, default: i64| -> Result<usize, String> {
            match attr_ints(node, name) {
                None => Ok(default as usize),
                Some(v) if v.len() == 1 && v[0] >= 0 => Ok(v[0] as usize),
                Some(v) => Err(format!("{}: {name} {v:?}", here())),
            }
        };
        let (stride, dilation) = (one("strides", 1)?, one("dilations", 1)?);
        if stride != 1 {
            return Err(format!("{}: stride {stride} (only 1 is supported)", here()));
        }
        if dilation == 0 {
            return Err(format!("{}: dilation 0", here()));
        }
        if let Some(p) = attr_ints(node, "pads")
            && p.iter().any(|&v| v != 0)
        {
            return Err(format!("{}: pads {p:?} (only none is supported)", here()));
        }
        if let Some(k) = attr_ints(node, "kernel_shape")
            && k != [kernel as i64]
        {
            return Err(format!("{}: kernel_shape {k:?} but weights {sw:?}", here()));
        }
        if kernel == 0 {
            return Err(format!("{}: weights {sw:?} with an empty kernel", here()));
        }
        let span = (kernel - 1) * dilation + 1;
        if t_in < span {
            return Err(format!(
                "{}: {t_in} input frames, fewer than the kernel's span {span}",
                here()
            ));
        }
        let t_out = t_in - span + 1;
        let mut ins = vec![x, w];
        if let Some(b) = self.opt_input(node, 2)?.cloned() {
            match b {
                Val::F { slot, shape } if slot.space == Space::Const && numel(&shape) == c_out => {
                    ins.push(slot)
                }
                _ => return Err(format!("{}: the bias must be a constant [C_out]", here())),
            }
        }
        let kind = Kind::Conv(ConvStep {
            c_in,
            t_in,
            t_out,
            kernel,
            dilation,
        });
        let outs = self.emit(
            kind,
            ins,
            vec![vec![1, c_out, t_out], vec![c_in * kernel], vec![c_out]],
        );
        let y = outs.into_iter().next().expect("three outputs");
        self.set(node, 0, y);
        Ok(())
    }

    fn lstm(&mut self, node: &pb::NodeProto) -> Result<(), String> {
        let here = || format!("node {:?} (LSTM)", node.name);
        if let Some(d) = attr_s(node, "direction")
            && d != "forward"
        {
            return Err(format!(
                "{}: direction {d:?} (only forward is supported)",
                here()
            ));
        }
        if let Some(a) = attr(node, "activations") {
            let names: Vec<String> = a
                .strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            if names != ["Sigmoid", "Tanh", "Tanh"] {
                return Err(format!(
                    "{}: activations {names:?} (only the default)",
                    here()
                ));
            }
        }
        if attr(node, "clip").is_some() {
            return Err(format!("{}: clip is not supported", here()));
        }
        if attr_i(node, "input_forget", 0) != 0 || attr_i(node, "layout", 0) != 0 {
            return Err(format!("{}: input_forget and layout must be 0", here()));
        }
        if self.opt_input(node, 4)?.is_some() {
            return Err(format!("{}: sequence_lens is not supported", here()));
        }
        if self.opt_input(node, 7)?.is_some() {
            return Err(format!("{}: peepholes (P) are not supported", here()));
        }
        let (x, sx) = self.float_in(node, 0)?;
        let (w, sw) = self.float_in(node, 1)?;
        let (r, sr) = self.float_in(node, 2)?;
        if w.space != Space::Const || r.space != Space::Const {
            return Err(format!("{}: W and R must be constants", here()));
        }
        if sx.len() != 3 || sw.len() != 3 || sr.len() != 3 || sw[0] != 1 || sr[0] != 1 {
            return Err(format!(
                "{}: X {sx:?}, W {sw:?}, R {sr:?} are not [T,B,I], [1,4H,I], [1,4H,H]",
                here()
            ));
        }
        let (seq, batch, input) = (sx[0], sx[1], sx[2]);
        let hidden = sr[2];
        if sw[1] != 4 * hidden || sw[2] != input || sr[1] != 4 * hidden {
            return Err(format!(
                "{}: W {sw:?} or R {sr:?} do not fit X {sx:?}",
                here()
            ));
        }
        let hs = attr_i(node, "hidden_size", hidden as i64);
        if hs != hidden as i64 {
            return Err(format!("{}: hidden_size {hs} but R is {sr:?}", here()));
        }
        let mut bias = vec![0.0f32; 4 * hidden];
        if let Some(v) = self.opt_input(node, 3)?.cloned() {
            let Val::F { slot, shape } = v else {
                return Err(format!("{}: B is an integer tensor", here()));
            };
            if slot.space != Space::Const || shape != [1, 8 * hidden] {
                return Err(format!(
                    "{}: B must be a constant [1, {}]",
                    here(),
                    8 * hidden
                ));
            }
            let bd = self.data(&slot);
            for (g, b) in bias.iter_mut().enumerate() {
                *b = bd[g] + bd[4 * hidden + g];
            }
        }
        let (wd, rd) = (self.data(&w).to_vec(), self.data(&r).to_vec());
        let cols = input + hidden;
        let mut packed = vec![0.0f32; 4 * hidden * cols];
        for g in 0..4 * hidden {
            packed[g * cols..g * cols + input].copy_from_slice(&wd[g * input..(g + 1) * input]);
            packed[g * cols + input..(g + 1) * cols]
                .copy_from_slice(&rd[g * hidden..(g + 1) * hidden]);
        }
        let Val::F { slot: pw, .. } = self.konst(packed, vec![4 * hidden, cols]) else {
            unreachable!()
        };
        let Val::F { slot: pb_, .. } = self.konst(bias, vec![4 * hidden]) else {
            unreachable!()
        };
        let mut ins = vec![x, pw, pb_];
        let state = [1, batch, hidden];
        let mut init = |i: usize, what: &str| -> Result<bool, String> {
            match self.opt_input(node, i)? {
                None => Ok(false),
                Some(Val::F { slot, shape }) if *shape == state => {
                    ins.push(*slot);
                    Ok(true)
                }
                Some(v) => Err(format!(
                    "{}: {what} is {v:?}, expected a float {state:?}",
                    here()
                )),
            }
        };
        let has_h0 = init(5, "initial_h")?;
        let has_c0 = init(6, "initial_c")?;
        let kind = Kind::Lstm(LstmStep {
            seq,
            batch,
            input,
            hidden,
            has_h0,
            has_c0,
        });
        let outs = self.emit(
            kind,
            ins,
            vec![
                vec![seq, 1, batch, hidden],
                state.to_vec(),
                state.to_vec(),
                vec![cols + 4 * hidden],
            ],
        );
        for (i, v) in outs.into_iter().take(3).enumerate() {
            self.set(node, i, v);
        }
        Ok(())
    }
}

impl NativePlan {
    /// Translates the step graph for one frame of `n_mels` features and a
    /// `[layers, 1, hidden]` state; `Err` says why it cannot (the first thing it cannot do).
    pub fn build(
        graph: &pb::GraphProto,
        n_mels: usize,
        layers: usize,
        hidden: usize,
    ) -> Result<Self, String> {
        let mut b = Builder {
            vals: HashMap::new(),
            consts: Vec::new(),
            work: Vec::new(),
            steps: Vec::new(),
        };
        for t in &graph.initializer {
            let v = b.tensor(t)?;
            b.vals.insert(t.name.clone(), v);
        }
        let features = b.work_buf(n_mels);
        let h_in = b.work_buf(layers * hidden);
        let c_in = b.work_buf(layers * hidden);
        let state = vec![layers, 1, hidden];
        b.vals.insert(
            "features".into(),
            Val::F {
                slot: features,
                shape: vec![1, 1, n_mels],
            },
        );
        b.vals.insert(
            "h_in".into(),
            Val::F {
                slot: h_in,
                shape: state.clone(),
            },
        );
        b.vals.insert(
            "c_in".into(),
            Val::F {
                slot: c_in,
                shape: state.clone(),
            },
        );
        for node in &graph.node {
            b.node(node)?;
        }
        let output = |b: &mut Builder, name: &str| -> Result<(Slot, Vec<usize>), String> {
            match b.vals.get(name) {
                Some(Val::F { slot, shape }) => {
                    let (slot, shape) = (*slot, shape.clone());
                    // The state outputs must not share a buffer with the state inputs (they are
                    // copied onto them after each hop): copy them out first if they would.
                    if slot.space == Space::Work && (slot.buf == h_in.buf || slot.buf == c_in.buf) {
                        let v = b.emit(Kind::Copy, vec![slot], vec![shape.clone()]);
                        let Some(Val::F { slot, .. }) = v.into_iter().next() else {
                            unreachable!()
                        };
                        return Ok((slot, shape));
                    }
                    Ok((slot, shape))
                }
                Some(Val::I { .. }) => Err(format!("output {name} is an integer tensor")),
                None => Err(format!("output {name} is computed by no node")),
            }
        };
        let (scores, s_shape) = output(&mut b, "scores")?;
        let (h_out, h_shape) = output(&mut b, "h_out")?;
        let (c_out, c_shape) = output(&mut b, "c_out")?;
        if s_shape.len() != 3 || s_shape[..2] != [1, 1] {
            return Err(format!(
                "scores has shape {s_shape:?}, expected [1, 1, classes]"
            ));
        }
        if h_shape != state || c_shape != state {
            return Err(format!(
                "h_out {h_shape:?} and c_out {c_shape:?} are not {state:?}"
            ));
        }
        let mut ops: Vec<&str> = Vec::new();
        for s in &b.steps {
            let name = match &s.kind {
                Kind::Lstm(_) => "LSTM",
                Kind::MatVec { .. } => "MatVec",
                Kind::MatMul(_) => "MatMul",
                Kind::Binary { .. } => "Binary",
                Kind::Unary(_) => "Unary",
                Kind::Softmax { .. } => "Softmax",
                Kind::Reduce { .. } => "Reduce",
                Kind::Gather { .. } => "Gather",
                Kind::Runs { .. } => "Runs",
                Kind::Concat { .. } => "Concat",
                Kind::Conv(_) => "Conv",
                Kind::Copy => "Copy",
            };
            ops.push(name);
        }
        let simd = kernels::simd_available();
        let summary = format!(
            "{} steps ({}), {} buffers, {} constant floats, kernels {}",
            b.steps.len(),
            ops.join(" "),
            b.work.len(),
            b.consts.iter().map(Vec::len).sum::<usize>(),
            if simd {
                "AVX2+FMA"
            } else if cfg!(target_arch = "aarch64") {
                "NEON"
            } else {
                "portable"
            }
        );
        Ok(Self {
            consts: b.consts,
            work_sizes: b.work,
            steps: b.steps,
            features,
            h_in,
            c_in,
            scores,
            h_out,
            c_out,
            simd,
            summary,
        })
    }

    /// A stream's buffers, the state zeroed. (The only allocation of a stream.)
    pub fn state(&self) -> NativeState {
        NativeState {
            bufs: self.work_sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// One hop: `frame` (n_mels values) in, the state advanced; read the scores with
    /// [`NativePlan::scores`]. Allocates nothing.
    pub fn step(&self, st: &mut NativeState, frame: &[f32]) {
        st.bufs[self.features.buf].copy_from_slice(frame);
        for s in &self.steps {
            exec(s, &self.consts, &mut st.bufs, self.simd);
        }
        for (from, to) in [(self.h_out, self.h_in), (self.c_out, self.c_in)] {
            let mut dst = std::mem::take(&mut st.bufs[to.buf]);
            dst.copy_from_slice(
                Inputs {
                    consts: &self.consts,
                    bufs: &st.bufs,
                }
                .get(&from),
            );
            st.bufs[to.buf] = dst;
        }
    }

    /// The scores of the last hop.
    pub fn scores<'a>(&'a self, st: &'a NativeState) -> &'a [f32] {
        Inputs {
            consts: &self.consts,
            bufs: &st.bufs,
        }
        .get(&self.scores)
    }

    /// The state carried to the next hop: `(h, c)`, `[layers * hidden]` each.
    pub fn state_values<'a>(&self, st: &'a NativeState) -> (&'a [f32], &'a [f32]) {
        (&st.bufs[self.h_in.buf], &st.bufs[self.c_in.buf])
    }

    /// Zeroes the state (a new, unrelated stream).
    pub fn reset(&self, st: &mut NativeState) {
        st.bufs[self.h_in.buf].fill(0.0);
        st.bufs[self.c_in.buf].fill(0.0);
    }

    /// What the plan is, in one line (for `hark info`).
    pub fn summary(&self) -> &str {
        &self.summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_gather(kind: &Kind, x: &[f32], n: usize) -> Vec<f32> {
        let consts = vec![x.to_vec()];
        let mut bufs = vec![vec![0.0; n]];
        let step = Step {
            kind: kind.clone(),
            ins: vec![Slot {
                space: Space::Const,
                buf: 0,
                off: 0,
                len: x.len(),
            }],
            outs: vec![Slot {
                space: Space::Work,
                buf: 0,
                off: 0,
                len: n,
            }],
        };
        exec(&step, &consts, &mut bufs, false);
        bufs.pop().unwrap()
    }

    #[test]
    fn a_gather_in_runs_is_block_copies_with_the_same_result() {
        let x: Vec<f32> = (0..200).map(|i| i as f32 * 0.5).collect();
        // A slice along the last axis of [4, 50]: 4 runs of 40 (block copies), of 4 (block
        // copies) and of 3 (too short: by element).
        for (from, len, copies) in [(10usize, 40usize, true), (46, 4, true), (47, 3, false)] {
            let idx: Vec<u32> = (0..4)
                .flat_map(|r| (0..len).map(move |j| (r * 50 + from + j) as u32))
                .collect();
            let kind = gather(idx.clone());
            if copies {
                assert!(
                    matches!(kind, Kind::Runs { ref runs } if runs.len() == 4),
                    "{kind:?}"
                );
            } else {
                assert!(matches!(kind, Kind::Gather { .. }), "{kind:?}");
            }
            let want: Vec<f32> = idx.iter().map(|&i| x[i as usize]).collect();
            assert_eq!(run_gather(&kind, &x, idx.len()), want);
        }
        // A transpose of [2, 3]: runs of 1, kept as an index gather.
        let idx = vec![0, 3, 1, 4, 2, 5];
        let kind = gather(idx.clone());
        assert!(matches!(kind, Kind::Gather { .. }), "{kind:?}");
        assert_eq!(run_gather(&kind, &x, 6), [0.0, 1.5, 0.5, 2.0, 1.0, 2.5]);
    }
}
