//! `hark listen` through the real capture path: cpal reading ALSA's `file` PCM (bit-exact,
//! unpaced) and a PulseAudio null sink's monitor (a real sound server, started here, paced,
//! with a WAV played into it by paplay). Events equal those of `hark detect` on the same
//! audio, and arrive within a second of their onset.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::alsa_file_pcm::alsa_file_pcm;
use common::{Enc, fixture, mixture, wav};
use hark::pipeline::EventRecord;

const HARK: &str = env!("CARGO_BIN_EXE_hark");

fn detect_events(wav_path: &Path) -> Vec<EventRecord> {
    let out = Command::new(HARK)
        .args(["detect", "--model"])
        .arg(fixture("tone-detector.onnx"))
        .arg(wav_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `hark listen`; returns each stdout line with the instant it arrived, and stderr.
fn spawn_listen(
    config: &Path,
    duration: f64,
    env: &[(&str, &str)],
) -> (Child, mpsc::Receiver<(Instant, String)>) {
    let mut cmd = Command::new(HARK);
    cmd.args(["listen", "--config"])
        .arg(config)
        .arg("--model")
        .arg(fixture("tone-detector.onnx"))
        .args(["--duration", &duration.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn parse(lines: &[(Instant, String)]) -> Vec<(Instant, EventRecord)> {
    lines
        .iter()
        .map(|(t, l)| {
            (
                *t,
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")),
            )
        })
        .collect()
}

#[test]
fn alsa_file_pcm_capture_gives_the_events_of_detect() {
    let dir = tempfile::tempdir().unwrap();
    let x = mixture(&[(1.0, 0.5), (3.5, 0.3)], 6.0);
    let wav_path = dir.path().join("same.wav");
    std::fs::write(&wav_path, wav(16_000, 1, Enc::F32, &x)).unwrap();
    let asound = alsa_file_pcm(dir.path(), "in", &x);
    let config = dir.path().join("file-pcm.toml");
    std::fs::write(
        &config,
        "[audio]\nsample_rate = 16000\nchannels = 1\nperiod_frames = 160\nring_seconds = 30.0\n",
    )
    .unwrap();
    let (child, rx) = spawn_listen(
        &config,
        3.0,
        &[("ALSA_CONFIG_PATH", asound.to_str().unwrap())],
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("0 samples dropped"), "{stderr}");
    let live = parse(&rx.try_iter().collect::<Vec<_>>());
    let offline = detect_events(&wav_path);
    assert_eq!(offline.len(), 2);
    // The file PCM is not paced: after the file come zeros, so no further events.
    assert_eq!(live.len(), 2, "{live:?}\n{stderr}");
    for ((_, l), o) in live.iter().zip(&offline) {
        assert_eq!(l.class, o.class);
        assert!(
            l.time
                .as_deref()
                .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
            "{l:?}"
        );
        assert!(l.file.is_none());
        assert!(
            (l.onset - o.onset).abs() <= 0.0101,
            "live {l:?} vs detect {o:?}"
        );
        assert!(
            (l.offset - o.offset).abs() <= 0.0101,
            "live {l:?} vs detect {o:?}"
        );
    }
}

/// A private PulseAudio server with a null sink, stopped on drop.
struct Pulse {
    child: Child,
    server: String,
    _dir: tempfile::TempDir,
}

impl Pulse {
    fn start() -> Pulse {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("native");
        let child = Command::new("pulseaudio")
            .args([
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--disallow-exit",
                "--log-target=stderr",
            ])
            .arg(format!(
                "--load=module-native-protocol-unix socket={} auth-anonymous=1",
                socket.display()
            ))
            .arg("--load=module-null-sink sink_name=hark_test rate=48000")
            .env("XDG_RUNTIME_DIR", dir.path())
            .env("HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pulseaudio must be installed (scripts/setup.sh installs it)");
        let server = format!("unix:{}", socket.display());
        let start = Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "pulseaudio did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let p = Pulse {
            child,
            server,
            _dir: dir,
        };
        for args in [
            ["set-default-sink", "hark_test"],
            ["set-default-source", "hark_test.monitor"],
        ] {
            let ok = Command::new("pactl")
                .args(args)
                .env("PULSE_SERVER", &p.server)
                .status()
                .unwrap();
            assert!(ok.success(), "pactl {args:?}");
        }
        p
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pulseaudio_null_sink_capture_reports_events_within_a_second() {
    let pulse = Pulse::start();
    let dir = tempfile::tempdir().unwrap();
    let bursts = [(1.0f32, 0.4f32), (3.0, 0.4)];
    let x = mixture(&bursts, 5.0);
    let wav_path = dir.path().join("play.wav");
    std::fs::write(&wav_path, wav(16_000, 1, Enc::I16, &x)).unwrap();
    let config = dir.path().join("pulse.toml");
    std::fs::write(
        &config,
        "[audio]\nsample_rate = 48000\nchannels = 2\nperiod_frames = 480\n",
    )
    .unwrap();
    let env = [("PULSE_SERVER", pulse.server.as_str())];
    let (mut child, rx) = spawn_listen(&config, 9.0, &env);
    // Give the stream a moment to start, then play.
    std::thread::sleep(Duration::from_millis(1500));
    let played = Instant::now();
    let status = Command::new("paplay")
        .arg(&wav_path)
        .env("PULSE_SERVER", &pulse.server)
        .status()
        .unwrap();
    assert!(status.success(), "paplay failed");
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let live = parse(&rx.try_iter().collect::<Vec<_>>());
    assert_eq!(live.len(), 2, "{live:?}\n{stderr}");
    let offline = detect_events(&wav_path);
    assert_eq!(offline.len(), 2);
    // The stream started before playback: the absolute offset is unknown, the spacing is not.
    let live_gap = live[1].1.onset - live[0].1.onset;
    let offline_gap = offline[1].onset - offline[0].onset;
    assert!(
        (live_gap - offline_gap).abs() <= 0.0201,
        "gap {live_gap} live vs {offline_gap} offline"
    );
    for ((arrived, e), (on, _)) in live.iter().zip(bursts) {
        // Reported (printed) within one second of the burst's onset in the played audio.
        let onset_wall = played + Duration::from_secs_f32(on);
        let late = arrived.saturating_duration_since(onset_wall);
        assert!(
            late < Duration::from_secs(1),
            "{e:?} printed {late:?} after its onset"
        );
    }
}

#[test]
fn a_sound_server_that_disappears_is_reported_and_retried_without_a_panic() {
    let mut pulse = Pulse::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pulse.toml");
    std::fs::write(
        &config,
        "[audio]\nsample_rate = 48000\nchannels = 1\nperiod_frames = 480\n[reconnect]\ninitial_backoff = 0.2\nmax_backoff = 0.4\n",
    )
    .unwrap();
    let server = pulse.server.clone();
    let (child, _rx) = spawn_listen(&config, 4.0, &[("PULSE_SERVER", server.as_str())]);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = pulse.child.kill();
    let _ = pulse.child.wait();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("listening on"), "{stderr}");
    // The loss is named and reconnection is attempted, more than once, with backoff.
    assert!(
        stderr.matches("retrying in").count() + stderr.matches("reconnecting in").count() >= 2,
        "{stderr}"
    );
    assert!(stderr.contains("stopped"), "{stderr}");
}
