//! Heap operations per hop of the whole detector (frontend, tract model step,
//! post-processing), counted by a counting global allocator over 12 000 hops of the
//! committed tone-detector model.
//!
//! They are not zero, and cannot be with tract 0.23.9 as it is. Measured on this model
//! (`hark bench --model runtime/tests/fixtures/tone-detector.onnx --seconds 120`, which
//! counts allocations only): 43 allocations per hop before the step reused its buffers, 37
//! after; this test counts allocations and frees together: 74 per hop. Where tract
//! allocates (tract-core 0.23.9 sources):
//! - `plan.rs`, `SimpleState::do_exec_plan_with_eval`: every node's `eval` returns a new
//!   `TVec<TValue>` of freshly allocated tensors (a `Blob` for the data, and an `Arc` from
//!   `value.rs`' `From<Tensor> for TValue`); the previous values are freed by the flush
//!   lists and `reset_turn`. There is no arena and no way to hand a node its output buffer:
//!   `run_plan_with_eval` only replaces the function that calls `eval`, and the ops' `eval`
//!   signatures return new values.
//! - `ops/scan/optimized.rs`, `State::eval` (the ONNX LSTM becomes a `Scan` whose body is
//!   a nested `SimpleState`, with the same per-node allocations): `h_out`/`c_out` are
//!   `v.clone().into_tensor()`, a copy, because the same value is also kept as the hidden
//!   state; and every output is wrapped in a new `Arc` by `into_tvalue()`.
//!
//! What hark controls costs nothing: the `features` input tensor is written in place and
//! shared with tract (an `Arc` clone), and `h_out`/`c_out` go straight back in as
//! `h_in`/`c_in` (before, the step made a new input tensor and re-wrapped h and c in new
//! `Arc`s: the 6 allocations a hop saved); the frontend and post-processing allocate
//! nothing (their own no-alloc tests). This test fixes that: every hop costs tract the same, the rest of the detector
//! adds nothing, and a change in either shows up here.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

mod common;

use counting_alloc::counted;

use hark::model::Model;
use hark::pipeline::Detector;
use hark::postprocess::PostprocessConfig;

const HOPS: usize = 12_000;

fn model() -> Model {
    Model::load(common::fixture("tone-detector.onnx")).unwrap()
}

/// Heap operations (allocations, frees, reallocations) of `ModelStream::step` alone, per
/// step, measured over `HOPS` steps after a warm-up.
fn model_step_ops(model: &Model) -> (u64, u64) {
    let mut stream = model.stream().unwrap();
    let frame = vec![-3.0f32; 64];
    for _ in 0..10 {
        stream.step(&frame).unwrap();
    }
    let ((), ops) = counted(|| {
        for _ in 0..HOPS {
            stream.step(&frame).unwrap();
        }
    });
    let ((), one) = counted(|| {
        stream.step(&frame).unwrap();
    });
    (ops, one)
}

#[test]
fn a_model_step_costs_the_same_every_hop() {
    let (ops, one) = model_step_ops(&model());
    eprintln!(
        "model step: {ops} heap operations in {HOPS} steps = {:.3} per step",
        ops as f64 / HOPS as f64
    );
    assert_eq!(ops, one * HOPS as u64, "not the same count every step");
    // 74 measured with tract 0.23.9 (37 allocations and 37 frees): more is a regression.
    assert!(one <= 74, "{one} heap operations per step, 74 expected");
}

#[test]
fn the_detector_allocates_only_what_tract_allocates() {
    let model = model();
    let (step_ops, per_step) = model_step_ops(&model);
    let mut detector = Detector::new(&model, &PostprocessConfig::default()).unwrap();
    let x = common::mixture(&[(10.0, 0.5), (40.0, 2.0), (90.0, 0.3)], 121.0);
    // Warm up on the first second, then count the rest hop by hop (chunks of one hop).
    let (warm, rest) = x.split_at(16_000);
    detector.push(warm, |_, _| {}).unwrap();
    let mut events = 0;
    let hops_before = detector.frontend().frames_out();
    let ((), ops) = counted(|| {
        for chunk in rest.chunks(160) {
            detector.push(chunk, |_, _| events += 1).unwrap();
        }
    });
    let hops = detector.frontend().frames_out() - hops_before;
    assert!(hops >= HOPS as u64, "{hops} hops");
    assert_eq!(events, 3);
    eprintln!(
        "detector: {ops} heap operations in {hops} hops = {:.3} per hop; tract's step alone: {:.3}",
        ops as f64 / hops as f64,
        step_ops as f64 / HOPS as f64
    );
    assert_eq!(
        ops,
        per_step * hops,
        "the detector's heap operations are not exactly tract's"
    );
}
