//! Evaluation metrics: window level (confusion matrix, per-class precision / recall / F1 /
//! error rate, balanced accuracy) and event level (DCASE 2017 Task 2 style, onsets only with a
//! collar). Pure functions on plain data.
//!
//! # Window level
//!
//! Every window has one reference class and one predicted class (`0..n_classes`). For class
//! `c`: `TP` windows of class `c` predicted `c`, `FP` windows of another class predicted `c`,
//! `FN` windows of class `c` predicted as another class, `N = TP + FN` (the support).
//!
//! ```text
//! precision = TP / (TP + FP)       (0 when nothing is predicted c)
//! recall    = TP / N               (0 when N = 0)
//! F1        = 2 TP / (2 TP + FP + FN)   (0 when the denominator is 0)
//! ER        = (FN + FP) / N        (None when N = 0)
//! balanced accuracy = mean of the recalls of the classes with N > 0
//! ```
//!
//! # Event level
//!
//! Events of one file are matched one to one; a detection matches a reference when their
//! onsets differ by at most the collar (0.5 s by default); offsets are ignored. The matching
//! is a maximum bipartite matching (so the count of matches does not depend on the order of
//! the lists). Per class (only that class's events): `TP` matches, `D = N - TP` deletions,
//! `I = detections - TP` insertions, `ER = (D + I) / N`, `F1 = 2 TP / (2 TP + D + I)`.
//! Overall: first the matches of the same class (`TP`); then, among what is left, matches of
//! different classes are substitutions `S`; `D` and `I` are what remains; `ER = (S + D + I) / N`
//! and `F1 = 2 TP / (2 TP + (detections - TP) + (N - TP))`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Per-class window-level figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class name.
    pub class: String,
    /// Reference windows of the class (`TP + FN`).
    pub support: usize,
    /// True positives.
    pub tp: usize,
    /// False positives.
    pub fp: usize,
    /// False negatives.
    pub fn_: usize,
    /// `TP / (TP + FP)`, 0 when nothing was predicted as the class.
    pub precision: f64,
    /// `TP / support`, 0 when the support is 0.
    pub recall: f64,
    /// `2 TP / (2 TP + FP + FN)`, 0 when the denominator is 0.
    pub f1: f64,
    /// `(FN + FP) / support`, `None` when the support is 0.
    pub error_rate: Option<f64>,
}

/// Window-level evaluation of a classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowMetrics {
    /// `confusion[r][p]`: windows of reference class `r` predicted as `p`.
    pub confusion: Vec<Vec<usize>>,
    /// Per-class figures, class order.
    pub classes: Vec<ClassMetrics>,
    /// Mean recall over the classes with windows.
    pub balanced_accuracy: f64,
    /// Fraction of windows predicted correctly.
    pub accuracy: f64,
    /// Mean F1 over the classes with windows.
    pub macro_f1: f64,
}

/// The confusion matrix of `reference` and `predicted` class indices (`< n_classes`).
///
/// # Panics
/// If the slices differ in length or an index is out of range.
pub fn confusion_matrix(reference: &[usize], predicted: &[usize], n: usize) -> Vec<Vec<usize>> {
    assert_eq!(
        reference.len(),
        predicted.len(),
        "one prediction per window"
    );
    let mut m = vec![vec![0usize; n]; n];
    for (&r, &p) in reference.iter().zip(predicted) {
        m[r][p] += 1;
    }
    m
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Window-level metrics of `reference` and `predicted` class indices; `class_names` gives
/// the number of classes and their names.
///
/// # Panics
/// If the slices differ in length or an index is not below `class_names.len()`.
pub fn window_metrics(
    reference: &[usize],
    predicted: &[usize],
    class_names: &[String],
) -> WindowMetrics {
    let n = class_names.len();
    let confusion = confusion_matrix(reference, predicted, n);
    let classes: Vec<ClassMetrics> = (0..n)
        .map(|c| {
            let tp = confusion[c][c];
            let support: usize = confusion[c].iter().sum();
            let predicted_c: usize = (0..n).map(|r| confusion[r][c]).sum();
            let (fp, fn_) = (predicted_c - tp, support - tp);
            ClassMetrics {
                class: class_names[c].clone(),
                support,
                tp,
                fp,
                fn_,
                precision: ratio(tp, tp + fp),
                recall: ratio(tp, support),
                f1: ratio(2 * tp, 2 * tp + fp + fn_),
                error_rate: (support > 0).then(|| (fn_ + fp) as f64 / support as f64),
            }
        })
        .collect();
    let present: Vec<&ClassMetrics> = classes.iter().filter(|c| c.support > 0).collect();
    let mean = |f: &dyn Fn(&ClassMetrics) -> f64| {
        if present.is_empty() {
            0.0
        } else {
            present.iter().map(|c| f(c)).sum::<f64>() / present.len() as f64
        }
    };
    let balanced_accuracy = mean(&|c| c.recall);
    let macro_f1 = mean(&|c| c.f1);
    let correct: usize = (0..n).map(|c| confusion[c][c]).sum();
    WindowMetrics {
        accuracy: ratio(correct, reference.len()),
        confusion,
        classes,
        balanced_accuracy,
        macro_f1,
    }
}

/// Balanced accuracy alone (mean recall over the classes present in `reference`).
pub fn balanced_accuracy(reference: &[usize], predicted: &[usize], n_classes: usize) -> f64 {
    let names: Vec<String> = (0..n_classes).map(|c| c.to_string()).collect();
    window_metrics(reference, predicted, &names).balanced_accuracy
}

/// A sound event: reference annotation or detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The file (or stream) it belongs to; events only match within one file.
    pub file: String,
    /// Class name.
    pub class: String,
    /// Onset in seconds.
    pub onset: f64,
    /// Offset in seconds (not used by the onset-only metrics).
    pub offset: f64,
}

/// Event-level counts and figures of one class or overall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventCounts {
    /// Reference events `N`.
    pub n_ref: usize,
    /// Detected events.
    pub n_sys: usize,
    /// Correct detections.
    pub tp: usize,
    /// Substitutions (overall only; 0 per class).
    pub substitutions: usize,
    /// Deletions (missed references).
    pub deletions: usize,
    /// Insertions (detections that match nothing).
    pub insertions: usize,
    /// `(S + D + I) / N`, `None` when `N = 0`.
    pub error_rate: Option<f64>,
    /// `2 TP / (n_sys + n_ref)`, 0 when both are 0.
    pub f1: f64,
    /// `TP / n_sys`.
    pub precision: f64,
    /// `TP / n_ref`.
    pub recall: f64,
}

impl EventCounts {
    fn new(n_ref: usize, n_sys: usize, tp: usize, s: usize) -> Self {
        let deletions = n_ref - tp - s;
        let insertions = n_sys - tp - s;
        EventCounts {
            n_ref,
            n_sys,
            tp,
            substitutions: s,
            deletions,
            insertions,
            error_rate: (n_ref > 0).then(|| (s + deletions + insertions) as f64 / n_ref as f64),
            f1: ratio(2 * tp, n_ref + n_sys),
            precision: ratio(tp, n_sys),
            recall: ratio(tp, n_ref),
        }
    }
}

/// Event-based evaluation: per class and overall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMetrics {
    /// Collar in seconds.
    pub collar: f64,
    /// Per class (every class of the references or detections), by name.
    pub per_class: BTreeMap<String, EventCounts>,
    /// Overall, with substitutions.
    pub overall: EventCounts,
    /// Mean per-class F1 over the classes with reference events.
    pub class_average_f1: f64,
    /// Mean per-class error rate over the classes with reference events.
    pub class_average_error_rate: f64,
}

/// Maximum bipartite matching (Kuhn's augmenting paths) between `refs` and `syss`
/// (indices into `events`) where `ok(r, s)` allows a pair; returns the pairs.
fn max_matching(
    n_ref: usize,
    n_sys: usize,
    ok: &dyn Fn(usize, usize) -> bool,
) -> Vec<(usize, usize)> {
    let mut sys_of_ref: Vec<Option<usize>> = vec![None; n_ref];
    let mut ref_of_sys: Vec<Option<usize>> = vec![None; n_sys];
    fn augment(
        r: usize,
        n_sys: usize,
        ok: &dyn Fn(usize, usize) -> bool,
        seen: &mut [bool],
        sys_of_ref: &mut [Option<usize>],
        ref_of_sys: &mut [Option<usize>],
    ) -> bool {
        for s in 0..n_sys {
            if seen[s] || !ok(r, s) {
                continue;
            }
            seen[s] = true;
            let free = match ref_of_sys[s] {
                None => true,
                Some(r2) => augment(r2, n_sys, ok, seen, sys_of_ref, ref_of_sys),
            };
            if free {
                ref_of_sys[s] = Some(r);
                sys_of_ref[r] = Some(s);
                return true;
            }
        }
        false
    }
    for r in 0..n_ref {
        let mut seen = vec![false; n_sys];
        augment(r, n_sys, ok, &mut seen, &mut sys_of_ref, &mut ref_of_sys);
    }
    sys_of_ref
        .iter()
        .enumerate()
        .filter_map(|(r, s)| s.map(|s| (r, s)))
        .collect()
}

fn onset_close(a: &Event, b: &Event, collar: f64) -> bool {
    a.file == b.file && (a.onset - b.onset).abs() <= collar + 1e-9
}

/// Event-based metrics (onset only, `collar` seconds; DCASE 2017 Task 2 uses 0.5): see the
/// [module documentation](self).
pub fn event_metrics(reference: &[Event], detected: &[Event], collar: f64) -> EventMetrics {
    let mut classes: Vec<&str> = reference
        .iter()
        .chain(detected)
        .map(|e| e.class.as_str())
        .collect();
    classes.sort_unstable();
    classes.dedup();
    let mut per_class = BTreeMap::new();
    for class in &classes {
        let r: Vec<&Event> = reference.iter().filter(|e| e.class == *class).collect();
        let s: Vec<&Event> = detected.iter().filter(|e| e.class == *class).collect();
        let tp = max_matching(r.len(), s.len(), &|i, j| onset_close(r[i], s[j], collar)).len();
        per_class.insert(class.to_string(), EventCounts::new(r.len(), s.len(), tp, 0));
    }
    // Overall: correct matches first, then substitutions among the rest.
    let correct = max_matching(reference.len(), detected.len(), &|i, j| {
        reference[i].class == detected[j].class && onset_close(&reference[i], &detected[j], collar)
    });
    let mut ref_used = vec![false; reference.len()];
    let mut sys_used = vec![false; detected.len()];
    for &(i, j) in &correct {
        ref_used[i] = true;
        sys_used[j] = true;
    }
    let rest_r: Vec<usize> = (0..reference.len()).filter(|&i| !ref_used[i]).collect();
    let rest_s: Vec<usize> = (0..detected.len()).filter(|&j| !sys_used[j]).collect();
    let subs = max_matching(rest_r.len(), rest_s.len(), &|i, j| {
        onset_close(&reference[rest_r[i]], &detected[rest_s[j]], collar)
    })
    .len();
    let overall = EventCounts::new(reference.len(), detected.len(), correct.len(), subs);
    let with_refs: Vec<&EventCounts> = per_class.values().filter(|c| c.n_ref > 0).collect();
    let avg = |f: &dyn Fn(&EventCounts) -> f64| {
        if with_refs.is_empty() {
            0.0
        } else {
            with_refs.iter().map(|c| f(c)).sum::<f64>() / with_refs.len() as f64
        }
    };
    EventMetrics {
        collar,
        class_average_f1: avg(&|c| c.f1),
        class_average_error_rate: avg(&|c| c.error_rate.unwrap_or(0.0)),
        per_class,
        overall,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    /// 3 classes, 10 windows:
    /// ref  0 0 0 0 1 1 1 2 2 2
    /// pred 0 0 0 1 1 1 0 2 0 2 ... see the confusion matrix below.
    #[test]
    fn window_metrics_hand_computed() {
        let r = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2];
        let p = [0, 0, 0, 1, 1, 1, 0, 2, 0, 2];
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let m = window_metrics(&r, &p, &names);
        assert_eq!(
            m.confusion,
            vec![vec![3, 1, 0], vec![1, 2, 0], vec![1, 0, 2]]
        );
        // Class a: TP 3, FP 2 (one b, one c), FN 1: P 3/5, R 3/4, F1 6/9, ER 3/4.
        let a = &m.classes[0];
        assert_eq!((a.tp, a.fp, a.fn_, a.support), (3, 2, 1, 4));
        close(a.precision, 0.6);
        close(a.recall, 0.75);
        close(a.f1, 6.0 / 9.0);
        close(a.error_rate.unwrap(), 0.75);
        // Class b: TP 2, FP 1, FN 1: P 2/3, R 2/3, F1 4/6, ER 2/3.
        let b = &m.classes[1];
        close(b.precision, 2.0 / 3.0);
        close(b.f1, 4.0 / 6.0);
        close(b.error_rate.unwrap(), 2.0 / 3.0);
        // Class c: TP 2, FP 0, FN 1: P 1, R 2/3, F1 4/5, ER 1/3.
        let c = &m.classes[2];
        close(c.precision, 1.0);
        close(c.f1, 0.8);
        close(c.error_rate.unwrap(), 1.0 / 3.0);
        // Balanced accuracy (3/4 + 2/3 + 2/3) / 3 = 25/36; accuracy 7/10.
        close(m.balanced_accuracy, 25.0 / 36.0);
        close(m.accuracy, 0.7);
        close(m.macro_f1, (6.0 / 9.0 + 4.0 / 6.0 + 0.8) / 3.0);
    }

    #[test]
    fn balanced_accuracy_ignores_absent_classes_and_imbalance() {
        // 8 of class 0 all right, 2 of class 1 all wrong: accuracy 0.8, balanced 0.5.
        let r = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
        let p = [0; 10];
        let names: Vec<String> = (0..3).map(|c| c.to_string()).collect();
        let m = window_metrics(&r, &p, &names);
        close(m.accuracy, 0.8);
        close(m.balanced_accuracy, 0.5);
        close(balanced_accuracy(&r, &p, 3), 0.5);
        assert_eq!(m.classes[2].error_rate, None);
        assert_eq!(m.classes[2].precision, 0.0);
    }

    fn ev(file: &str, class: &str, onset: f64) -> Event {
        Event {
            file: file.into(),
            class: class.into(),
            onset,
            offset: onset + 1.0,
        }
    }

    /// References: f1 glass 1.0, f1 glass 5.0, f1 dog 3.0, f2 glass 1.0 (N = 4).
    /// Detections: f1 glass 1.4 (TP, within 0.5 s), f1 glass 5.6 (0.6 s late: no match),
    /// f1 dog 3.2 (TP), f2 glass 8.0 (insertion), f1 dog 9.0 (insertion).
    /// glass: N 3, sys 3, TP 1, D 2, I 2: ER 4/3, F1 2/6.
    /// dog: N 1, sys 2, TP 1, D 0, I 1: ER 1, F1 2/3.
    #[test]
    fn event_metrics_per_class_hand_computed() {
        let refs = [
            ev("f1", "glass", 1.0),
            ev("f1", "glass", 5.0),
            ev("f1", "dog", 3.0),
            ev("f2", "glass", 1.0),
        ];
        let dets = [
            ev("f1", "glass", 1.4),
            ev("f1", "glass", 5.6),
            ev("f1", "dog", 3.2),
            ev("f2", "glass", 8.0),
            ev("f1", "dog", 9.0),
        ];
        let m = event_metrics(&refs, &dets, 0.5);
        let g = &m.per_class["glass"];
        assert_eq!(
            (g.n_ref, g.n_sys, g.tp, g.deletions, g.insertions),
            (3, 3, 1, 2, 2)
        );
        close(g.error_rate.unwrap(), 4.0 / 3.0);
        close(g.f1, 1.0 / 3.0);
        let d = &m.per_class["dog"];
        assert_eq!((d.tp, d.deletions, d.insertions), (1, 0, 1));
        close(d.error_rate.unwrap(), 1.0);
        close(d.f1, 2.0 / 3.0);
        close(m.class_average_f1, (1.0 / 3.0 + 2.0 / 3.0) / 2.0);
        close(m.class_average_error_rate, (4.0 / 3.0 + 1.0) / 2.0);
        // Overall: TP 2, no substitutions, D 2, I 3: ER 5/4, F1 4/9.
        let o = &m.overall;
        assert_eq!(
            (o.tp, o.substitutions, o.deletions, o.insertions),
            (2, 0, 2, 3)
        );
        close(o.error_rate.unwrap(), 1.25);
        close(o.f1, 4.0 / 9.0);
    }

    /// A detection of the wrong class at the right time is a substitution overall, and a
    /// deletion plus an insertion per class. References: f dog 2.0, f glass 6.0.
    /// Detections: f glass 2.3 (wrong class), f glass 6.5 (exactly at the collar: TP).
    #[test]
    fn substitutions_counted_overall_only() {
        let refs = [ev("f", "dog", 2.0), ev("f", "glass", 6.0)];
        let dets = [ev("f", "glass", 2.3), ev("f", "glass", 6.5)];
        let m = event_metrics(&refs, &dets, 0.5);
        let o = &m.overall;
        assert_eq!(
            (o.tp, o.substitutions, o.deletions, o.insertions),
            (1, 1, 0, 0)
        );
        close(o.error_rate.unwrap(), 0.5);
        let d = &m.per_class["dog"];
        assert_eq!((d.tp, d.deletions, d.insertions), (0, 1, 0));
        close(d.error_rate.unwrap(), 1.0);
        let g = &m.per_class["glass"];
        assert_eq!((g.tp, g.deletions, g.insertions), (1, 0, 1));
        close(g.error_rate.unwrap(), 1.0);
    }

    /// Greedy matching in list order would pair the detection at 1.4 with the reference at
    /// 1.0 and leave the reference at 1.8 unmatched; the maximum matching finds two pairs.
    #[test]
    fn matching_is_maximal_not_greedy() {
        let refs = [ev("f", "x", 1.0), ev("f", "x", 1.8)];
        let dets = [ev("f", "x", 1.4), ev("f", "x", 0.7)];
        let m = event_metrics(&refs, &dets, 0.5);
        assert_eq!(m.per_class["x"].tp, 2);
        close(m.per_class["x"].error_rate.unwrap(), 0.0);
        // Nothing detected: ER 1, F1 0; nothing referenced: ER undefined.
        let m = event_metrics(&refs, &[], 0.5);
        close(m.overall.error_rate.unwrap(), 1.0);
        close(m.overall.f1, 0.0);
        let m = event_metrics(&[], &dets, 0.5);
        assert_eq!(m.overall.error_rate, None);
        assert_eq!(m.overall.insertions, 2);
    }
}
