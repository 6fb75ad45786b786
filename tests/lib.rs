//! Shared helpers for the end-to-end tests in this folder.

use std::collections::BTreeMap;

use hark::frontend::FrontendConfig;
use hark::model::{FORMAT_VERSION, ModelMetadata};
use hark_trainer::export::{Activation, Dense, OutputActivation, StreamingNet};
use hark_trainer::kmeans::SplitMix64;
use hark_trainer::model::{LinearWeights, LstmWeights};

/// Uniform values in [-scale, scale).
pub fn uniform(rng: &mut SplitMix64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
        .collect()
}

/// A network with random weights: `layers` LSTM layers of `hidden`, a ReLU layer, and a
/// softmax over `n_classes`.
pub fn random_net(
    seed: u64,
    n_mels: usize,
    layers: usize,
    hidden: usize,
    n_classes: usize,
) -> StreamingNet {
    let mut rng = SplitMix64::new(seed);
    let lstm = (0..layers)
        .map(|l| {
            let d = if l == 0 { n_mels } else { hidden };
            LstmWeights {
                input_size: d,
                hidden_size: hidden,
                w: uniform(&mut rng, 4 * hidden * d, 0.3),
                r: uniform(&mut rng, 4 * hidden * hidden, 0.3),
                b: uniform(&mut rng, 8 * hidden, 0.3),
            }
        })
        .collect();
    let dense = |rng: &mut SplitMix64, d_in: usize, d_out: usize, activation| Dense {
        weights: LinearWeights {
            d_in,
            d_out,
            weight: uniform(rng, d_in * d_out, 0.5),
            bias: uniform(rng, d_out, 0.1),
        },
        activation,
    };
    StreamingNet {
        n_mels,
        lstm,
        dense: vec![
            dense(&mut rng, hidden, 12, Activation::Relu),
            dense(&mut rng, 12, n_classes, Activation::Identity),
        ],
        output: OutputActivation::Softmax,
    }
}

/// Metadata for classes `background, class_1, ...` with threshold 0.5 for each event class.
pub fn metadata(n_classes: usize, n_mels: usize) -> ModelMetadata {
    let classes: Vec<String> = std::iter::once("background".to_string())
        .chain((1..n_classes).map(|i| format!("class_{i}")))
        .collect();
    let thresholds: BTreeMap<String, f32> = classes[1..].iter().map(|c| (c.clone(), 0.5)).collect();
    ModelMetadata {
        format_version: FORMAT_VERSION,
        classes,
        background: Some("background".into()),
        thresholds,
        frontend: FrontendConfig {
            n_mels,
            ..FrontendConfig::default()
        },
        training: serde_json::json!({"note": "random weights for a test"}),
    }
}

/// Features that look like log-mel frames: slowly varying, in about [-14, 8].
pub fn feature_sequence(seed: u64, frames: usize, n_mels: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let mut prev = uniform(&mut rng, n_mels, 3.0);
    let mut out = Vec::with_capacity(frames * n_mels);
    for _ in 0..frames {
        for v in prev.iter_mut() {
            *v = (*v * 0.9 + (rng.next_f64() as f32 - 0.5) * 2.0).clamp(-14.0, 8.0);
        }
        out.extend_from_slice(&prev);
    }
    out
}

/// Largest absolute difference.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
