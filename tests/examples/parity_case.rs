//! Writes a parity case for a second ONNX client (tests/onnxruntime_parity.py): an exported
//! model (the trainer's burn network, freshly initialised, 2 LSTM layers), 500 frames of
//! features, and tract's scores for them, stepped hop by hop and in one call.
//!
//! `cargo run -p hark-e2e --example parity_case -- OUT_DIR`

use burn::prelude::*;
use hark::model::Model;
use hark_e2e::{feature_sequence, metadata};
use hark_trainer::backend::{Cpu, CpuDevice};
use hark_trainer::export::StreamingNet;
use hark_trainer::model::{ClassifierConfig, EmbeddingNetConfig};

fn write_f32(path: &std::path::Path, v: &[f32]) -> std::io::Result<()> {
    std::fs::write(
        path,
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
}

fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    std::fs::create_dir_all(&out)?;
    let device = CpuDevice::default();
    Cpu::seed(&device, 7);
    let net = EmbeddingNetConfig::new()
        .with_layers(2)
        .init::<Cpu>(&device);
    let clf = ClassifierConfig::new(5).init::<Cpu>(&device);
    let bytes = StreamingNet::from_models(&net, &clf).to_onnx(&metadata(5, 64))?;
    std::fs::write(out.join("model.onnx"), &bytes)?;
    let x = feature_sequence(99, 500, 64);
    write_f32(&out.join("features.f32"), &x)?;
    let model = Model::from_bytes(&bytes, "model.onnx")?;
    let mut stream = model.stream()?;
    let mut stepped = Vec::new();
    for f in x.chunks_exact(64) {
        stepped.extend_from_slice(stream.step(f)?);
    }
    write_f32(&out.join("tract_steps.f32"), &stepped)?;
    write_f32(&out.join("tract_whole.f32"), &model.run_sequence(&x)?)?;
    let (layers, hidden) = model.state_shape();
    std::fs::write(
        out.join("case.json"),
        serde_json::json!({"frames": 500, "n_mels": 64, "classes": 5, "layers": layers, "hidden": hidden})
            .to_string(),
    )?;
    println!("parity case written to {}", out.display());
    Ok(())
}
