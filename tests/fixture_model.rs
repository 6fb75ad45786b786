//! The runtime's committed test model is what the exporter makes today, and it detects what
//! it was built to detect.

use hark::model::Model;

#[test]
fn the_committed_tone_detector_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runtime/tests/fixtures/tone-detector.onnx");
    let committed =
        std::fs::read(&path).expect("run: cargo run -p hark-e2e --example make_fixture_model");
    assert!(
        committed == hark_e2e::energy_detector_bytes(),
        "runtime/tests/fixtures/tone-detector.onnx is stale: cargo run -p hark-e2e --example make_fixture_model"
    );
}

#[test]
fn the_tone_detector_scores_a_1khz_tone_and_not_silence_or_other_tones() {
    let model = Model::from_bytes(&hark_e2e::energy_detector_bytes(), "tone-detector").unwrap();
    let mut fe = hark::frontend::Frontend::new(Default::default()).unwrap();
    let tone = |hz: f32, amp: f32| -> Vec<f32> {
        (0..8000)
            .map(|i| amp * (2.0 * std::f32::consts::PI * hz * i as f32 / 16000.0).sin())
            .collect()
    };
    for (signal, want_on) in [
        (tone(1000.0, 0.5), true),
        (tone(1000.0, 0.0), false),
        (tone(4000.0, 0.5), false),
        (tone(200.0, 0.5), false),
    ] {
        let (frames, _) = fe.compute(&signal);
        let scores = model.run_sequence(&frames).unwrap();
        let tone_score = scores[scores.len() - 1];
        assert_eq!(tone_score > 0.9, want_on, "score {tone_score}");
        assert!(want_on || tone_score < 0.1, "score {tone_score}");
    }
}
