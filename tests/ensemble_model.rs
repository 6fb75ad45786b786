//! An ensemble and a CNN end to end: the trainer trains a tiny clustered ensemble (and a
//! tiny causal-CNN model) on the synthetic task, exports each as one ONNX file, and the `hark`
//! binary serves it (`hark info`, `hark detect`).

use std::process::Command;

use hark::frontend::Frontend;
use hark::model::Model;
use hark::pipeline::EventRecord;
use hark_e2e::hark_binary;
use hark_trainer::data::write_wav;
use hark_trainer::ensemble::{self, EnsembleKind, EnsembleSection};
use hark_trainer::examples::{Rng, lowpass, mix_at_ebr, synthetic_clips};
use hark_trainer::train::{CnnSection, Method, ModelKind, RunOptions, run, tiny_config};

const RATE: usize = 16_000;

#[test]
fn a_trained_ensemble_exports_to_one_model_that_hark_detect_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(Method::WeightedCe);
    cfg.epochs = 8;
    cfg.ensemble = Some(EnsembleSection {
        kind: EnsembleKind::Clustered,
        members: 2,
    });
    let opts = RunOptions {
        out_dir: Some(dir.path().to_path_buf()),
        base_dir: dir.path().to_path_buf(),
        ..RunOptions::default()
    };
    let out = ensemble::run(&cfg, &opts, &mut |_| {}).expect("training the tiny ensemble");
    assert_eq!(out.members.len(), 2);
    assert!(
        out.val_metrics.balanced_accuracy > 0.4,
        "{:?}",
        out.val_metrics
    );
    for f in [
        "config.toml",
        "ensemble.json",
        "model.onnx",
        "summary.json",
        "member0/metrics.csv",
        "member1/metrics.csv",
    ] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    let model_path = dir.path().join("model.onnx");
    let model = Model::load(&model_path).unwrap();
    assert_eq!(model.state_shape(), (1, 2 * cfg.model.hidden));
    assert_eq!(model.metadata().classes, out.classes);
    assert_eq!(model.metadata().training["ensemble"]["kind"], "clustered");

    // The runtime's scores of a clip are the mean of the members' own exported models'.
    let clip = &synthetic_clips(&cfg.data.synthetic.clone().unwrap(), 5)[0];
    let mut fe = Frontend::new(cfg.frontend.clone()).unwrap();
    let (frames, _) = fe.compute(&clip.samples);
    let whole = model.run_sequence(&frames).unwrap();
    let mut mean = vec![0.0f32; whole.len()];
    for m in &out.members {
        let alone = hark_trainer::train::export_onnx(&cfg, m).unwrap();
        let alone = Model::from_bytes(&alone, "member").unwrap();
        for (a, v) in mean.iter_mut().zip(alone.run_sequence(&frames).unwrap()) {
            *a += v / 2.0;
        }
    }
    let diff = whole
        .iter()
        .zip(&mean)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "{diff}");

    // The native engine serves the merged graph (`--engine native` is an error otherwise).
    let info = Command::new(hark_binary())
        .args(["info", "--engine", "native"])
        .arg(&model_path)
        .output()
        .unwrap();
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );

    // 10 s of background with a tone at 4 s, through `hark detect`.
    let mut rng = Rng::new(31);
    let white: Vec<f32> = (0..10 * RATE).map(|_| rng.normal() * 0.1).collect();
    let mut x = lowpass(&white, 900.0);
    let clips = synthetic_clips(&cfg.data.synthetic.clone().unwrap(), 777);
    let tone = clips.iter().find(|c| c.class == "tone").unwrap();
    let at = 4 * RATE;
    mix_at_ebr(&mut x[at..at + tone.samples.len()], &tone.samples, 0, 9.0);
    let wav = dir.path().join("tone.wav");
    write_wav(&wav, &x, RATE as u32).unwrap();
    let out = Command::new(hark_binary())
        .args(["detect", "--model"])
        .arg(&model_path)
        .arg(&wav)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events: Vec<EventRecord> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    eprintln!("events: {events:?}");
    assert!(
        events.iter().all(|e| e.onset >= 0.0 && e.onset <= 10.0),
        "{events:?}"
    );
}

/// A tiny CNN model: its export loads with the state shape of its convolutions' past frames
/// and streams through `hark detect` (the runtime's own hop-by-hop stepping).
#[test]
fn a_trained_cnn_model_runs_in_hark_detect() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(Method::WeightedCe);
    cfg.plots = false;
    cfg.model.kind = ModelKind::Cnn;
    cfg.model.cnn = CnnSection {
        channels: 16,
        kernel: 3,
        dilations: vec![1, 2, 4],
    };
    let opts = RunOptions {
        out_dir: Some(dir.path().to_path_buf()),
        base_dir: dir.path().to_path_buf(),
        ..RunOptions::default()
    };
    let out = run(&cfg, &opts, &mut |_| {}).expect("training the tiny CNN");
    assert!(out.net.is_cnn());
    let model_path = dir.path().join("model.onnx");
    let model = Model::load(&model_path).unwrap();
    // Past frames of the three layers: 64 bands x 2, 16 channels x 4, 16 channels x 8.
    assert_eq!(model.state_shape(), (1, 64 * 2 + 16 * 4 + 16 * 8));
    // The native engine translates the CNN's step graph (Conv among its steps), and `hark
    // info` says so.
    let info = Command::new(hark_binary())
        .arg("info")
        .arg(&model_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    assert!(
        text.contains("engine:     native") && text.contains("Conv"),
        "{text}"
    );

    let clips = synthetic_clips(&cfg.data.synthetic.clone().unwrap(), 777);
    let tone = clips.iter().find(|c| c.class == "tone").unwrap();
    let mut x = vec![0.0f32; 3 * RATE];
    let mut rng = Rng::new(32);
    x.iter_mut().for_each(|v| *v = rng.normal() * 0.01);
    let at = RATE;
    mix_at_ebr(&mut x[at..at + tone.samples.len()], &tone.samples, 0, 12.0);
    let wav = dir.path().join("tone.wav");
    write_wav(&wav, &x, RATE as u32).unwrap();
    let out = Command::new(hark_binary())
        .args(["detect", "--model"])
        .arg(&model_path)
        .arg(&wav)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events: Vec<EventRecord> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    eprintln!("events: {events:?}");
    assert!(
        events.iter().all(|e| e.onset >= 0.0 && e.onset <= 3.0),
        "{events:?}"
    );
}
