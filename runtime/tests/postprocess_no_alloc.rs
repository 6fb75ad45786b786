//! Post-processing never touches the heap per hop: a counting global allocator watches this
//! thread while 20 000 hops of scores (with events of every kind in them) are processed.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::counted;

use hark::frontend::FrontendConfig;
use hark::level::LevelMeter;
use hark::model::ModelMetadata;
use hark::postprocess::{AfterMaxLength, PostprocessConfig, Postprocessor};

fn meta() -> ModelMetadata {
    let classes: Vec<String> = ["background", "glass_break", "dog_bark", "speech"]
        .map(String::from)
        .to_vec();
    ModelMetadata {
        format_version: 1,
        thresholds: classes[1..].iter().map(|c| (c.clone(), 0.5)).collect(),
        classes,
        background: Some("background".into()),
        frontend: FrontendConfig::default(),
        training: serde_json::Value::Null,
    }
}

#[test]
fn the_counter_sees_allocations() {
    let (v, n) = counted(|| vec![1u8; 1000]);
    assert_eq!(v.len(), 1000);
    assert!(n >= 1);
}

#[test]
fn twenty_thousand_hops_allocate_nothing() {
    for mode in [AfterMaxLength::Rearm, AfterMaxLength::Split] {
        let cfg = PostprocessConfig {
            max_length: 0.3,
            cooldown: 0.2,
            after_max_length: mode,
            ..PostprocessConfig::default()
        };
        let mut pp = Postprocessor::new(&meta(), &cfg, 0.01).unwrap();
        let mut level = LevelMeter::new(16_000, cfg.level_smoothing).unwrap();
        // Pulses of several lengths per class, long stretches, noise, NaNs.
        let mut state = 12345u64;
        let scores: Vec<[f32; 4]> = (0..20_000u64)
            .map(|t| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                let noise = (state >> 40) as f32 / (1u64 << 24) as f32 * 0.3;
                let g = if t % 97 < (t / 97) % 40 { 0.9 } else { noise };
                let d = if t % 1000 < 600 { 0.8 } else { 0.0 };
                let s = if t % 503 == 0 { f32::NAN } else { noise * 2.0 };
                [1.0 - g, g, d, s]
            })
            .collect();
        let hop: Vec<f32> = (0..160).map(|i| (i as f32 * 0.1).sin() * 0.3).collect();
        let ((events, capped, db), allocations) = counted(|| {
            let (mut events, mut capped, mut db) = (0usize, 0usize, 0.0f64);
            for s in &scores {
                for e in pp.push(s).unwrap() {
                    events += 1;
                    capped += e.capped as usize;
                }
                db += level.update(&hop) as f64;
            }
            events += pp.flush().len();
            (events, capped, db)
        });
        assert!(events > 100, "{mode:?}: only {events} events");
        assert!(capped > 10, "{mode:?}: only {capped} capped events");
        assert!(db.is_finite());
        assert_eq!(
            allocations,
            0,
            "{mode:?}: {allocations} heap operations in {} hops",
            scores.len()
        );
    }
}
