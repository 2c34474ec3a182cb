//! The machine's measured FMA peak, so that benchmarks report "% of peak" against this CPU
//! rather than an assumed figure (AVX-512 cores differ: one or two FMA ports, different
//! clocks under 512-bit load; an AVX2 laptop is lower still).
//!
//! The calibration loop keeps [`CHAINS`] independent accumulators of the compiled SIMD width in
//! registers and updates each with a fused multiply-add per iteration: no loads, no stores, and
//! enough independent chains to cover the FMA latency (4 cycles) on two ports (8 in flight).
//! It runs on every thread of rayon's current pool at once, as the kernels do, and counts 2
//! FLOP per lane per FMA.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::simd::{Fx, LANES};

/// Independent accumulators: 12 vectors, more than the 8 that two FMA ports with a latency of
/// 4 cycles keep busy, fewer than the 16 (AVX2) or 32 (AVX-512) registers.
pub const CHAINS: usize = 12;

/// FMAs of one chain per timed call of the inner loop.
const INNER: usize = 1 << 14;

/// Runs the register-only FMA loop on one thread for about `time`; returns FLOP/s.
fn one_thread(time: Duration) -> f64 {
    let (a, b) = (Fx::splat(black_box(0.999_999)), Fx::splat(black_box(1e-7)));
    let mut acc = [Fx::splat(1.0); CHAINS];
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < time {
        for _ in 0..INNER {
            for c in acc.iter_mut() {
                *c = c.mul_add(a, b);
            }
        }
        calls += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    black_box(acc);
    (calls as f64 * INNER as f64 * CHAINS as f64 * LANES as f64 * 2.0) / secs
}

/// The FMA peak of all the threads of rayon's current pool together, FLOP/s, measured for
/// about `time` (0.2 s gives a stable figure on a quiet machine; the best of a few calls is
/// the machine's, lower ones mean it was busy).
pub fn measure_fma_peak(time: Duration) -> f64 {
    // Every thread of the pool at once (`broadcast`), so that the cores share clocks and
    // power as they do when the kernels run.
    rayon::broadcast(|_| one_thread(time)).into_iter().sum()
}
