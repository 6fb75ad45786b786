//! The exported step graph computes what the trainer's network computes: burn, the plain-Rust
//! reference of the graph and tract agree within 1e-4, stepping frame by frame with the state
//! carried and in one 500-frame call. A negative control (forget and output gates swapped)
//! shows the check able to fail.

use burn::prelude::*;
use hark::model::{EngineChoice, Model};
use hark_e2e::{feature_sequence, max_diff, metadata, random_net};
use hark_trainer::backend::{Cpu, CpuDevice};
use hark_trainer::export::StreamingNet;
use hark_trainer::model::{ClassifierConfig, EmbeddingNetConfig};

const TOL: f32 = 1e-4;
const FRAMES: usize = 500;

/// Steps `model` with tract (not the native engine, which `tests/native_engine.rs` holds to
/// tract and to the reference).
fn tract_stepwise(model: &Model, frames: &[f32], n_mels: usize) -> Vec<f32> {
    let mut model = model.clone();
    model.select(EngineChoice::Tract).unwrap();
    let mut stream = model.stream().unwrap();
    let mut out = Vec::new();
    for f in frames.chunks_exact(n_mels) {
        out.extend_from_slice(stream.step(f).unwrap());
    }
    out
}

fn reference(net: &StreamingNet, frames: &[f32]) -> Vec<f32> {
    let n = net.layers() * net.hidden();
    net.forward_reference(frames, &mut vec![0.0; n], &mut vec![0.0; n])
}

#[test]
fn tract_matches_the_reference_on_random_weights_and_inputs() {
    for (seed, layers, hidden) in [(1, 1, 64), (2, 2, 24)] {
        let net = random_net(seed, 64, layers, hidden, 5);
        let bytes = net.to_onnx(&metadata(5, 64)).unwrap();
        let model = Model::from_bytes(&bytes, "random.onnx").unwrap();
        assert_eq!(model.state_shape(), (layers, hidden));
        let x = feature_sequence(seed + 10, FRAMES, 64);
        let want = reference(&net, &x);
        let stepped = tract_stepwise(&model, &x, 64);
        // And the native engine (the default where it can run the model) steps the same.
        assert_eq!(model.engine(), hark::model::Engine::Native);
        let mut s = model.stream().unwrap();
        let native: Vec<f32> = x
            .chunks_exact(64)
            .flat_map(|f| s.step(f).unwrap().to_vec())
            .collect();
        let d = max_diff(&native, &want);
        assert!(
            d < TOL,
            "{layers}x{hidden}: native, 500 steps differ by {d}"
        );
        let d = max_diff(&stepped, &want);
        assert!(d < TOL, "{layers}x{hidden}: 500 steps differ by {d}");
        let whole = model.run_sequence(&x).unwrap();
        let d = max_diff(&whole, &want);
        assert!(
            d < TOL,
            "{layers}x{hidden}: one 500-frame call differs by {d}"
        );
        // The state matters: scores late in the sequence differ from a fresh start.
        let fresh = reference(&net, &x[64 * 400..64 * 401]);
        assert!(max_diff(&want[5 * 400..5 * 401], &fresh) > 1e-3);
    }
}

#[test]
fn reset_gives_a_fresh_stream() {
    let net = random_net(3, 64, 1, 32, 4);
    let model = Model::from_bytes(&net.to_onnx(&metadata(4, 64)).unwrap(), "m").unwrap();
    let x = feature_sequence(4, 50, 64);
    let mut s = model.stream().unwrap();
    let first: Vec<f32> = s.step(&x[..64]).unwrap().to_vec();
    for f in x.chunks_exact(64).skip(1) {
        s.step(f).unwrap();
    }
    s.reset();
    assert_eq!(s.step(&x[..64]).unwrap(), &first[..]);
}

/// Swaps the forget- and output-gate blocks (ONNX order i, o, f, c) in W, R and B.
fn swap_forget_and_output(net: &mut StreamingNet) {
    for l in &mut net.lstm {
        let h = l.hidden_size;
        for (m, cols) in [(&mut l.w, l.input_size), (&mut l.r, h)] {
            let block = h * cols;
            let (o, f) = m[block..3 * block].split_at_mut(block);
            o.swap_with_slice(f);
        }
        for half in 0..2 {
            let base = half * 4 * h;
            let (o, f) = l.b[base + h..base + 3 * h].split_at_mut(h);
            o.swap_with_slice(f);
        }
    }
}

#[test]
fn negative_control_swapped_gates_fail_the_check() {
    let net = random_net(5, 64, 1, 64, 5);
    let x = feature_sequence(6, FRAMES, 64);
    let want = reference(&net, &x);
    let mut broken = net.clone();
    swap_forget_and_output(&mut broken);
    let model = Model::from_bytes(&broken.to_onnx(&metadata(5, 64)).unwrap(), "broken").unwrap();
    let d = max_diff(&tract_stepwise(&model, &x, 64), &want);
    assert!(
        d > 100.0 * TOL,
        "swapped gates went unnoticed (max difference {d})"
    );
}

/// Asserts burn's probabilities, tract's (500 steps with the state carried, and one call) and
/// the plain-Rust reference of the exported graph agree within [`TOL`] on frames `x`.
fn assert_burn_and_tract_agree(
    net: &hark_trainer::model::EmbeddingNet<Cpu>,
    clf: &hark_trainer::model::Classifier<Cpu>,
    x: &[f32],
    what: &str,
) {
    let device = CpuDevice::default();
    let input = Tensor::<Cpu, 1>::from_floats(x, &device).reshape([1, FRAMES, 64]);
    let burn_scores: Vec<f32> = clf
        .probabilities(net.forward_frames(input))
        .into_data()
        .to_vec()
        .unwrap();
    let exported = StreamingNet::from_models(net, clf);
    let model = Model::from_bytes(&exported.to_onnx(&metadata(4, 64)).unwrap(), what).unwrap();
    let d = max_diff(&tract_stepwise(&model, x, 64), &burn_scores);
    assert!(d < TOL, "{what}: burn vs tract, 500 steps: {d}");
    let d = max_diff(&model.run_sequence(x).unwrap(), &burn_scores);
    assert!(d < TOL, "{what}: burn vs tract, one call: {d}");
    let d = max_diff(&reference(&exported, x), &burn_scores);
    assert!(d < TOL, "{what}: burn vs reference: {d}");
}

#[test]
fn burn_and_tract_agree_on_the_trainers_network() {
    let device = CpuDevice::default();
    for layers in [1, 2] {
        let net = EmbeddingNetConfig::new()
            .with_layers(layers)
            .init::<Cpu>(&device);
        let clf = ClassifierConfig::new(4).init::<Cpu>(&device);
        let x = feature_sequence(20 + layers as u64, FRAMES, 64);
        assert_burn_and_tract_agree(&net, &clf, &x, &format!("{layers} layers"));
    }
}

#[test]
fn tract_matches_burn_on_real_recordings_features() {
    // Features of the committed real recordings (a dog bark, a tone with a noise burst),
    // computed by the runtime's decoder and frontend, repeated to 500 frames.
    let cfg = hark::frontend::FrontendConfig::default();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/fixtures");
    let mut real = Vec::new();
    for f in [
        "bark.wav",
        "formats/tone_burst.ogg",
        "formats/tone_burst.mp3",
    ] {
        real.extend(
            hark_trainer::features::features_of_file(&cfg, &dir.join(f))
                .unwrap()
                .data,
        );
    }
    let x: Vec<f32> = real.iter().cycle().take(FRAMES * 64).copied().collect();
    let device = CpuDevice::default();
    Cpu::seed(&device, 11);
    let net = EmbeddingNetConfig::new().init::<Cpu>(&device);
    let clf = ClassifierConfig::new(4).init::<Cpu>(&device);
    assert_burn_and_tract_agree(&net, &clf, &x, "real features");
}
