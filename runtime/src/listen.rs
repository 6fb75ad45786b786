//! `hark listen`: live detection from an input device, as a long-running service.
//!
//! The capture callback fills a ring buffer; this thread pops it every 10 ms, runs the
//! detector and writes each event as a JSON line with the wall-clock `time` of its onset. A
//! device that is missing or disappears is retried with exponential backoff; events still
//! open when the stream stops (device lost, SIGINT, SIGTERM, --duration) are reported. The
//! profile's sinks (MQTT, webhook, command) get the same lines through their own threads
//! ([`hark::sinks`]); this thread never waits on them.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use hark::capture::{Capture, CaptureConfig, input_device_names};
use hark::config::Config;
use hark::pipeline::{Detector, EventRecord};
use hark::postprocess::Event;
use hark::sinks::Sinks;

#[derive(Args, Debug)]
pub struct ListenArgs {
    /// Profile (TOML), e.g. firmware-config/desktop.toml. Default: built-in defaults.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Model file (ONNX); overrides the profile's. Default: the shipped model.
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Engine that steps the model: auto, native, tract; overrides the profile's
    /// runtime.engine (default auto).
    #[arg(long, value_enum)]
    pub engine: Option<hark::model::EngineChoice>,
    /// Input device (name, part of a name, or id); overrides the profile's.
    #[arg(long, short)]
    pub device: Option<String>,
    /// List the input devices and exit.
    #[arg(long)]
    pub list_devices: bool,
    /// Stop after this many seconds (default: run until SIGINT or SIGTERM).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Print every class's smoothed score and the sound level on stderr, every 100 ms.
    #[arg(long, short)]
    pub verbose: bool,
}

/// RFC 3339 UTC time with milliseconds, e.g. `2026-11-23T15:04:05.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

pub fn run(args: &ListenArgs) -> Result<bool> {
    if args.list_devices {
        for name in input_device_names() {
            println!("{name}");
        }
        return Ok(true);
    }
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let model_path = args
        .model
        .clone()
        .or_else(|| cfg.runtime.model_path().map(PathBuf::from));
    let model = crate::detect::load_model(
        model_path.as_deref(),
        args.engine.unwrap_or(cfg.runtime.engine),
    )?;
    let mut detector =
        Detector::new(&model, &cfg.postprocess).context("configuring the detector")?;
    let capture_cfg = CaptureConfig {
        device: args
            .device
            .clone()
            .or_else(|| (!cfg.audio.device.is_empty()).then(|| cfg.audio.device.clone())),
        sample_rate: (cfg.audio.sample_rate > 0).then_some(cfg.audio.sample_rate),
        channels: (cfg.audio.channels > 0).then_some(cfg.audio.channels),
        buffer_frames: (cfg.audio.period_frames > 0).then_some(cfg.audio.period_frames),
        ring_seconds: cfg.audio.ring_seconds as f32,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the signal handler")?;
    }
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0)));
    let done = || stop.load(Ordering::SeqCst) || deadline.is_some_and(|d| Instant::now() >= d);
    let verbose = args.verbose || cfg.runtime.verbose;
    let mut sinks = crate::detect::start_sinks(&cfg)?;
    let mut out = std::io::stdout().lock();
    let mut backoff = cfg.reconnect.initial_backoff;
    let mut chunk: Vec<f32> = Vec::with_capacity(16_000);
    let mut events_total = 0u64;
    while !done() {
        let mut capture = match Capture::start(&capture_cfg) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("hark: {e}; retrying in {backoff:.1} s");
                sleep_unless(backoff, &done);
                backoff = (backoff * 2.0).min(cfg.reconnect.max_backoff);
                continue;
            }
        };
        backoff = cfg.reconnect.initial_backoff;
        let (rate, channels) = capture.format();
        eprintln!(
            "hark: listening on {:?} ({rate} Hz, {channels} channel(s)) with {} ({} engine)",
            capture.device(),
            model.name(),
            model.engine()
        );
        // The stream's time origin: onsets count from here.
        let origin = SystemTime::now();
        detector.reset();
        // Standard output and the sinks get the same line; a sink only queues it.
        let emit = |e: &Event, class: &str, out: &mut std::io::StdoutLock, sinks: &mut Sinks| {
            let mut rec = EventRecord::for_file("", e, class);
            rec.file = None;
            rec.time = Some(rfc3339(origin + Duration::from_secs_f64(e.onset.max(0.0))));
            let line = serde_json::to_string(&rec).expect("serialisable");
            if cfg.sinks.stdout {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            sinks.send(&line);
        };
        let mut next_verbose = 10u64;
        let failure = loop {
            if done() {
                break None;
            }
            chunk.clear();
            if let Err(e) = capture.read(&mut chunk) {
                break Some(e.to_string());
            }
            if !chunk.is_empty() {
                let r = detector.push(&chunk, |e, c| {
                    events_total += 1;
                    emit(e, c, &mut out, &mut sinks)
                });
                if let Err(e) = r {
                    break Some(e.to_string());
                }
                if verbose {
                    // One line per 10 hops at most, with the latest hop's scores.
                    if detector.frontend().frames_out() >= next_verbose {
                        next_verbose = detector.frontend().frames_out() + 10;
                        crate::detect::verbose_line(&detector);
                    }
                }
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // Never lose an event: whatever is open when the stream ends is reported.
        detector.finish(|e, c| {
            events_total += 1;
            emit(e, c, &mut out, &mut sinks)
        });
        eprintln!(
            "hark: stream of {:?} ended after {:.1} s ({} samples dropped, {} NaN/inf replaced)",
            capture.device(),
            capture.frames() as f64 / rate as f64,
            capture.dropped_samples(),
            capture.nonfinite_samples() + detector.frontend().nonfinite_samples()
        );
        if let Some(why) = failure {
            eprintln!("hark: {why}; reconnecting in {backoff:.1} s");
            drop(capture);
            sleep_unless(backoff, &done);
            backoff = (backoff * 2.0).min(cfg.reconnect.max_backoff);
        }
    }
    eprintln!("hark: stopped, {events_total} event(s)");
    // Every event detected reaches its sinks (or is written to stderr and counted).
    Ok(crate::detect::close_sinks(sinks))
}

fn sleep_unless(seconds: f64, done: &dyn Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < until && !done() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_446_245_123);
        assert_eq!(rfc3339(t), "2026-11-23T15:04:05.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
