//! `hark-train train` through the binary: what it prints and the plots it writes.

use std::fs;
use std::process::Command;

#[test]
fn train_prints_epoch_lines_and_writes_plots_and_quiet_prints_less() {
    let bin = env!("CARGO_BIN_EXE_hark-train");
    let tmp = tempfile::tempdir().unwrap();
    let tiny = include_str!("../configs/tiny.toml");
    let cfg = tmp.path().join("tiny2.toml");
    fs::write(
        &cfg,
        tiny.replace("\nepochs = 12", "\nepochs = 2")
            .replace("classifier_epochs = 6", "classifier_epochs = 1"),
    )
    .unwrap();
    let train = |name: &str, quiet: bool| {
        let mut cmd = Command::new(bin);
        cmd.arg("train")
            .arg("--config")
            .arg(&cfg)
            .arg("--out")
            .arg(tmp.path().join(name));
        if quiet {
            cmd.arg("--quiet");
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    // Standard error is a pipe here: epoch lines, no progress bars.
    let loud = train("loud", false);
    assert_eq!(loud.matches(" epoch ").count(), 3, "{loud}");
    assert!(loud.contains("val balanced acc"), "{loud}");
    assert!(!loud.contains("batches"), "{loud}");
    for f in [
        "loss_curves.png",
        "confusion_matrix.png",
        "embeddings_pca.png",
    ] {
        let bytes = fs::read(tmp.path().join("loud").join(f)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{f}");
    }
    let quiet = train("quiet", true);
    assert!(!quiet.contains(" epoch "), "{quiet}");
    assert!(quiet.contains("validation: balanced accuracy"), "{quiet}");
}

/// `[ensemble]` and `[model] kind = "cnn"` through `hark-train train`: both write a model
/// file the runtime loads.
#[test]
fn train_writes_an_ensemble_and_a_cnn_model() {
    let bin = env!("CARGO_BIN_EXE_hark-train");
    let tmp = tempfile::tempdir().unwrap();
    let tiny = include_str!("../configs/tiny.toml")
        .replace("\nepochs = 12", "\nepochs = 2")
        .replace("classifier_epochs = 6", "classifier_epochs = 1");
    for (name, extra) in [
        ("ens", "\n[ensemble]\nkind = \"easy\"\nmembers = 2\n"),
        ("cnn", "\n[model.cnn]\nchannels = 8\ndilations = [1, 2]\n"),
    ] {
        let mut text = format!("plots = false\n{tiny}{extra}");
        if name == "cnn" {
            text = text.replace("[model]\n", "[model]\nkind = \"cnn\"\n");
        }
        let cfg = tmp.path().join(format!("{name}.toml"));
        fs::write(&cfg, text).unwrap();
        let out_dir = tmp.path().join(name);
        let out = Command::new(bin)
            .args(["train", "--quiet", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(&out_dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(stderr.contains("validation: balanced accuracy"), "{stderr}");
        let model = hark::model::Model::load(out_dir.join("model.onnx")).unwrap();
        assert_eq!(model.n_classes(), 4);
        if name == "ens" {
            assert_eq!(model.state_shape(), (1, 64));
            assert!(out_dir.join("member1").join("metrics.csv").is_file());
        } else {
            // Past frames of the two layers: 64 bands × 2 and 8 channels × 4.
            assert_eq!(model.state_shape(), (1, 64 * 2 + 8 * 4));
        }
    }
}
