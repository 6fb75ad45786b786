//! `hark bench`: the whole per-hop pipeline (frontend, model step, post-processing) over a
//! stretch of generated audio, hop by hop: latency percentiles, real-time factor, peak
//! memory and heap allocations per hop.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use hark::pipeline::Detector;
use hark::postprocess::PostprocessConfig;

use crate::alloc_count;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model file (ONNX). Default: the shipped model.
    #[arg(long, short)]
    pub model: Option<std::path::PathBuf>,
    /// Seconds of audio to run (generated: noise, tones and bursts).
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Engine that steps the model: auto (native if it can run the model, else tract),
    /// native, tract.
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: hark::model::EngineChoice,
}

/// Deterministic test audio at 16 kHz: noise with tones and bursts coming and going.
fn audio(n: usize) -> Vec<f32> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let noise = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05;
            let t = i as f32 / 16_000.0;
            let on = (t % 7.0) < 1.0;
            let tone = if on {
                0.3 * (2.0 * std::f32::consts::PI * 1000.0 * t).sin()
            } else {
                0.0
            };
            noise + tone
        })
        .collect()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Peak resident memory of this process in bytes (Linux: VmHWM), if known.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn run(args: &BenchArgs) -> Result<bool> {
    let model = crate::detect::load_model(args.model.as_deref(), args.engine)?;
    let mut detector =
        Detector::new(&model, &PostprocessConfig::default()).context("configuring the detector")?;
    let hop = model.metadata().frontend.hop_length;
    let rate = model.metadata().frontend.sample_rate as f64;
    let n_hops = ((args.seconds.max(1.0) * rate) as usize / hop).max(1);
    let x = audio((n_hops + 300) * hop);
    // Warm-up: fill the window, let tract and the caches settle.
    let mut events = 0u64;
    for h in x[..300 * hop].chunks_exact(hop) {
        detector.push(h, |_, _| events += 1)?;
    }
    let mut lat = Vec::with_capacity(n_hops);
    let allocs_before = alloc_count::allocations();
    let started = Instant::now();
    for h in x[300 * hop..].chunks_exact(hop) {
        let t0 = Instant::now();
        detector.push(h, |_, _| events += 1)?;
        lat.push(t0.elapsed().as_nanos() as u64);
    }
    let total = started.elapsed().as_secs_f64();
    let allocs = alloc_count::allocations() - allocs_before;
    lat.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    let audio_s = n_hops as f64 * hop as f64 / rate;
    let (layers, hidden) = model.state_shape();
    let report = serde_json::json!({
        "model": model.name(),
        "lstm": {"layers": layers, "hidden": hidden},
        "engine": model.engine(),
        "native_problem": model.native_problem(),
        "hops": n_hops,
        "audio_seconds": audio_s,
        "hop_us": {
            "p50": us(percentile(&lat, 0.5)),
            "p90": us(percentile(&lat, 0.9)),
            "p99": us(percentile(&lat, 0.99)),
            "max": us(*lat.last().unwrap_or(&0)),
            "mean": us((total * 1e9 / n_hops as f64) as u64),
        },
        "real_time_factor": total / audio_s,
        "x_real_time": audio_s / total,
        "one_hour_seconds": total / audio_s * 3600.0,
        "allocations_per_hop": allocs as f64 / n_hops as f64,
        "peak_rss_mb": peak_rss().map(|b| b as f64 / 1048576.0),
        "events": events,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let h = &report["hop_us"];
        println!(
            "model          {} (state {layers} x {hidden})",
            model.name()
        );
        match model.native_problem() {
            Some(why) => println!(
                "engine         {} (native unavailable: {why})",
                model.engine()
            ),
            None => println!("engine         {}", model.engine()),
        }
        println!("audio          {audio_s:.1} s, {n_hops} hops of {hop} samples");
        println!(
            "per hop        p50 {:.1} us   p90 {:.1} us   p99 {:.1} us   max {:.1} us   mean {:.1} us",
            h["p50"].as_f64().unwrap_or(0.0),
            h["p90"].as_f64().unwrap_or(0.0),
            h["p99"].as_f64().unwrap_or(0.0),
            h["max"].as_f64().unwrap_or(0.0),
            h["mean"].as_f64().unwrap_or(0.0)
        );
        println!(
            "real time      factor {:.5} ({:.0}x faster than real time; one hour in {:.1} s)",
            total / audio_s,
            audio_s / total,
            total / audio_s * 3600.0
        );
        println!(
            "allocations    {:.2} per hop",
            allocs as f64 / n_hops as f64
        );
        match peak_rss() {
            Some(b) => println!(
                "peak memory    {:.1} MB (resident, whole process)",
                b as f64 / 1048576.0
            ),
            None => println!("peak memory    unknown on this system"),
        }
    }
    Ok(true)
}
