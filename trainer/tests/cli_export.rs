//! `hark-train train` then `hark-train export` through the binary.

use std::fs;
use std::process::Command;

#[test]
fn train_then_export_through_the_command_line() {
    let bin = env!("CARGO_BIN_EXE_hark-train");
    let tmp = tempfile::tempdir().unwrap();
    // configs/tiny.toml with one epoch per stage.
    let tiny = include_str!("../configs/tiny.toml");
    assert!(tiny.contains("\nepochs = 12") && tiny.contains("classifier_epochs = 6"));
    let cfg = tmp.path().join("tiny1.toml");
    fs::write(
        &cfg,
        tiny.replace("\nepochs = 12", "\nepochs = 1")
            .replace("classifier_epochs = 6", "classifier_epochs = 1"),
    )
    .unwrap();
    let run_dir = tmp.path().join("run");
    let out = Command::new(bin)
        .arg("train")
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let onnx = tmp.path().join("models").join("tiny.onnx");
    let out = Command::new(bin)
        .arg("export")
        .arg(&run_dir)
        .arg("-o")
        .arg(&onnx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("tiny.md"), "{stderr}");
    let model = hark::model::Model::load(&onnx).unwrap();
    assert_eq!(model.metadata().classes[0], "background");
    let card = fs::read_to_string(tmp.path().join("models").join("tiny.md")).unwrap();
    assert!(card.starts_with("# tiny\n"));
    assert!(card.contains("multiply-adds per hop"));
    // The reproduction command names the configuration the run was started from.
    assert!(
        card.contains(&format!(
            "hark-train train --config {} --out {}",
            cfg.display(),
            run_dir.display()
        )),
        "{card}"
    );

    // A second run (the class-weighted baseline, same data), exported alone and merged with
    // the first: the merged model's scores are the mean of the two models' scores.
    let run2 = tmp.path().join("run2");
    let out = Command::new(bin)
        .args(["train", "--method", "weighted_ce", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&run2)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let onnx2 = tmp.path().join("models").join("tiny2.onnx");
    let out = Command::new(bin)
        .arg("export")
        .arg(&run2)
        .arg("-o")
        .arg(&onnx2)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged = tmp.path().join("models").join("merged.onnx");
    let out = Command::new(bin)
        .arg("merge")
        .arg(&run_dir)
        .arg(&run2)
        .arg("-o")
        .arg(&merged)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("the mean of 2 runs"), "{stderr}");
    let m = hark::model::Model::load(&merged).unwrap();
    assert_eq!(m.metadata().classes, model.metadata().classes);
    let runs = &m.metadata().training["merged_runs"];
    assert_eq!(runs.as_array().map(Vec::len), Some(2), "{runs}");
    assert_eq!(runs[1]["method"], "weighted_ce");
    let single2 = hark::model::Model::load(&onnx2).unwrap();
    let n_mels = model.metadata().frontend.n_mels;
    let frames: Vec<f32> = (0..50 * n_mels)
        .map(|i| ((i * 7919 % 1000) as f32 / 100.0) - 5.0)
        .collect();
    let (a, b, ab) = (
        model.run_sequence(&frames).unwrap(),
        single2.run_sequence(&frames).unwrap(),
        m.run_sequence(&frames).unwrap(),
    );
    assert_eq!(ab.len(), a.len());
    for ((x, y), z) in a.iter().zip(&b).zip(&ab) {
        assert!(
            (z - (x + y) / 2.0).abs() < 1e-4,
            "{z} vs mean of {x} and {y}"
        );
    }
    // The two runs differ (else the check above says nothing).
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-3));
    // One run is not enough, and a folder that is not a run is named.
    let out = Command::new(bin)
        .arg("merge")
        .arg(&run_dir)
        .arg("-o")
        .arg(tmp.path().join("m1.onnx"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(bin)
        .arg("merge")
        .arg(&run_dir)
        .arg(tmp.path())
        .arg("-o")
        .arg(tmp.path().join("m2.onnx"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no checkpoint"));

    // A folder that is not a run: exit status 1 and a message naming the problem.
    let out = Command::new(bin)
        .arg("export")
        .arg(tmp.path())
        .arg("-o")
        .arg(tmp.path().join("x.onnx"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no checkpoint"), "{stderr}");
}
