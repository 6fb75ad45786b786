//! The causal CNN embedding network (`[model] kind = "cnn"`) through the trainer: both
//! methods train and evaluate with it, the configuration is validated, and the exported
//! streaming graph agrees with burn.

use std::path::Path;

use hark::model::Model;
use hark_trainer::backend::Cpu;
use hark_trainer::examples::ExampleSet;
use hark_trainer::train::{
    CnnSection, Method, ModelKind, RunOptions, TrainConfig, TrainOutcome, evaluate, export_onnx,
    load_data_clips, prepare_data, synthetic_test_set, tiny_config, train_prepared,
};

fn cnn_config(method: Method) -> TrainConfig {
    let mut cfg = tiny_config(method);
    cfg.model.kind = ModelKind::Cnn;
    cfg.model.cnn = CnnSection {
        channels: 16,
        kernel: 3,
        dilations: vec![1, 2, 4],
    };
    cfg
}

#[test]
fn a_cnn_learns_the_synthetic_classes_with_both_methods() {
    for method in [Method::WeightedCe, Method::Centroid] {
        let cfg = cnn_config(method);
        let clips = load_data_clips(&cfg, Path::new("."), &mut |_| {}).unwrap();
        let data = prepare_data(&cfg, &clips, Path::new(".")).unwrap();
        let out = train_prepared(&cfg, &data, &RunOptions::default(), &mut |_| {}).unwrap();
        assert!(out.net.is_cnn());
        let first = &out.history[0];
        let last = out.history.last().unwrap();
        assert!(
            last.train_loss < 0.8 * first.train_loss,
            "{method:?}: {:?}",
            out.history
        );
        let synth = cfg.data.synthetic.clone().unwrap();
        let test = synthetic_test_set(&cfg, &synth, 999, &data).unwrap();
        let m = evaluate(&out.net, &out.classifier, &test, 64);
        // 4 classes: chance is 0.25.
        assert!(
            m.balanced_accuracy > 0.6,
            "{method:?}: held-out balanced accuracy {} ({:?})",
            m.balanced_accuracy,
            m.confusion
        );
        assert_export_matches_burn(&cfg, &out, &test);
    }
}

/// The exported step graph, served by the runtime (tract), on raw features equals burn on
/// the normalised ones, over a whole sequence and hop by hop (the state carrying each layer's
/// past frames across hops).
fn assert_export_matches_burn(cfg: &TrainConfig, out: &TrainOutcome, set: &ExampleSet) {
    let model = Model::from_bytes(&export_onnx(cfg, out).unwrap(), "cnn.onnx").unwrap();
    assert_eq!(model.n_classes(), out.classes.len());
    let (mean, std) = &out.normalization;
    // Two windows back to back: 50 frames, more than the receptive field (15).
    let (x, _) = set.batch::<Cpu>(&[0, 1], &Default::default());
    let [_, frames, n_mels] = x.dims();
    let x = x.reshape([1, 2 * frames, n_mels]);
    let expect: Vec<f32> = out
        .classifier
        .probabilities(out.net.forward_frames(x.clone()))
        .into_data()
        .to_vec()
        .unwrap();
    let normed: Vec<f32> = x.into_data().to_vec().unwrap();
    let raw: Vec<f32> = normed
        .iter()
        .enumerate()
        .map(|(i, v)| v * std[i % n_mels] + mean[i % n_mels])
        .collect();
    let diff = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let whole = model.run_sequence(&raw).unwrap();
    assert!(diff(&whole, &expect) < 1e-4, "{}", diff(&whole, &expect));
    let mut stream = model.stream().unwrap();
    let mut hops = Vec::new();
    for f in raw.chunks_exact(n_mels) {
        hops.extend_from_slice(stream.step(f).unwrap());
    }
    assert!(diff(&hops, &whole) < 1e-4, "{}", diff(&hops, &whole));
}

#[test]
fn cnn_configuration_is_validated_naming_the_key() {
    let base = "[data.synthetic]\n";
    let cfg = TrainConfig::from_toml(&format!(
        "{base}[model]\nkind = \"cnn\"\n[model.cnn]\nchannels = 8\ndilations = [1, 3]\n"
    ))
    .unwrap();
    assert_eq!(cfg.model.kind, ModelKind::Cnn);
    assert_eq!(cfg.model.cnn.kernel, 3);
    assert_eq!(cfg.model.cnn.dilations, vec![1, 3]);
    assert_eq!(TrainConfig::from_toml(&cfg.to_toml()).unwrap(), cfg);
    // The default is the LSTM with the documented CNN defaults beside it.
    let d = TrainConfig::from_toml(base).unwrap();
    assert_eq!(d.model.kind, ModelKind::Lstm);
    assert_eq!(d.model.cnn, CnnSection::default());
    assert_eq!(
        (
            d.model.cnn.channels,
            d.model.cnn.kernel,
            d.model.cnn.dilations
        ),
        (48, 3, vec![1, 2, 4, 8, 16])
    );
    for (text, key) in [
        (
            "[model]\nkind = \"cnn\"\n[model.cnn]\nchannels = 0\n",
            "model.cnn.channels",
        ),
        (
            "[model]\nkind = \"cnn\"\n[model.cnn]\nkernel = 0\n",
            "model.cnn.kernel",
        ),
        (
            "[model]\nkind = \"cnn\"\n[model.cnn]\ndilations = []\n",
            "model.cnn.dilations",
        ),
        (
            "[model]\nkind = \"cnn\"\n[model.cnn]\ndilations = [1, 0]\n",
            "model.cnn.dilations",
        ),
        (
            "carry_state = true\n[model]\nkind = \"cnn\"\n",
            "carry_state",
        ),
        ("[model]\nkind = \"tcn\"\n", "kind"),
        ("[model.cnn]\nchannel = 8\n", "channel"),
    ] {
        let e = TrainConfig::from_toml(&format!("{text}{base}")).unwrap_err();
        assert!(e.to_string().contains(key), "{text}: {e}");
    }
}
