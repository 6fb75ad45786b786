//! Event sinks with the real things: a mosquitto broker started here (and stopped and
//! restarted), read back with `mosquitto_sub`; an HTTP server on a `TcpListener`; real
//! programs as the command sink. Each sink must receive exactly the lines of standard output.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::alsa_file_pcm::alsa_file_pcm;
use common::{Enc, fixture, mixture, wav};

const HARK: &str = env!("CARGO_BIN_EXE_hark");

/// Three tone bursts in 6 s of faint noise, written as a WAV, plus the committed FLAC (one
/// tone): four events in two files.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let w = dir.join("bursts.wav");
    std::fs::write(
        &w,
        wav(
            16_000,
            1,
            Enc::I16,
            &mixture(&[(0.5, 0.4), (2.0, 0.6), (4.2, 0.3)], 6.0),
        ),
    )
    .unwrap();
    vec![fixture("formats/tone_burst.flac"), w]
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("hark.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn detect_cmd(config: &Path, files: &[PathBuf]) -> Command {
    let mut cmd = Command::new(HARK);
    cmd.args(["detect", "--model"])
        .arg(fixture("tone-detector.onnx"))
        .arg("--config")
        .arg(config)
        .args(files)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mosquitto broker on 127.0.0.1:`port` with persistence in `dir`, stopped (SIGTERM, so
/// that it saves its sessions) on drop. (`user root`: started as root, mosquitto would drop
/// to its own user, which cannot write the temporary folder; for any other user the line
/// does nothing.)
struct Broker {
    child: Child,
}

impl Broker {
    fn start(port: u16, dir: &Path) -> Broker {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nuser root\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (scripts/setup.sh installs it)");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mosquitto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { child }
    }

    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let start = Instant::now();
            while let Ok(None) = self.child.try_wait() {
                if start.elapsed() > Duration::from_secs(5) {
                    let _ = self.child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.terminate();
    }
}

const SUBSCRIBER: &str = "hark-test-subscriber";

/// Creates a persistent session subscribed to `topic` at QoS 1, then disconnects: the
/// broker keeps every event published meanwhile for [`drain_session`].
fn subscribe_session(port: u16, topic: &str) {
    let status = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args(["-q", "1", "-c", "-i", SUBSCRIBER, "-E"])
        .status()
        .unwrap();
    assert!(status.success(), "mosquitto_sub -E failed");
}

/// Everything the broker kept for the persistent session (waits `seconds` for more).
fn drain_session(port: u16, topic: &str, seconds: u32) -> Vec<String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args([
            "-q",
            "1",
            "-c",
            "-i",
            SUBSCRIBER,
            "-W",
            &seconds.to_string(),
        ])
        .output()
        .unwrap();
    lines(&out.stdout)
}

fn mqtt_config(port: u16, topic: &str, extra: &str) -> String {
    format!(
        "[sinks.mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}\ntopic = \"{topic}\"\nclient_id = \"hark-under-test\"\nqos = 1\n[reconnect]\ninitial_backoff = 0.2\nmax_backoff = 0.5\n{extra}"
    )
}

#[test]
fn mqtt_receives_exactly_the_stdout_events() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(port, dir.path());
    let topic = "hark/test/events";
    subscribe_session(port, topic);
    let config = write_config(dir.path(), &mqtt_config(port, topic, ""));
    let out = detect_cmd(&config, &inputs(dir.path())).output().unwrap();
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    let stdout = lines(&out.stdout);
    assert_eq!(stdout.len(), 4, "{stdout:?}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "sink mqtt://127.0.0.1:{port}/{topic}: 4 event(s) delivered"
        )),
        "{stderr}"
    );
    let received = drain_session(port, topic, 2);
    assert_eq!(received, stdout, "MQTT vs stdout\n{stderr}");
}

#[test]
fn mqtt_events_wait_for_a_broker_that_starts_late() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let topic = "hark/test/late";
    // The subscriber's session exists before hark runs; then the broker goes away.
    let broker = Broker::start(port, dir.path());
    subscribe_session(port, topic);
    broker.stop();
    let config = write_config(
        dir.path(),
        &mqtt_config(port, topic, "[sinks]\nflush_timeout = 30.0\n"),
    );
    let mut child = detect_cmd(&config, &inputs(dir.path())).spawn().unwrap();
    // hark has long finished the files (they take milliseconds) and is retrying.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "hark exited while its events were undelivered"
    );
    let _broker = Broker::start(port, dir.path());
    let out = child.wait_with_output().unwrap();
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot connect to 127.0.0.1"), "{stderr}");
    assert!(
        stderr.matches("retrying in").count() >= 2,
        "back-off retries expected\n{stderr}"
    );
    assert!(stderr.contains("4 event(s) delivered"), "{stderr}");
    assert!(!stderr.contains("LOST"), "{stderr}");
    let stdout = lines(&out.stdout);
    assert_eq!(stdout.len(), 4, "{stderr}");
    assert_eq!(drain_session(port, topic, 2), stdout, "{stderr}");
}

#[test]
fn a_full_queue_drops_loudly_and_every_lost_event_is_written_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there
    let config = write_config(
        dir.path(),
        &mqtt_config(port, "t", "[sinks]\nqueue = 1\nflush_timeout = 0.5\n"),
    );
    let out = detect_cmd(&config, &inputs(dir.path())).output().unwrap();
    let stderr = stderr_of(&out);
    // Events were lost on the way to a sink: the run is not a success.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let stdout = lines(&out.stdout);
    assert_eq!(stdout.len(), 4, "{stderr}");
    assert!(stderr.contains("EVENT DROPPED (queue full"), "{stderr}");
    assert!(stderr.contains("EVENT(S) LOST"), "{stderr}");
    // Each event appears on stderr exactly once, dropped or undelivered.
    let mut lost: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains("EVENT DROPPED") || l.contains("EVENT NOT DELIVERED"))
        .map(|l| l[l.find('{').unwrap()..].to_string())
        .collect();
    let mut expected = stdout.clone();
    lost.sort();
    expected.sort();
    assert_eq!(lost, expected, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn listen_publishes_its_events_over_mqtt() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::start(port, dir.path());
    let topic = "hark/test/live";
    subscribe_session(port, topic);
    let x = mixture(&[(1.0, 0.5), (3.5, 0.3)], 6.0);
    let asound = alsa_file_pcm(dir.path(), "in", &x);
    let config = write_config(
        dir.path(),
        &format!(
            "[audio]\nsample_rate = 16000\nchannels = 1\nperiod_frames = 160\nring_seconds = 30.0\n{}",
            mqtt_config(port, topic, "")
        ),
    );
    let out = Command::new(HARK)
        .args(["listen", "--config"])
        .arg(&config)
        .arg("--model")
        .arg(fixture("tone-detector.onnx"))
        .args(["--duration", "3"])
        .env("ALSA_CONFIG_PATH", &asound)
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    let stdout = lines(&out.stdout);
    assert_eq!(stdout.len(), 2, "{stdout:?}\n{stderr}");
    assert!(stdout.iter().all(|l| l.contains("\"time\":")), "{stdout:?}");
    assert_eq!(drain_session(port, topic, 2), stdout, "{stderr}");
}

/// One request as the test server saw it.
#[derive(Debug, Clone)]
struct Request {
    head: String,
    body: String,
}

/// Every request with the status it was answered.
type Seen = Arc<Mutex<Vec<(Request, u16)>>>;

/// An HTTP server answering the first `fail_first` requests with 503, the rest with 204.
fn http_server(fail_first: usize) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                    break;
                }
                head.push_str(&l);
            }
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).unwrap();
            let mut log = log.lock().unwrap();
            let code = if log.len() < fail_first { 503 } else { 204 };
            log.push((
                Request {
                    head,
                    body: String::from_utf8(body).unwrap(),
                },
                code,
            ));
            drop(log);
            let reason = if code == 503 {
                "Service Unavailable"
            } else {
                "No Content"
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, seen)
}

#[test]
fn the_webhook_gets_every_event_and_retries_after_an_http_error() {
    let dir = tempfile::tempdir().unwrap();
    let (port, seen) = http_server(2);
    let config = write_config(
        dir.path(),
        &format!(
            "[sinks.webhook]\nenabled = true\nurl = \"http://127.0.0.1:{port}/hook?site=test\"\ntimeout = 2.0\n[reconnect]\ninitial_backoff = 0.1\nmax_backoff = 0.2\n"
        ),
    );
    let out = detect_cmd(&config, &inputs(dir.path())).output().unwrap();
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    let stdout = lines(&out.stdout);
    assert_eq!(stdout.len(), 4, "{stderr}");
    assert_eq!(
        stderr.matches("503 Service Unavailable").count(),
        2,
        "{stderr}"
    );
    let seen = seen.lock().unwrap().clone();
    // The first event was refused twice, then accepted: 6 requests, 4 accepted, in order.
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(seen[..3].iter().all(|(r, _)| r.body == stdout[0]));
    let accepted: Vec<String> = seen
        .iter()
        .filter(|(_, c)| *c == 204)
        .map(|(r, _)| r.body.clone())
        .collect();
    assert_eq!(accepted, stdout);
    for (r, _) in &seen {
        assert!(
            r.head.starts_with("POST /hook?site=test HTTP/1.1\r\n"),
            "{}",
            r.head
        );
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            r.head
        );
        assert!(r.head.contains(&format!("Host: 127.0.0.1:{port}")));
    }
}

#[test]
fn the_command_gets_each_event_on_its_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.log");
    let config = write_config(
        dir.path(),
        &format!(
            "[sinks.command]\nenabled = true\nprogram = \"tee\"\nargs = [\"-a\", \"{}\"]\n",
            log.display()
        ),
    );
    let out = detect_cmd(&config, &inputs(dir.path())).output().unwrap();
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    // tee's own standard output is not hark's: only hark's events are there.
    let stdout = lines(&out.stdout);
    assert_eq!(stdout.len(), 4, "{stderr}");
    assert_eq!(lines(&std::fs::read(&log).unwrap()), stdout);
}

#[test]
fn a_slow_command_never_holds_up_detection() {
    let dir = tempfile::tempdir().unwrap();
    // Each event takes the command a second: four events, four seconds of sink work.
    let config = write_config(
        dir.path(),
        "[sinks.command]\nenabled = true\nprogram = \"sleep\"\nargs = [\"1\"]\n",
    );
    let started = Instant::now();
    let mut child = detect_cmd(&config, &inputs(dir.path())).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut arrivals = Vec::new();
    for line in BufReader::new(stdout).lines() {
        arrivals.push((started.elapsed(), line.unwrap()));
    }
    let out = child.wait_with_output().unwrap();
    let total = started.elapsed();
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(arrivals.len(), 4, "{stderr}");
    assert!(total >= Duration::from_secs(4), "{total:?}: {stderr}");
    // stdout got every event long before the command had run for them all.
    let last = arrivals.last().unwrap().0;
    assert!(
        last + Duration::from_millis(2500) < total,
        "last event printed at {last:?}, run took {total:?}"
    );
}

#[test]
fn a_failing_or_hanging_command_is_reported_retried_and_its_events_kept() {
    let dir = tempfile::tempdir().unwrap();
    for (program, args, why) in [
        ("false", "[]", "failed: exit status: 1"),
        (
            "sleep",
            "[\"5\"]",
            "did not finish within 0.2 s and was killed",
        ),
        ("/nonexistent/hark-hook", "[]", "cannot start"),
    ] {
        let config = write_config(
            dir.path(),
            &format!(
                "[sinks]\nflush_timeout = 1.0\n[sinks.command]\nenabled = true\nprogram = \"{program}\"\nargs = {args}\ntimeout = 0.2\n[reconnect]\ninitial_backoff = 0.1\nmax_backoff = 0.2\n"
            ),
        );
        let started = Instant::now();
        let out = detect_cmd(&config, &inputs(dir.path())).output().unwrap();
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{program}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(10), "{program}");
        assert!(stderr.contains(why), "{program}: {stderr}");
        assert!(stderr.matches("retrying in").count() >= 2, "{stderr}");
        let stdout = lines(&out.stdout);
        assert_eq!(stdout.len(), 4, "{stderr}");
        for e in &stdout {
            assert!(
                stderr.contains(&format!("EVENT NOT DELIVERED: {e}")),
                "{program}: {e} missing from\n{stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn without_sinks_nothing_changes_and_stdout_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("only.log");
    let config = write_config(
        dir.path(),
        &format!(
            "[sinks]\nstdout = false\n[sinks.command]\nenabled = true\nprogram = \"tee\"\nargs = [\"-a\", \"{}\"]\n",
            log.display()
        ),
    );
    let out = detect_cmd(&config, &inputs(dir.path())).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty());
    assert_eq!(lines(&std::fs::read(&log).unwrap()).len(), 4);
}
