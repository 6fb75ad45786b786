//! Evaluation audio built the DCASE 2017 Task 2 way, written as WAV files for `hark detect`,
//! and the scoring of what `hark detect` reports on them.
//!
//! * **Mixtures**: 30-second stretches of background (pieces of the split's background clips,
//!   joined with short cross-fades, at a level drawn from `background_dbfs`), each holding one
//!   event at a random onset and an event-to-background ratio (EBR) of -6, 0 or +6 dB (cycled,
//!   so each event clip appears at every ratio), plus up to two hard negatives elsewhere,
//!   unlabelled. The EBR compares the event's RMS with the background's RMS over the event's
//!   span. Events are not augmented: they are the real clips.
//! * **Background**: long files of background only, with a hard negative mixed in every
//!   `negative_every_s` seconds on average: what false alarms per hour are counted on.
//!
//! The folder holds `mixtures/*.wav`, `background/*.wav`, `reference.tsv` (file, onset,
//! offset, class; files relative to the folder) and `manifest.json`. [`score`] reads it with
//! the JSON lines of `hark detect` and gives per-class event metrics (onset only, 500 ms
//! collar) and false alarms per hour.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{Clip, Role, write_wav};
use crate::eval::{Event, EventMetrics, event_metrics};
use crate::examples::{Rng, by_kind, db_to_gain, rms};

const RATE: usize = 16_000;

/// How the evaluation audio is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixtureConfig {
    /// Length of a mixture, seconds. Default 30.
    pub seconds: f32,
    /// Mixtures per event clip (the EBR cycles through `ebr_db`). Default 3.
    pub per_event: usize,
    /// Event-to-background ratios, dB. Default [-6, 0, 6].
    pub ebr_db: Vec<f32>,
    /// Background level, RMS dBFS drawn uniformly. Default [-40, -20].
    pub background_dbfs: [f32; 2],
    /// Hard negatives per mixture, inclusive range. Default [0, 2].
    pub negatives_per_mixture: [usize; 2],
    /// Minutes of background-only audio (with hard negatives) for false alarms per hour.
    /// Default 60.
    pub background_minutes: f32,
    /// Mean spacing of the hard negatives in the background-only audio, seconds. Default 20.
    pub negative_every_s: f32,
    /// Seed. Default 0.
    pub seed: u64,
}

impl Default for MixtureConfig {
    fn default() -> Self {
        Self {
            seconds: 30.0,
            per_event: 3,
            ebr_db: vec![-6.0, 0.0, 6.0],
            background_dbfs: [-40.0, -20.0],
            negatives_per_mixture: [0, 2],
            background_minutes: 60.0,
            negative_every_s: 20.0,
            seed: 0,
        }
    }
}

/// A reference event of a mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// File, relative to the folder.
    pub file: String,
    /// Onset, seconds.
    pub onset: f64,
    /// Offset, seconds.
    pub offset: f64,
    /// Class.
    pub class: String,
    /// The clip it came from.
    pub source: String,
    /// Its event-to-background ratio, dB.
    pub ebr_db: f32,
}

/// What a mixture folder holds (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The settings.
    pub config: MixtureConfig,
    /// Mixture files, relative to the folder.
    pub mixtures: Vec<String>,
    /// Background-only files, relative to the folder.
    pub background: Vec<String>,
    /// Seconds of background-only audio.
    pub background_seconds: f64,
    /// The reference events.
    pub references: Vec<Reference>,
    /// Event clips used, per class.
    pub event_clips: BTreeMap<String, usize>,
    /// Background clips used.
    pub background_clips: usize,
    /// Hard-negative clips used.
    pub negative_clips: usize,
}

/// Why mixtures cannot be made or scored.
#[derive(Debug, thiserror::Error)]
pub enum MixtureError {
    /// No clips of a kind the mixtures need.
    #[error("no {0} clips in this split")]
    NoClips(&'static str),
    /// A file cannot be read or written.
    #[error("{path}: {problem}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MixtureError + '_ {
    move |e| MixtureError::Io {
        path: path.to_path_buf(),
        problem: e.to_string(),
    }
}

/// `len` samples of background: random pieces of 2–8 s of random clips (kinds drawn evenly), joined with 20 ms
/// cross-fades, normalised to a level drawn from `dbfs`.
pub(crate) fn background(
    bgs: &[Vec<&Clip>],
    len: usize,
    dbfs: [f32; 2],
    rng: &mut Rng,
) -> Vec<f32> {
    let fade = RATE / 50;
    let mut out: Vec<f32> = Vec::with_capacity(len + RATE * 8);
    while out.len() < len {
        let kind = &bgs[rng.below(bgs.len())];
        let c = kind[rng.below(kind.len())];
        let piece = ((rng.range(2.0, 8.0) * RATE as f32) as usize).min(c.samples.len());
        if piece <= 2 * fade {
            // A very short clip: take it whole.
            out.extend_from_slice(&c.samples);
            continue;
        }
        let start = rng.below(c.samples.len() - piece + 1);
        let p = &c.samples[start..start + piece];
        // Each piece at its own loudness (normalised), then faded in over the tail.
        let g = 1.0 / rms(p).max(1e-4);
        let overlap = fade.min(out.len());
        let base = out.len() - overlap;
        for (i, &v) in p.iter().enumerate() {
            let v = v * g;
            if i < overlap {
                let w = i as f32 / overlap as f32;
                out[base + i] = out[base + i] * (1.0 - w) + v * w;
            } else {
                out.push(v);
            }
        }
    }
    out.truncate(len);
    let target = db_to_gain(rng.range(dbfs[0], dbfs[1]));
    let g = target / rms(&out).max(1e-6);
    out.iter_mut().for_each(|v| *v *= g);
    out
}

/// Adds `event` at `onset` with the given EBR over the event's span; returns the end.
fn mix(bg: &mut [f32], event: &[f32], onset: usize, ebr_db: f32) -> usize {
    let end = (onset + event.len()).min(bg.len());
    let span = &bg[onset..end];
    let g = rms(span).max(1e-5) * db_to_gain(ebr_db) / rms(event).max(1e-9);
    for (b, e) in bg[onset..end].iter_mut().zip(event) {
        *b += g * e;
    }
    end
}

/// Keeps samples within [-1, 1] (a mixture at +6 dB over a loud background can exceed it):
/// scales the whole file down when needed.
fn limit(x: &mut [f32]) {
    let peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if peak > 0.99 {
        let g = 0.99 / peak;
        x.iter_mut().for_each(|v| *v *= g);
    }
}

/// Makes the mixtures and background files of `clips` (one split) into `dir`.
pub fn make(
    clips: &[Clip],
    classes: &[String],
    cfg: &MixtureConfig,
    dir: &Path,
) -> Result<Manifest, MixtureError> {
    let events: Vec<&Clip> = clips
        .iter()
        .filter(|c| c.role == Role::Event && classes.contains(&c.class))
        .collect();
    let bgs = by_kind(clips.iter().filter(|c| c.role == Role::Background));
    let negs: Vec<&Clip> = clips.iter().filter(|c| c.role == Role::Negative).collect();
    if events.is_empty() {
        return Err(MixtureError::NoClips("event"));
    }
    if bgs.is_empty() {
        return Err(MixtureError::NoClips("background"));
    }
    for sub in ["mixtures", "background"] {
        let d = dir.join(sub);
        fs::create_dir_all(&d).map_err(io(&d))?;
    }
    let mut rng = Rng::new(cfg.seed ^ 0x6d69_7874);
    let len = (cfg.seconds * RATE as f32) as usize;
    let mut manifest = Manifest {
        config: cfg.clone(),
        mixtures: Vec::new(),
        background: Vec::new(),
        background_seconds: 0.0,
        references: Vec::new(),
        event_clips: BTreeMap::new(),
        background_clips: bgs.iter().map(|k| k.len()).sum(),
        negative_clips: negs.len(),
    };
    for e in &events {
        *manifest.event_clips.entry(e.class.clone()).or_default() += 1;
    }
    let mut k = 0usize;
    for (ei, ev) in events.iter().enumerate() {
        for j in 0..cfg.per_event.max(1) {
            let mut x = background(&bgs, len, cfg.background_dbfs, &mut rng);
            let e: &[f32] = &ev.samples[..ev.samples.len().min(len - 2 * RATE)];
            let onset = RATE / 2 + rng.below(len - e.len() - RATE);
            let ebr = cfg.ebr_db[(ei + j) % cfg.ebr_db.len()];
            let end = mix(&mut x, e, onset, ebr);
            // Hard negatives at least 1.5 s away from the event.
            let n_neg = if negs.is_empty() {
                0
            } else {
                cfg.negatives_per_mixture[0]
                    + rng.below(
                        cfg.negatives_per_mixture[1].saturating_sub(cfg.negatives_per_mixture[0])
                            + 1,
                    )
            };
            for _ in 0..n_neg {
                let n = negs[rng.below(negs.len())];
                let ns = &n.samples[..n.samples.len().min(len / 3)];
                for _try in 0..20 {
                    let at = rng.below(len - ns.len());
                    let clear = at + ns.len() + 3 * RATE / 2 < onset || at > end + 3 * RATE / 2;
                    if clear {
                        mix(&mut x, ns, at, cfg.ebr_db[rng.below(cfg.ebr_db.len())]);
                        break;
                    }
                }
            }
            limit(&mut x);
            let name = format!("mixtures/mix_{k:04}.wav");
            let p = dir.join(&name);
            write_wav(&p, &x, RATE as u32).map_err(io(&p))?;
            manifest.references.push(Reference {
                file: name.clone(),
                onset: onset as f64 / RATE as f64,
                offset: end as f64 / RATE as f64,
                class: ev.class.clone(),
                source: ev.name.clone(),
                ebr_db: ebr,
            });
            manifest.mixtures.push(name);
            k += 1;
        }
    }
    // Background-only files of at most 5 minutes.
    let total = (cfg.background_minutes * 60.0 * RATE as f32) as usize;
    let mut done = 0usize;
    let mut b = 0usize;
    while done < total {
        let n = (total - done).min(300 * RATE);
        let mut x = background(&bgs, n, cfg.background_dbfs, &mut rng);
        if !negs.is_empty() && cfg.negative_every_s > 0.0 {
            let mut t = 0.0f32;
            loop {
                t += -rng.f32().max(1e-6).ln() * cfg.negative_every_s;
                let at = (t * RATE as f32) as usize;
                if at >= n {
                    break;
                }
                let neg = negs[rng.below(negs.len())];
                let ns = &neg.samples[..neg.samples.len().min(n - at)];
                mix(&mut x, ns, at, cfg.ebr_db[rng.below(cfg.ebr_db.len())]);
            }
        }
        limit(&mut x);
        let name = format!("background/bg_{b:03}.wav");
        let p = dir.join(&name);
        write_wav(&p, &x, RATE as u32).map_err(io(&p))?;
        manifest.background.push(name);
        done += n;
        b += 1;
    }
    manifest.background_seconds = done as f64 / RATE as f64;
    let p = dir.join("reference.tsv");
    let mut tsv = String::from("file\tonset\toffset\tclass\n");
    for r in &manifest.references {
        tsv.push_str(&format!(
            "{}\t{:.3}\t{:.3}\t{}\n",
            r.file, r.onset, r.offset, r.class
        ));
    }
    fs::write(&p, tsv).map_err(io(&p))?;
    let p = dir.join("manifest.json");
    fs::write(
        &p,
        serde_json::to_vec_pretty(&manifest).expect("serialisable"),
    )
    .map_err(io(&p))?;
    Ok(manifest)
}

/// A short demonstration recording: one clip of every class of `classes` found in `clips`
/// (the first of each, in class order), `spacing_s` seconds apart starting at `spacing_s / 2`,
/// at `ebr_db` over one stretch of real background. Returns the samples and the references
/// (file name `file`).
pub fn demo(
    clips: &[Clip],
    classes: &[String],
    spacing_s: f32,
    ebr_db: f32,
    file: &str,
    seed: u64,
) -> Result<(Vec<f32>, Vec<Reference>), MixtureError> {
    let bgs = by_kind(clips.iter().filter(|c| c.role == Role::Background));
    if bgs.is_empty() {
        return Err(MixtureError::NoClips("background"));
    }
    let chosen: Vec<&Clip> = classes
        .iter()
        .filter_map(|c| {
            clips
                .iter()
                .find(|x| x.role == Role::Event && &x.class == c)
        })
        .collect();
    if chosen.is_empty() {
        return Err(MixtureError::NoClips("event"));
    }
    let slot = (spacing_s * RATE as f32) as usize;
    let len = slot * chosen.len();
    let mut rng = Rng::new(seed ^ 0x6465_6d6f);
    let mut x = background(&bgs, len, [-35.0, -30.0], &mut rng);
    let mut refs = Vec::new();
    for (i, ev) in chosen.iter().enumerate() {
        let onset = i * slot + slot / 2;
        let e = &ev.samples[..ev.samples.len().min(slot / 2)];
        let end = mix(&mut x, e, onset, ebr_db);
        refs.push(Reference {
            file: file.to_string(),
            onset: onset as f64 / RATE as f64,
            offset: end as f64 / RATE as f64,
            class: ev.class.clone(),
            source: key_of(&ev.name),
            ebr_db,
        });
    }
    limit(&mut x);
    Ok((x, refs))
}

/// Reads `manifest.json` of a mixture folder.
pub fn read_manifest(dir: &Path) -> Result<Manifest, MixtureError> {
    let p = dir.join("manifest.json");
    let bytes = fs::read(&p).map_err(io(&p))?;
    serde_json::from_slice(&bytes).map_err(|e| MixtureError::Io {
        path: p,
        problem: format!("not a mixture manifest: {e}"),
    })
}

/// A detection as `hark detect` writes it (JSON lines); extra fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Detection {
    /// The file as given to `hark detect`.
    pub file: String,
    /// Class.
    pub class: String,
    /// Onset, seconds.
    pub onset: f64,
    /// Offset, seconds.
    pub offset: f64,
}

/// The scores of one model on one mixture folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Event metrics on the mixtures (onset only, 500 ms collar).
    pub events: EventMetrics,
    /// Events reported on the background-only audio, per class.
    pub background_events: BTreeMap<String, usize>,
    /// Hours of background-only audio.
    pub background_hours: f64,
    /// False alarms per hour on the background-only audio (all classes).
    pub false_alarms_per_hour: f64,
    /// Per class false alarms per hour.
    pub false_alarms_per_hour_by_class: BTreeMap<String, f64>,
}

/// Maps a detection's file (however it was given to `hark detect`: absolute, relative to
/// anywhere) to the folder-relative name it has in the manifest, by its last two components.
fn key_of(file: &str) -> String {
    let p = Path::new(file);
    let name = p.file_name().map(|n| n.to_string_lossy().to_string());
    let parent = p
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().to_string());
    match (parent, name) {
        (Some(d), Some(n)) => format!("{d}/{n}"),
        (None, Some(n)) => n,
        _ => file.to_string(),
    }
}

/// Scores detections against a manifest. Detections of files not in the manifest are an
/// error (they would silently vanish otherwise).
pub fn score(manifest: &Manifest, detections: &[Detection]) -> Result<Score, String> {
    let mix: std::collections::BTreeSet<&str> =
        manifest.mixtures.iter().map(|s| s.as_str()).collect();
    let bg: std::collections::BTreeSet<&str> =
        manifest.background.iter().map(|s| s.as_str()).collect();
    let mut detected = Vec::new();
    let mut background_events: BTreeMap<String, usize> = BTreeMap::new();
    for d in detections {
        let k = key_of(&d.file);
        if mix.contains(k.as_str()) {
            detected.push(Event {
                file: k,
                class: d.class.clone(),
                onset: d.onset,
                offset: d.offset,
            });
        } else if bg.contains(k.as_str()) {
            *background_events.entry(d.class.clone()).or_default() += 1;
        } else {
            return Err(format!(
                "detection in {:?}, which is not a file of this mixture folder",
                d.file
            ));
        }
    }
    let reference: Vec<Event> = manifest
        .references
        .iter()
        .map(|r| Event {
            file: r.file.clone(),
            class: r.class.clone(),
            onset: r.onset,
            offset: r.offset,
        })
        .collect();
    let events = event_metrics(&reference, &detected, 0.5);
    let hours = manifest.background_seconds / 3600.0;
    let total: usize = background_events.values().sum();
    let per = |n: usize| if hours > 0.0 { n as f64 / hours } else { 0.0 };
    Ok(Score {
        events,
        false_alarms_per_hour: per(total),
        false_alarms_per_hour_by_class: background_events
            .iter()
            .map(|(c, &n)| (c.clone(), per(n)))
            .collect(),
        background_events,
        background_hours: hours,
    })
}

/// A score as a markdown table: per class and overall, reference and detected events, F1,
/// error rate, precision, recall and false alarms per hour (rows end with a newline).
pub fn score_table(sc: &Score) -> String {
    let er = |e: Option<f64>| e.map(|e| format!("{e:.3}")).unwrap_or("-".into());
    let row = |name: &str, m: &crate::eval::EventCounts, fa: f64| {
        format!(
            "| {name} | {} | {} | {:.3} | {} | {:.3} | {:.3} | {fa:.2} |\n",
            m.n_ref,
            m.n_sys,
            m.f1,
            er(m.error_rate),
            m.precision,
            m.recall
        )
    };
    let mut t = String::from(
        "| class | reference events | detected | F1 | error rate | precision | recall | false alarms / h |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (c, m) in &sc.events.per_class {
        let fa = sc
            .false_alarms_per_hour_by_class
            .get(c)
            .copied()
            .unwrap_or(0.0);
        t.push_str(&row(c, m, fa));
    }
    t.push_str(&row(
        "overall",
        &sc.events.overall,
        sc.false_alarms_per_hour,
    ));
    t
}

/// Parses `hark detect`'s JSON lines (blank lines skipped); errors name the line.
pub fn parse_detections(text: &str) -> Result<Vec<Detection>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("line {}: not an event: {e}", i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(name: &str, class: &str, role: Role, samples: Vec<f32>) -> Clip {
        Clip {
            name: name.into(),
            class: class.into(),
            role,
            group: "g".into(),
            kind: class.into(),
            samples,
        }
    }

    fn tone(n: usize, f: f32) -> Vec<f32> {
        (0..n)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * f * i as f32 / RATE as f32).sin())
            .collect()
    }

    #[test]
    fn mixtures_hold_the_event_at_its_ratio_and_score_round_trips() {
        let mut rng = Rng::new(4);
        let noise: Vec<f32> = (0..RATE * 10).map(|_| 0.1 * rng.normal()).collect();
        let clips = vec![
            clip("e1", "beep", Role::Event, tone(RATE / 2, 1000.0)),
            clip("e2", "beep", Role::Event, tone(RATE / 4, 2000.0)),
            clip("b1", "background", Role::Background, noise),
            clip("n1", "background", Role::Negative, tone(RATE / 4, 300.0)),
        ];
        let dir = tempfile::tempdir().unwrap();
        let cfg = MixtureConfig {
            seconds: 10.0,
            per_event: 3,
            background_minutes: 1.0,
            ..Default::default()
        };
        let m = make(&clips, &["beep".into()], &cfg, dir.path()).unwrap();
        assert_eq!(m.mixtures.len(), 6);
        assert_eq!(m.references.len(), 6);
        assert_eq!(m.background.len(), 1);
        assert!((m.background_seconds - 60.0).abs() < 1e-6);
        // Every EBR appears, and the mixed event's energy over its span matches it.
        let mut ebrs: Vec<i32> = m.references.iter().map(|r| r.ebr_db as i32).collect();
        ebrs.sort();
        assert_eq!(ebrs, vec![-6, -6, 0, 0, 6, 6]);
        for r in &m.references {
            let x = hark::audio::read_file(dir.path().join(&r.file))
                .unwrap()
                .samples;
            assert_eq!(x.len(), 10 * RATE);
            let (a, b) = (
                (r.onset * RATE as f64) as usize,
                (r.offset * RATE as f64) as usize,
            );
            let inside = rms(&x[a..b]);
            // A stretch of background of the same length well away from the event.
            let away = if a > 3 * RATE {
                0
            } else {
                x.len() - (b - a) - 1
            };
            let outside = rms(&x[away..away + (b - a)]);
            // Event plus background over background alone: 10^(ebr/20) power ratio + 1.
            let expect = (1.0 + db_to_gain(r.ebr_db).powi(2)).sqrt();
            let got = inside / outside;
            // Negatives may sit in the "away" stretch; the background level varies a little.
            assert!(
                (got / expect - 1.0).abs() < 0.6,
                "{}: ratio {got} expected about {expect}",
                r.file
            );
        }
        let m2 = read_manifest(dir.path()).unwrap();
        assert_eq!(m, m2);
        // Perfect detections score F1 1; a late one (1 s) and a background event count.
        let mut lines = String::new();
        for r in &m.references {
            lines.push_str(&format!(
                "{{\"file\":\"/somewhere/{}\",\"class\":\"beep\",\"onset\":{},\"offset\":{},\"confidence\":0.9}}\n",
                r.file,
                r.onset + 0.2,
                r.offset
            ));
        }
        let d = parse_detections(&lines).unwrap();
        let s = score(&m, &d).unwrap();
        assert_eq!(s.events.per_class["beep"].f1, 1.0);
        assert_eq!(s.false_alarms_per_hour, 0.0);
        lines.push_str(&format!(
            "{{\"file\":\"{}\",\"class\":\"beep\",\"onset\":{},\"offset\":1.0,\"confidence\":0.9}}\n",
            m.references[0].file,
            m.references[0].onset + 1.0
        ));
        lines.push_str(
            "{\"file\":\"x/background/bg_000.wav\",\"class\":\"beep\",\"onset\":3.0,\"offset\":3.5,\"confidence\":0.9}\n",
        );
        let s = score(&m, &parse_detections(&lines).unwrap()).unwrap();
        let c = &s.events.per_class["beep"];
        assert_eq!((c.tp, c.insertions, c.deletions), (6, 1, 0));
        assert!((s.false_alarms_per_hour - 60.0).abs() < 1e-9);
        assert!(
            score(
                &m,
                &parse_detections(
                    "{\"file\":\"other.wav\",\"class\":\"beep\",\"onset\":1,\"offset\":2}"
                )
                .unwrap()
            )
            .is_err()
        );
        assert!(parse_detections("not json").is_err());
    }
}
