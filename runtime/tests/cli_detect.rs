//! `hark detect` as a user runs it: the real binary, a real model file (the committed
//! hand-built tone detector, whose right answers are known), generated recordings.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Enc, fixture, mixture, mixture_stereo, wav};
use hark::pipeline::EventRecord;

const HARK: &str = env!("CARGO_BIN_EXE_hark");

fn detect(args: &[&str], stdin: Option<&[u8]>) -> (Vec<EventRecord>, String, i32) {
    let mut cmd = Command::new(HARK);
    cmd.arg("detect")
        .arg("--model")
        .arg(fixture("tone-detector.onnx"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let events = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not an event line: {l:?}: {e}"))
        })
        .collect();
    (
        events,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap(),
    )
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

const BURSTS: [(f32, f32); 3] = [(3.3, 0.5), (12.05, 1.2), (25.7, 0.3)];

#[test]
fn events_are_found_at_the_right_times_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "mix.wav",
        &wav(44_100, 2, Enc::I16, &mixture_stereo(&BURSTS, 30.0)),
    );
    let (events, stderr, code) = detect(&[&f], None);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(events.len(), 3, "{events:?}");
    for (e, (on, len)) in events.iter().zip(BURSTS) {
        assert_eq!(e.file.as_deref(), Some(f.as_str()));
        assert_eq!(e.class, "tone");
        assert!(
            (e.onset - on as f64).abs() < 0.1,
            "onset {} for {on}",
            e.onset
        );
        assert!(
            (e.offset - (on + len) as f64).abs() < 0.15,
            "offset {} for {}",
            e.offset,
            on + len
        );
        assert!(e.confidence > 0.9);
    }
    assert!(stderr.contains("30.00 s of audio, 3 event(s)"), "{stderr}");
}

#[test]
fn the_json_fields_are_those_of_the_contract_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "one.wav",
        &wav(16_000, 1, Enc::I16, &mixture(&[(1.0, 0.5)], 3.0)),
    );
    let out = Command::new(HARK)
        .args(["detect", "--model"])
        .arg(fixture("tone-detector.onnx"))
        .arg(&f)
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    let keys: Vec<&str> = line
        .trim()
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(|kv| kv.split(':').next().unwrap().trim_matches('"'))
        .collect();
    assert_eq!(
        keys,
        ["file", "class", "onset", "offset", "confidence"],
        "{line}"
    );
}

#[test]
fn raw_pcm_on_stdin_gives_the_same_events_as_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let x = mixture_stereo(&BURSTS, 30.0);
    let f = write(&dir, "mix.wav", &wav(44_100, 2, Enc::I16, &x));
    let (from_file, _, _) = detect(&[&f], None);
    let raw: Vec<u8> = x
        .iter()
        .flat_map(|&s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
        .collect();
    let (from_stdin, stderr, code) = detect(
        &[
            "--raw-format",
            "s16le",
            "--rate",
            "44100",
            "--channels",
            "2",
            "-",
        ],
        Some(&raw),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(from_stdin.len(), from_file.len());
    for (a, b) in from_stdin.iter().zip(&from_file) {
        assert_eq!(a.file.as_deref(), Some("-"));
        assert!(
            (a.onset - b.onset).abs() < 0.011 && (a.offset - b.offset).abs() < 0.011,
            "{a:?} {b:?}"
        );
    }
}

#[test]
fn a_bad_file_among_good_ones_is_reported_and_the_rest_processed() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        &dir,
        "good.wav",
        &wav(16_000, 1, Enc::I16, &mixture(&[(1.0, 0.5)], 3.0)),
    );
    let bad = write(&dir, "bad.wav", b"not a sound");
    let (events, stderr, code) = detect(&[&bad, &good], None);
    assert_eq!(code, 1);
    assert_eq!(events.len(), 1);
    assert!(
        stderr.contains("bad.wav") && stderr.contains("not audio"),
        "{stderr}"
    );
}

#[test]
fn a_truncated_file_still_reports_the_events_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = wav(
        16_000,
        1,
        Enc::I16,
        &mixture(&[(1.0, 0.5), (8.0, 0.5)], 10.0),
    );
    let cut = write(&dir, "cut.wav", &bytes[..44 + 2 * 16_000 * 5]);
    let (events, stderr, code) = detect(&[&cut], None);
    assert_eq!(code, 1);
    assert_eq!(events.len(), 1, "the first event, before the cut");
    assert!(stderr.contains("truncated"), "{stderr}");
}

#[test]
fn an_event_still_open_at_the_end_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "end.wav",
        &wav(16_000, 1, Enc::I16, &mixture(&[(2.0, 5.0)], 3.0)),
    );
    let (events, _, code) = detect(&[&f], None);
    assert_eq!(code, 0);
    assert_eq!(events.len(), 1);
    assert!((events[0].onset - 2.0).abs() < 0.1 && events[0].offset > 2.9);
}

#[test]
fn nan_samples_do_not_break_detection() {
    let dir = tempfile::tempdir().unwrap();
    let mut x = mixture_stereo(&[(1.0, 0.5)], 3.0);
    for i in (0..x.len()).step_by(777) {
        x[i] = f32::NAN;
    }
    let f = write(&dir, "nan.wav", &wav(44_100, 2, Enc::F32, &x));
    let (events, stderr, code) = detect(&[&f], None);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(events.len(), 1);
    assert!(stderr.contains("NaN/inf samples replaced"), "{stderr}");
}

#[test]
fn silence_gives_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "silence.wav",
        &wav(16_000, 1, Enc::I16, &vec![0.0; 16_000 * 5]),
    );
    let (events, _, code) = detect(&[&f], None);
    assert_eq!((events.len(), code), (0, 0));
}

#[test]
fn thresholds_can_be_overridden_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "mix.wav",
        &wav(16_000, 1, Enc::I16, &mixture(&[(1.0, 0.5)], 3.0)),
    );
    // The tone's smoothed score peaks near 1.0: a threshold above it finds nothing.
    let (events, _, code) = detect(&["--threshold", "tone=0.99999", &f], None);
    assert_eq!((events.len(), code), (0, 0));
    let (_, stderr, code) = detect(&["--threshold", "siren=0.5", &f], None);
    assert_eq!(code, 2);
    assert!(stderr.contains("siren"), "{stderr}");
    let (_, stderr, code) = detect(&["--threshold", "tone=high", &f], None);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a number"), "{stderr}");
}

#[test]
fn a_bad_model_or_config_is_exit_code_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "a.wav", &wav(16_000, 1, Enc::I16, &[0.0; 16_000]));
    let model = write(&dir, "model.onnx", b"garbage");
    let out = Command::new(HARK)
        .args(["detect", "--model", &model, &f])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an ONNX model"));
    let cfg = write(&dir, "c.toml", b"[postprocess]\nsmoothin = 0.1\n");
    let (_, stderr, code) = detect(&["--config", &cfg, &f], None);
    assert_eq!(code, 2);
    assert!(stderr.contains("smoothin"), "{stderr}");
}

#[test]
fn the_table_format_is_for_people() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "mix.wav",
        &wav(16_000, 1, Enc::I16, &mixture(&[(1.0, 0.5)], 3.0)),
    );
    let out = Command::new(HARK)
        .args(["detect", "--format", "table", "--model"])
        .arg(fixture("tone-detector.onnx"))
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("onset") && lines[1].contains("tone"));
}

#[test]
fn bench_reports_latency_real_time_factor_memory_and_allocations() {
    let out = Command::new(HARK)
        .args(["bench", "--seconds", "3", "--json", "--model"])
        .arg(fixture("tone-detector.onnx"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hops"], 300);
    let h = &v["hop_us"];
    let (p50, p90, p99, max) = (
        h["p50"].as_f64().unwrap(),
        h["p90"].as_f64().unwrap(),
        h["p99"].as_f64().unwrap(),
        h["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max, "{h}");
    assert!(v["real_time_factor"].as_f64().unwrap() > 0.0);
    assert!(v["allocations_per_hop"].as_f64().unwrap() >= 0.0);
    assert!(v["peak_rss_mb"].as_f64().unwrap() > 1.0);
    // The generated audio has a 1 kHz tone for one second in seven: the detector finds it.
    assert!(v["events"].as_u64().unwrap() >= 1, "{v}");
}

#[test]
fn verbose_shows_each_hops_own_scores_every_n_hops() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "mix.wav",
        &wav(16_000, 1, Enc::I16, &mixture(&BURSTS, 30.0)),
    );
    let (events, stderr, code) = detect(&[&f, "-v", "--verbose-every", "10"], None);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(events.len(), 3);
    // "   12.30s  -20.1 dBFS  tone=0.98 ##########"
    let lines: Vec<(f64, f64)> = stderr
        .lines()
        .filter(|l| l.contains("dBFS"))
        .map(|l| {
            let mut w = l.split_whitespace();
            let t = w.next().unwrap().trim_end_matches('s').parse().unwrap();
            let score = l.split("tone=").nth(1).unwrap()[..4].parse().unwrap();
            (t, score)
        })
        .collect();
    assert!((295..=300).contains(&lines.len()), "{} lines", lines.len());
    for pair in lines.windows(2) {
        assert!(
            (pair[1].0 - pair[0].0 - 0.1).abs() < 1e-6,
            "lines not 0.1 s apart: {pair:?}"
        );
    }
    // The score follows the bursts: high inside, low well outside.
    for &(on, len) in BURSTS.iter().filter(|b| b.1 >= 0.5) {
        let inside = lines
            .iter()
            .filter(|&&(t, _)| t > (on + 0.2) as f64 && t < (on + len - 0.05) as f64);
        assert!(inside.clone().count() > 0);
        assert!(
            inside.clone().all(|&(_, s)| s > 0.5),
            "burst at {on}: {lines:?}"
        );
    }
    let quiet = lines.iter().filter(|&&(t, _)| (6.0..11.0).contains(&t));
    assert!(quiet.clone().all(|&(_, s)| s < 0.5));
}
