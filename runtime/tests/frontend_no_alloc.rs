//! The frontend's hop loop never touches the heap: a counting global allocator watches this
//! thread while at least 10 000 hops are pushed.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::counted;

use hark::frontend::{Frontend, FrontendConfig};

#[test]
fn the_counter_sees_allocations() {
    // The negative control: without it, "0 allocations" could mean a blind counter.
    let (v, n) = counted(|| vec![1u8; 1000]);
    assert_eq!(v.len(), 1000);
    assert!(n >= 1);
}

#[test]
fn ten_thousand_hops_allocate_nothing() {
    let mut fe = Frontend::new(FrontendConfig::default()).unwrap();
    // 12 000 hops of a signal with NaNs in it, pushed in uneven chunks.
    let n = 160 * 12_000 + 240;
    let signal: Vec<f32> = (0..n)
        .map(|i| {
            if i % 9973 == 0 {
                f32::NAN
            } else {
                ((i as f32) * 0.0123).sin() * 0.4
            }
        })
        .collect();
    let mut checksum = 0.0f64;
    let (frames, allocations) = counted(|| {
        let mut frames = 0u64;
        for chunk in signal.chunks(173) {
            fe.push(chunk, |_, f| {
                frames += 1;
                checksum += f[10] as f64;
            });
        }
        frames
    });
    assert!(frames >= 10_000, "only {frames} hops");
    assert!(checksum.is_finite());
    assert_eq!(
        allocations, 0,
        "{allocations} heap operations in {frames} hops"
    );
}
