//! `hark-train train` then `hark-train export` (and `merge`) through the binary.

use std::ffi::OsStr;
use std::fs;
use std::process::Command;

/// Runs `hark-train` with `args`: whether it succeeded, and its standard error.
fn hark_train<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hark-train"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn train_then_export_through_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |s: &str| tmp.path().join(s).into_os_string();
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
    let (ok, stderr) = hark_train([
        "train".as_ref(),
        "--config".as_ref(),
        cfg.as_os_str(),
        "--out".as_ref(),
        run_dir.as_os_str(),
    ]);
    assert!(ok, "{stderr}");
    let onnx = tmp.path().join("models").join("tiny.onnx");
    let (ok, stderr) = hark_train([
        "export".as_ref(),
        run_dir.as_os_str(),
        "-o".as_ref(),
        onnx.as_os_str(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("tiny.md"), "{stderr}");
    let model = hark::model::Model::load(&onnx).unwrap();
    assert_eq!(model.metadata().classes[0], "background");
    let card = fs::read_to_string(tmp.path().join("models").join("tiny.md")).unwrap();
    assert!(card.starts_with("# tiny\n"));
    assert!(card.contains("multiply-adds per hop"));
    // The reproduction command names the configuration the run was started from, and its
    // method (the configuration's own, here).
    assert!(
        card.contains(&format!(
            "hark-train train --config {} --method centroid --out {}",
            cfg.display(),
            run_dir.display()
        )),
        "{card}"
    );

    // A second run (the class-weighted baseline, same data), exported alone and merged with
    // the first: the merged model's scores are the mean of the two models' scores.
    let (run2, onnx2, merged) = (p("run2"), p("models/tiny2.onnx"), p("models/merged.onnx"));
    let (ok, stderr) = hark_train([
        "train".as_ref(),
        "--method".as_ref(),
        "weighted_ce".as_ref(),
        "--config".as_ref(),
        cfg.as_os_str(),
        "--out".as_ref(),
        run2.as_os_str(),
    ]);
    assert!(ok, "{stderr}");
    let (ok, stderr) = hark_train([OsStr::new("export"), &run2, "-o".as_ref(), &onnx2]);
    assert!(ok, "{stderr}");
    let (ok, stderr) = hark_train([
        OsStr::new("merge"),
        run_dir.as_os_str(),
        &run2,
        "-o".as_ref(),
        &merged,
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("the mean of 2 runs"), "{stderr}");
    // Its model card: both runs, the merged network's size and cost, how to rebuild it.
    let card = fs::read_to_string(tmp.path().join("models").join("merged.md")).unwrap();
    let hidden = {
        let cfg: toml::Value = toml::from_str(tiny).unwrap();
        cfg["model"]["hidden"].as_integer().unwrap()
    };
    for needle in [
        "# merged\n".to_string(),
        "as the mean of the scores of 2 runs of one configuration (`run`: method `centroid`; \
         `run2`: method `weighted_ce`)"
            .to_string(),
        format!(
            "1 layer(s) × {} hidden (input {} bands): the 2 runs' LSTMs of {hidden} side by side",
            2 * hidden,
            model.metadata().frontend.n_mels
        ),
        "Run `run`: method `centroid`".to_string(),
        "Run `run2`: method `weighted_ce`".to_string(),
        "the others differ in `method` only".to_string(),
        "| run/embedding | 1 |".to_string(),
        "| run2/weighted_ce | 1 |".to_string(),
        "Run `run2` on the validation split".to_string(),
        format!(
            "hark-train train --config {} --method weighted_ce --out {}",
            cfg.display(),
            run2.display()
        ),
        format!(
            "hark-train merge {} {} -o {}",
            run_dir.display(),
            run2.display(),
            merged.display()
        ),
    ] {
        assert!(card.contains(&needle), "missing {needle:?} in\n{card}");
    }
    let m = hark::model::Model::load(&merged).unwrap();
    let ma = 4 * 2 * hidden as usize * (model.metadata().frontend.n_mels + 2 * hidden as usize)
        + 3 * 2 * hidden as usize;
    // At least the merged LSTM's multiply-adds (the dense layers come on top).
    let card_ma: usize = card
        .lines()
        .find_map(|l| l.strip_prefix("| multiply-adds per hop (10 ms) | "))
        .and_then(|v| v.trim_end_matches(" |").parse().ok())
        .unwrap_or_else(|| panic!("no multiply-adds in\n{card}"));
    assert!(card_ma > ma, "{card_ma} vs LSTM {ma}");
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
    let (ok, _) = hark_train([
        OsStr::new("merge"),
        run_dir.as_os_str(),
        "-o".as_ref(),
        &p("m1.onnx"),
    ]);
    assert!(!ok);
    let (ok, stderr) = hark_train([
        OsStr::new("merge"),
        run_dir.as_os_str(),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        &p("m2.onnx"),
    ]);
    assert!(!ok);
    assert!(stderr.contains("no checkpoint"), "{stderr}");

    // A folder that is not a run: exit status 1 and a message naming the problem.
    let (ok, stderr) = hark_train([
        OsStr::new("export"),
        tmp.path().as_os_str(),
        "-o".as_ref(),
        &p("x.onnx"),
    ]);
    assert!(!ok);
    assert!(stderr.contains("no checkpoint"), "{stderr}");
}
