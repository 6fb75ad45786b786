//! Regenerates runtime/tests/fixtures/tone-detector.onnx, the hand-built model the runtime's
//! command-line tests run (tests/fixture_model.rs checks the committed file is current).
//!
//! `cargo run -p hark-e2e --example make_fixture_model`

fn main() -> std::io::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runtime/tests/fixtures/tone-detector.onnx");
    std::fs::write(&path, hark_e2e::energy_detector_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}
