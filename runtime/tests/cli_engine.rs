//! `--engine` on the command line: `hark info` and `hark bench` say which engine steps the
//! model, and `--engine tract` / `native` choose it.

mod common;

use std::process::Command;

const HARK: &str = env!("CARGO_BIN_EXE_hark");

fn hark(args: &[&str]) -> (String, String, i32) {
    let out = Command::new(HARK).args(args).output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn info_reports_the_engine_chosen() {
    let model = common::fixture("tone-detector.onnx");
    let model = model.to_str().unwrap();
    for (flag, want) in [
        (None, "native"),
        (Some("native"), "native"),
        (Some("tract"), "tract"),
    ] {
        let mut args = vec!["info", model];
        if let Some(f) = flag {
            args.extend(["--engine", f]);
        }
        let (out, err, code) = hark(&args);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(&format!("engine:     {want}\n")),
            "{flag:?}: {out}"
        );
        // The native plan translated and matched tract, whichever engine is in use.
        assert!(out.contains("matches tract on the load probe"), "{out}");
        args.push("--json");
        let (out, err, code) = hark(&args);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["engine"], want, "{out}");
        assert!(v["native_problem"].is_null(), "{out}");
    }
    let (_, err, code) = hark(&["info", model, "--engine", "onnxruntime"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("auto") && err.contains("native") && err.contains("tract"),
        "{err}"
    );
}

#[test]
fn bench_reports_the_engine() {
    let model = common::fixture("tone-detector.onnx");
    let model = model.to_str().unwrap();
    for engine in ["native", "tract"] {
        let (out, err, code) = hark(&[
            "bench",
            "--model",
            model,
            "--seconds",
            "2",
            "--engine",
            engine,
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["engine"], engine, "{out}");
        let allocs = v["allocations_per_hop"].as_f64().unwrap();
        match engine {
            "native" => assert_eq!(allocs, 0.0, "{out}"),
            _ => assert!(allocs > 1.0, "{out}"),
        }
        let (out, err, code) = hark(&[
            "bench",
            "--model",
            model,
            "--seconds",
            "2",
            "--engine",
            engine,
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("engine         {engine}")), "{out}");
    }
}
