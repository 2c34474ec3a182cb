//! Per-channel bias: forward adds `b[c]` to every value of channel `c`; backward sums the
//! upstream gradient over everything but the channel. Layout `[N, C, S]` where `S = H*W` for
//! images and `S = 1` for dense features `[N, F]`.
//! Reference twins: [`bias_add_ref`], [`channel_sums_ref`].

use crate::simd::{axpy, load, Fx, LANES};

fn check(len: usize, n: usize, c: usize, s: usize, b: usize) {
    assert_eq!(len, n * c * s, "bias: buffer has {len} values, needs N*C*S = {}", n * c * s);
    assert_eq!(b, c, "bias: {b} biases for {c} channels");
}

/// `y[n, c, s] += b[c]`.
pub fn bias_add(y: &mut [f32], b: &[f32], n: usize, c: usize, s: usize) {
    check(y.len(), n, c, s, b.len());
    if n * c * s == 0 {
        return;
    }
    if s == 1 {
        for row in y.chunks_exact_mut(c) {
            axpy(1.0, b, row);
        }
    } else {
        for (i, plane) in y.chunks_exact_mut(s).enumerate() {
            let bc = b[i % c];
            plane.iter_mut().for_each(|v| *v += bc);
        }
    }
}

/// `db[c] += sum over n, s of dy[n, c, s]`, summed in a fixed order.
pub fn channel_sums(dy: &[f32], n: usize, c: usize, s: usize, db: &mut [f32]) {
    check(dy.len(), n, c, s, db.len());
    if n * c * s == 0 {
        return;
    }
    if s == 1 {
        for row in dy.chunks_exact(c) {
            axpy(1.0, row, db);
        }
    } else {
        for (i, plane) in dy.chunks_exact(s).enumerate() {
            db[i % c] += sum(plane);
        }
    }
}

/// Sum of a slice: lane-wise partial sums, then a fixed-order reduction.
fn sum(v: &[f32]) -> f32 {
    let mut acc = Fx::splat(0.0);
    let chunks = v.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        acc += load(c);
    }
    acc.reduce_add() + tail
}

/// Reference twin of [`bias_add`].
pub fn bias_add_ref(y: &mut [f32], b: &[f32], n: usize, c: usize, s: usize) {
    check(y.len(), n, c, s, b.len());
    for i in 0..n {
        for (ch, &bc) in b.iter().enumerate() {
            for k in 0..s {
                y[(i * c + ch) * s + k] += bc;
            }
        }
    }
}

/// Reference twin of [`channel_sums`] (accumulates in `f64`).
pub fn channel_sums_ref(dy: &[f32], n: usize, c: usize, s: usize, db: &mut [f32]) {
    check(dy.len(), n, c, s, db.len());
    for (ch, d) in db.iter_mut().enumerate() {
        let mut acc = 0.0f64;
        for i in 0..n {
            for k in 0..s {
                acc += dy[(i * c + ch) * s + k] as f64;
            }
        }
        *d += acc as f32;
    }
}
