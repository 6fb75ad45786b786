//! Trainer and runtime compute the same features: the trainer's whole-clip path and the
//! runtime's streaming path, on a real recording decoded by the same code.

use hark::audio::AudioReader;
use hark::frontend::{Frontend, FrontendConfig};
use hark_trainer::features::features_of_file;

#[test]
fn trainer_features_equal_the_runtime_streaming_features() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runtime/tests/fixtures/formats/tone_burst.ogg");
    let cfg = FrontendConfig::default();
    let trained = features_of_file(&cfg, &path).unwrap();

    let mut reader = AudioReader::open(&path).unwrap();
    let mut fe = Frontend::new(cfg).unwrap();
    let mut streamed = Vec::new();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        fe.push(chunk, |_, f| streamed.extend_from_slice(f));
    }
    assert!(trained.n_frames() > 100);
    assert_eq!(trained.data.len(), streamed.len());
    assert!(
        trained
            .data
            .iter()
            .zip(&streamed)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}
