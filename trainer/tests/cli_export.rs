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
