//! No heap operation per hop: the whole detector (frontend, model step, post-processing),
//! hop by hop, with the default engine (auto, which is the native engine on these models),
//! counted by a counting global allocator over at least 12 000 hops, on the shipped default
//! model and on the committed tone-detector fixture.
//!
//! Negative controls show that the counter sees allocations: a `Vec` made inside the counted
//! region is counted, and so are the heap operations of the tract engine's step (every node
//! of tract's plan returns freshly allocated tensors; the ONNX LSTM becomes a `Scan` whose
//! body allocates the same way: 37 allocations and 37 frees a hop with tract 0.23.9 on the
//! tone detector).

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

mod common;

use counting_alloc::counted;

use hark::model::{Engine, EngineChoice, Model};
use hark::pipeline::Detector;
use hark::postprocess::PostprocessConfig;

const HOPS: usize = 12_000;

fn default_model_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default.onnx")
}

fn models() -> Vec<(&'static str, std::path::PathBuf)> {
    vec![
        ("tone detector", common::fixture("tone-detector.onnx")),
        ("default model", default_model_path()),
    ]
}

/// Heap operations (allocations, frees, reallocations) of `HOPS` model steps after a
/// warm-up.
fn model_step_ops(model: &Model) -> u64 {
    let n_mels = model.metadata().frontend.n_mels;
    let mut stream = model.stream().unwrap();
    let frames: Vec<f32> = (0..n_mels * 97)
        .map(|i| ((i * 7919) % 23) as f32 * 0.7 - 12.0)
        .collect();
    for f in frames.chunks_exact(n_mels).take(10) {
        stream.step(f).unwrap();
    }
    let ((), ops) = counted(|| {
        for (_, f) in (0..HOPS).zip(frames.chunks_exact(n_mels).cycle()) {
            stream.step(f).unwrap();
        }
    });
    ops
}

#[test]
fn the_default_engine_is_native_on_the_shipped_models() {
    for (what, path) in models() {
        let model = Model::load(&path).unwrap();
        assert_eq!(
            model.engine(),
            Engine::Native,
            "{what}: {:?}",
            model.native_problem()
        );
    }
}

#[test]
fn a_native_model_step_allocates_nothing() {
    for (what, path) in models() {
        let model = Model::load_with(&path, EngineChoice::Native).unwrap();
        let ops = model_step_ops(&model);
        eprintln!("{what}: native step: {ops} heap operations in {HOPS} steps");
        assert_eq!(ops, 0, "{what}: the native step allocated");
    }
}

#[test]
fn negative_control_the_counter_sees_allocations() {
    let (v, ops) = counted(|| std::hint::black_box(vec![1u8; 100]));
    drop(v);
    assert!(ops >= 1, "a Vec went uncounted");
    // The tract engine allocates every hop, and the counter sees it.
    let model =
        Model::load_with(common::fixture("tone-detector.onnx"), EngineChoice::Tract).unwrap();
    assert_eq!(model.engine(), Engine::Tract);
    let ops = model_step_ops(&model);
    eprintln!(
        "tract step: {ops} heap operations in {HOPS} steps = {:.1} per step",
        ops as f64 / HOPS as f64
    );
    assert!(
        ops >= HOPS as u64,
        "tract's step counted {ops} heap operations in {HOPS} steps"
    );
}

#[test]
fn the_whole_detector_allocates_nothing_per_hop() {
    for (what, path) in models() {
        let model = Model::load(&path).unwrap();
        assert_eq!(model.engine(), Engine::Native, "{what}");
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
        if what == "tone detector" {
            assert_eq!(events, 3, "the tone detector finds the three bursts");
        }
        eprintln!("{what}: detector: {ops} heap operations in {hops} hops ({events} events)");
        assert_eq!(ops, 0, "{what}: the detector allocated in {hops} hops");
    }
}
