//! `hark-train experiment --quick` through the binary: every technique end to end on tiny
//! generated data, the tables and the plot written, `--resume` skipping finished runs. This
//! is the CI run of the experiment (`cargo test --workspace` runs it).

use std::fs;
use std::process::Command;
use std::time::Instant;

#[test]
fn quick_experiment_runs_every_technique_and_resumes() {
    let bin = env!("CARGO_BIN_EXE_hark-train");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("exp");
    let t0 = Instant::now();
    let run = |resume: bool| {
        let mut cmd = Command::new(bin);
        cmd.args(["experiment", "--quick", "--threads", "2", "--out"])
            .arg(&out);
        if resume {
            cmd.arg("--resume");
        }
        let o = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{stderr}");
        stderr
    };
    let first = run(false);
    let secs = t0.elapsed().as_secs_f64();
    assert!(secs < 180.0, "the quick mode took {secs:.0} s");
    let md = fs::read_to_string(out.join("results.md")).unwrap();
    let csv = fs::read_to_string(out.join("results.csv")).unwrap();
    let svg = fs::read_to_string(out.join("results.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<rect"), "{svg}");
    for t in [
        "ce",
        "weighted_ce",
        "oversample",
        "undersample",
        "smote",
        "focal",
        "partial_augmentation",
        "label_smearing",
        "transfer",
        "centroid",
        "clustered_ensemble",
        "easy_ensemble",
    ] {
        for arch in ["lstm", "cnn"] {
            for ratio in ["6-1-2-16", "2-2-1-26"] {
                let line = format!("{arch},{ratio},{t},\"ok\",1,overall,");
                assert!(csv.contains(&line), "{line} missing:\n{csv}");
            }
        }
        assert!(md.contains(&format!("| {t} | ")), "{t} missing:\n{md}");
    }
    assert!(!csv.contains("not available"), "{csv}");
    assert!(
        md.contains("Centroid against the class-weighted baseline"),
        "{md}"
    );
    // Exact training ratios: 6:1:2:16 with 2 windows per unit.
    let r: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("runs/lstm/6-1-2-16/ce/seed-1.json")).unwrap())
            .unwrap();
    assert_eq!(r["train_windows"], serde_json::json!([32, 12, 2, 4]));
    let r: serde_json::Value = serde_json::from_slice(
        &fs::read(out.join("runs/lstm/2-2-1-26/oversample/seed-1.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(r["train_windows"], serde_json::json!([52, 52, 52, 52]));
    assert!(first.contains("48 to do"), "{first}");
    // Resumed: nothing to do, the same tables.
    let again = run(true);
    assert!(again.contains("0 to do"), "{again}");
    assert_eq!(fs::read_to_string(out.join("results.csv")).unwrap(), csv);
}
