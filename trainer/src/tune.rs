//! Per-class detection thresholds chosen on validation audio (a mixture folder of the
//! validation split, see [`crate::mixtures`]), never on the test mixtures.
//!
//! The model's scores are computed once per file with the runtime's own frontend, model
//! (tract) and post-processing (`hark::postprocess`, default settings), so the thresholds are
//! those `hark detect` will apply. For every candidate threshold ([`CANDIDATES`]: 0.20 to 0.95
//! in steps of 0.05, then 0.97 to 0.9999) each class gets its event F1 on the mixtures (onset only, 500 ms collar) and its
//! false alarms per hour on the background-only files. A class's threshold is the one with
//! the best F1 among those whose false alarms per hour stay within the class's share of the
//! budget (`max_false_alarms_per_hour` / number of event classes), ties going to the higher
//! threshold; when none of those finds a single validation event, the lowest of them (the
//! most sensitive threshold that keeps the budget, not one that silences the class). If no
//! candidate keeps the budget, the one with the best F1 over all the validation audio, the
//! background-only files' false alarms counted as false positives (a model that cannot meet
//! the budget still gets the threshold that balances its misses against its false alarms).

use std::collections::BTreeMap;
use std::path::Path;

use hark::frontend::Frontend;
use hark::model::Model;
use hark::postprocess::{ClassOverride, PostprocessConfig, Postprocessor};
use serde::{Deserialize, Serialize};

use crate::mixtures::{Detection, Manifest, score};

/// One candidate threshold's figures for one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The threshold.
    pub threshold: f32,
    /// Event F1 on the validation mixtures.
    pub f1: f64,
    /// False alarms per hour on the validation background.
    pub false_alarms_per_hour: f64,
    /// Event F1 over the mixtures and the background-only files together: `2 TP / (2 TP + FP
    /// + FN)` with the background files' detections among the false positives.
    #[serde(default)]
    pub f1_all: f64,
}

/// The outcome of tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tuned {
    /// The chosen threshold per event class.
    pub thresholds: BTreeMap<String, f32>,
    /// Every candidate per class.
    pub candidates: BTreeMap<String, Vec<Candidate>>,
}

/// The candidate thresholds: 0.20 to 0.95 in steps of 0.05, then ever closer to 1, where a
/// model trained with class weights puts its background decisions (the weights inflate the
/// event classes' probabilities by up to their ratio).
pub const CANDIDATES: [f32; 24] = [
    0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95,
    0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999,
];

/// The scores of every hop of every file of the manifest.
fn score_traces(model: &Model, dir: &Path, files: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut fe = Frontend::new(model.metadata().frontend.clone())?;
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let audio = hark::audio::read_file(dir.join(f))?;
        fe.reset();
        let (frames, _) = fe.compute(&audio.samples);
        out.push(model.run_sequence(&frames)?);
    }
    Ok(out)
}

/// Chooses the thresholds of `model` on the mixture folder `dir`.
pub fn tune(
    model: &Model,
    dir: &Path,
    manifest: &Manifest,
    max_false_alarms_per_hour: f64,
) -> anyhow::Result<Tuned> {
    let meta = model.metadata();
    let files: Vec<String> = manifest
        .mixtures
        .iter()
        .chain(&manifest.background)
        .cloned()
        .collect();
    let traces = score_traces(model, dir, &files)?;
    let n = model.n_classes();
    let hop_s = meta.frontend.hop_s();
    let events: Vec<String> = meta.event_classes().map(|(_, c)| c.clone()).collect();
    let share = max_false_alarms_per_hour / events.len().max(1) as f64;
    let mut candidates: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for t in CANDIDATES {
        let cfg = PostprocessConfig {
            classes: events
                .iter()
                .map(|c| {
                    (
                        c.clone(),
                        ClassOverride {
                            threshold: Some(t),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            ..Default::default()
        };
        let mut dets = Vec::new();
        for (f, trace) in files.iter().zip(&traces) {
            let mut post = Postprocessor::new(meta, &cfg, hop_s)?;
            let mut push = |e: &hark::postprocess::Event| {
                dets.push(Detection {
                    file: f.clone(),
                    class: meta.classes[e.class].clone(),
                    onset: e.onset,
                    offset: e.offset,
                })
            };
            for s in trace.chunks(n) {
                for e in post.push(s)? {
                    push(e);
                }
            }
            for e in post.flush() {
                push(e);
            }
        }
        let sc = score(manifest, &dets).map_err(anyhow::Error::msg)?;
        for c in &events {
            let f1 = sc.events.per_class.get(c).map(|m| m.f1).unwrap_or(0.0);
            let f1_all = sc.events.per_class.get(c).map_or(0.0, |m| {
                let bg = sc.background_events.get(c).copied().unwrap_or(0);
                let denom = m.n_sys + m.n_ref + bg;
                if denom == 0 {
                    0.0
                } else {
                    2.0 * m.tp as f64 / denom as f64
                }
            });
            let fa = sc
                .false_alarms_per_hour_by_class
                .get(c)
                .copied()
                .unwrap_or(0.0);
            candidates.entry(c.clone()).or_default().push(Candidate {
                threshold: t,
                f1,
                false_alarms_per_hour: fa,
                f1_all,
            });
        }
    }
    let mut thresholds = BTreeMap::new();
    for (c, cands) in &candidates {
        thresholds.insert(c.clone(), choose(cands, share));
    }
    Ok(Tuned {
        thresholds,
        candidates,
    })
}

/// The rule of the module documentation: best F1 within the false-alarm share (the lowest
/// threshold within it when all have F1 0), else best F1 over all the validation audio; ties
/// to the higher threshold.
pub fn choose(cands: &[Candidate], share: f64) -> f32 {
    let within: Vec<&Candidate> = cands
        .iter()
        .filter(|c| c.false_alarms_per_hour <= share + 1e-9)
        .collect();
    if !within.is_empty() && within.iter().all(|c| c.f1 <= 0.0) {
        return within
            .iter()
            .map(|c| c.threshold)
            .fold(f32::INFINITY, f32::min);
    }
    let (pool, f1): (Vec<&Candidate>, fn(&Candidate) -> f64) = if within.is_empty() {
        (cands.iter().collect(), |c| c.f1_all)
    } else {
        (within, |c| c.f1)
    };
    pool.into_iter()
        .max_by(|a, b| {
            f1(a)
                .total_cmp(&f1(b))
                .then(a.threshold.total_cmp(&b.threshold))
        })
        .map_or(0.5, |c| c.threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(threshold: f32, f1: f64, fa: f64) -> Candidate {
        Candidate {
            threshold,
            f1,
            false_alarms_per_hour: fa,
            // As if the background-only audio were as long as the mixtures, with one
            // reference event per false alarm per hour of it.
            f1_all: f1 * 10.0 / (10.0 + fa),
        }
    }

    #[test]
    fn choice_respects_the_false_alarm_share_then_f1_then_height() {
        let cands = [
            c(0.3, 0.9, 5.0),
            c(0.5, 0.8, 0.4),
            c(0.6, 0.8, 0.0),
            c(0.8, 0.5, 0.0),
        ];
        // 0.3 has the best F1 but too many false alarms; 0.5 and 0.6 tie: the higher wins.
        assert_eq!(choose(&cands, 0.5), 0.6);
        // A generous budget lets 0.3 through.
        assert_eq!(choose(&cands, 5.0), 0.3);
        // Nothing within budget: the best F1 with the false alarms counted (0.9 * 10/15 =
        // 0.6, 0.8 * 10/12 = 0.67, 0.6 * 10/11 = 0.55), not the silencing 0.99.
        let bad = [
            c(0.3, 0.9, 5.0),
            c(0.5, 0.8, 2.0),
            c(0.7, 0.6, 1.0),
            c(0.99, 0.0, 0.5),
        ];
        assert_eq!(choose(&bad, 0.1), 0.5);
        // Within the budget only thresholds that find nothing: the lowest of them, not 0.99.
        let none = [c(0.3, 0.9, 5.0), c(0.7, 0.0, 0.5), c(0.99, 0.0, 0.0)];
        assert_eq!(choose(&none, 0.5), 0.7);
        // Once a threshold within the budget finds something, the budget holds.
        let some = [c(0.3, 0.9, 5.0), c(0.7, 0.2, 0.5), c(0.99, 0.0, 0.0)];
        assert_eq!(choose(&some, 0.5), 0.7);
    }
}
