//! The whole chain with a trained model: the trainer learns the tiny synthetic task (tones,
//! chirps, noise bursts over coloured noise), exports ONNX, and the `hark` binary finds one
//! event, of the right class and at the right time, in a 30-second mixture it has never
//! seen, through `hark detect` on a WAV file and through `hark listen` reading the same
//! samples from a capture device (ALSA's `file` PCM, through cpal).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[path = "../runtime/tests/common/alsa_file_pcm.rs"]
mod alsa_file_pcm;

use alsa_file_pcm::alsa_file_pcm;
use hark::pipeline::EventRecord;
use hark_e2e::hark_binary;
use hark_trainer::data::write_wav;
use hark_trainer::examples::{Rng, lowpass, mix_at_ebr, synthetic_clips};
use hark_trainer::train::{Method, RunOptions, TrainConfig, run, tiny_config};

const RATE: usize = 16_000;

/// The tiny synthetic configuration, made reliable enough for a 30-second stream: more
/// epochs, three times as many background windows as event windows, and 24 background clips
/// of 3 s instead of 8 of 1 s (with the tiny configuration's few short backgrounds the model
/// fires on stretches of plain background).
fn config() -> TrainConfig {
    let mut cfg = tiny_config(Method::Centroid);
    cfg.epochs = 20;
    cfg.classifier_epochs = 10;
    cfg.examples.background_ratio = 3.0;
    cfg.examples.negative_prob = 0.3;
    let synth = cfg.data.synthetic.as_mut().expect("synthetic data");
    synth.backgrounds = 24;
    synth.background_seconds = 3.0;
    cfg
}

/// Trains into `dir`; returns the exported model's path.
fn train(dir: &Path) -> PathBuf {
    let cfg = config();
    let t0 = Instant::now();
    let opts = RunOptions {
        out_dir: Some(dir.to_path_buf()),
        base_dir: dir.to_path_buf(),
        ..RunOptions::default()
    };
    let out = run(&cfg, &opts, &mut |_| {}).expect("training the tiny model");
    eprintln!(
        "trained in {:.1} s, validation balanced accuracy {:.3}",
        t0.elapsed().as_secs_f64(),
        out.val_metrics.balanced_accuracy
    );
    dir.join("model.onnx")
}

/// 30 s of background like the training's (low-passed noise and a faint hum, from a seed
/// never used in training) with one event of `class` (a clip of synthetic data of another
/// seed than the training's) mixed in at `onset` seconds, 9 dB above the background around
/// it.
fn mixture(class: &str, onset: f32) -> Vec<f32> {
    let mut rng = Rng::new(20_261_123);
    let n = 30 * RATE;
    let white: Vec<f32> = (0..n).map(|_| rng.normal() * 0.1).collect();
    let tau = 2.0 * std::f32::consts::PI;
    let mut x: Vec<f32> = lowpass(&white, 900.0)
        .iter()
        .enumerate()
        .map(|(i, v)| v + 0.01 * (tau * 80.0 * i as f32 / RATE as f32).sin())
        .collect();
    let synth = config().data.synthetic.expect("synthetic data");
    let clips = synthetic_clips(&synth, 777);
    let event = clips
        .iter()
        .find(|c| c.class == class)
        .unwrap_or_else(|| panic!("no synthetic {class} clip"));
    let at = (onset * RATE as f32) as usize;
    let end = at + event.samples.len();
    mix_at_ebr(&mut x[at..end], &event.samples, 0, 9.0);
    x
}

fn events(stdout: &[u8]) -> Vec<EventRecord> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// Post-processing for this model: scores smoothed over 0.1 s and events shorter than
/// 0.15 s dropped (the tiny model's scores flicker between classes for a few hops as an
/// event ends; the synthetic tones and chirps last 0.25 s or more).
const POSTPROCESS: &str = "[postprocess]\nsmoothing = 0.1\nmin_length = 0.15\n";

/// Exactly one event, of `class`, starting within 0.5 s of `onset`.
fn assert_one_event(events: &[EventRecord], class: &str, onset: f64, how: &str) {
    assert_eq!(
        events.len(),
        1,
        "{how}: expected one {class} event at {onset} s, got {events:?}"
    );
    let e = &events[0];
    assert_eq!(e.class, class, "{how}: {e:?}");
    assert!(
        (e.onset - onset).abs() < 0.5,
        "{how}: onset {} for an event at {onset} s",
        e.onset
    );
}

#[test]
fn a_trained_model_finds_its_event_in_30_seconds_through_detect_and_capture() {
    let dir = tempfile::tempdir().unwrap();
    let model = train(dir.path());
    let pp = dir.path().join("postprocess.toml");
    std::fs::write(&pp, POSTPROCESS).unwrap();
    for (class, onset) in [("tone", 11.7f32), ("chirp", 21.4)] {
        let x = mixture(class, onset);
        let wav = dir.path().join(format!("{class}.wav"));
        write_wav(&wav, &x, RATE as u32).unwrap();
        let out = Command::new(hark_binary())
            .args(["detect", "--model"])
            .arg(&model)
            .arg("--config")
            .arg(&pp)
            .arg(&wav)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let offline = events(&out.stdout);
        assert_one_event(&offline, class, onset as f64, "hark detect");

        // The same samples through cpal: ALSA's file PCM reads them as a capture device
        // (bit-exact, unpaced; digital silence follows the end of the file).
        let asound = alsa_file_pcm(dir.path(), class, &x);
        let live_cfg = dir.path().join("live.toml");
        std::fs::write(
            &live_cfg,
            format!(
                "[audio]\nsample_rate = 16000\nchannels = 1\nperiod_frames = 160\nring_seconds = 60.0\n{POSTPROCESS}"
            ),
        )
        .unwrap();
        let out = Command::new(hark_binary())
            .args(["listen", "--config"])
            .arg(&live_cfg)
            .arg("--model")
            .arg(&model)
            .args(["--duration", "6"])
            .env("ALSA_CONFIG_PATH", &asound)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("0 samples dropped"), "{stderr}");
        // Only the 30 s of the mixture are under test: the digital silence that the file PCM
        // delivers after them is far from anything the tiny model was trained on, and it
        // does fire on it (a tone event from about 30.4 s).
        let live: Vec<EventRecord> = events(&out.stdout)
            .into_iter()
            .filter(|e| e.onset < 30.0)
            .collect();
        assert_one_event(&live, class, onset as f64, "hark listen");
        assert!(live[0].time.is_some(), "{live:?}");
        assert!(
            (live[0].onset - offline[0].onset).abs() <= 0.0101,
            "listen {:?} vs detect {:?}",
            live[0],
            offline[0]
        );
    }
}
