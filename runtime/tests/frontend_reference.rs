//! The Rust frontend against the independent numpy reference
//! (`tests/reference/logmel_reference.py`, whose outputs are the committed fixtures).

mod common;

use common::{fixture, read_f32};
use hark::audio::read_file;
use hark::frontend::{Frontend, FrontendConfig};

const TOLERANCE: f32 = 1e-3;

fn assert_matches_reference(name: &str, signal: &[f32]) {
    let reference = read_f32(&format!("{name}.logmel.f32"));
    let mut fe = Frontend::new(FrontendConfig::default()).unwrap();
    let (ours, _) = fe.compute(signal);
    assert_eq!(
        ours.len(),
        reference.len(),
        "{name}: {} frames here, {} in the reference",
        ours.len() / 64,
        reference.len() / 64
    );
    let (mut worst, mut at) = (0.0f32, 0);
    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        let d = (a - b).abs();
        if d > worst {
            (worst, at) = (d, i);
        }
    }
    assert!(
        worst <= TOLERANCE,
        "{name}: frame {} band {} differs by {worst} (ours {}, reference {})",
        at / 64,
        at % 64,
        ours[at],
        reference[at]
    );
}

#[test]
fn sine_sweep_matches_the_numpy_reference() {
    assert_matches_reference("sweep", &read_f32("sweep.f32"));
}

#[test]
fn white_noise_matches_the_numpy_reference() {
    assert_matches_reference("noise", &read_f32("noise.f32"));
}

#[test]
fn real_recording_decoded_by_hark_matches_the_numpy_reference() {
    let decoded = read_file(fixture("bark.wav")).unwrap();
    assert_eq!(decoded.info.sample_rate, 16_000);
    assert_eq!(decoded.samples.len(), 9244);
    assert_matches_reference("bark", &decoded.samples);
}
