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

/// A hand-built model that needs no training: one LSTM unit whose cell follows
/// `tanh(2 (mean log-mel over the bands between lo_hz and hi_hz - level))` (input, output gates
/// held open, forget gate shut), and a softmax over `background` and `tone` driven by it. It
/// scores `tone` near 1 while those bands are louder than `level` (log-mel units) and near 0
/// otherwise: a detector whose right answers are known exactly, for end-to-end tests.
pub fn energy_detector_net(lo_hz: f64, hi_hz: f64, level: f32) -> StreamingNet {
    use hark::frontend::{hz_to_mel, mel_to_hz};
    let n_mels = 64;
    let (m_lo, m_hi) = (hz_to_mel(125.0), hz_to_mel(7500.0));
    let centres: Vec<f64> = (1..=n_mels)
        .map(|i| mel_to_hz(m_lo + (m_hi - m_lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let picked: Vec<usize> = (0..n_mels)
        .filter(|&m| centres[m] >= lo_hz && centres[m] <= hi_hz)
        .collect();
    assert!(
        !picked.is_empty(),
        "no mel band between {lo_hz} and {hi_hz} Hz"
    );
    let gain = 2.0f32;
    // Gate rows in ONNX order i, o, f, c (hidden size 1).
    let mut w = vec![0.0f32; 4 * n_mels];
    for &m in &picked {
        w[3 * n_mels + m] = gain / picked.len() as f32;
    }
    let mut b = vec![0.0f32; 8];
    b[0] = 10.0; // input gate open
    b[1] = 10.0; // output gate open
    b[2] = -10.0; // forget gate shut: the cell follows the current frame
    b[3] = -gain * level;
    StreamingNet {
        n_mels,
        lstm: vec![LstmWeights {
            input_size: n_mels,
            hidden_size: 1,
            w,
            r: vec![0.0; 4],
            b,
        }],
        dense: vec![Dense {
            weights: LinearWeights {
                d_in: 1,
                d_out: 2,
                weight: vec![-10.0, 10.0],
                bias: vec![0.0, 0.0],
            },
            activation: Activation::Identity,
        }],
        output: OutputActivation::Softmax,
    }
}

/// Metadata of [`energy_detector_net`]: classes `background` and `tone`, threshold 0.5.
pub fn energy_detector_metadata() -> ModelMetadata {
    let mut m = metadata(2, 64);
    m.classes = vec!["background".into(), "tone".into()];
    m.thresholds = [("tone".to_string(), 0.5)].into_iter().collect();
    m.training = serde_json::json!({"note": "hand-built energy detector (900-1150 Hz bands) for tests; not trained"});
    m
}

/// The committed energy-detector fixture model's bytes (runtime/tests/fixtures/tone-detector.onnx).
pub fn energy_detector_bytes() -> Vec<u8> {
    energy_detector_net(900.0, 1150.0, 2.0)
        .to_onnx(&energy_detector_metadata())
        .expect("the hand-built model exports")
}

/// The `hark` binary of this workspace, built (or found up to date) by cargo in the target
/// folder and profile of the running test: `CARGO_BIN_EXE_hark` exists only for the runtime's
/// own tests. Cargo holds no lock while tests run, so this nested build is safe.
pub fn hark_binary() -> std::path::PathBuf {
    use std::path::PathBuf;
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // The test runs as <target>/<profile>/deps/<test>-<hash>.
            let exe = std::env::current_exe().expect("the test's own path");
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("<target>/<profile>/deps/<test>");
            let target = profile_dir.parent().expect("<target>/<profile>");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = std::process::Command::new(cargo);
            cmd.args(["build", "--quiet", "-p", "hark", "--bin", "hark"])
                .arg("--target-dir")
                .arg(target)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") => {}
                Some("release") => {
                    cmd.arg("--release");
                }
                Some(other) => {
                    cmd.args(["--profile", other]);
                }
                None => panic!("no profile folder in {}", exe.display()),
            }
            let status = cmd.status().expect("running cargo build -p hark");
            assert!(status.success(), "cargo build -p hark --bin hark failed");
            let bin = profile_dir.join(format!("hark{}", std::env::consts::EXE_SUFFIX));
            assert!(bin.is_file(), "{} was not built", bin.display());
            bin
        })
        .clone()
}
