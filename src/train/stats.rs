//! Statistics over several runs' figures: the mean and the sample standard deviation. The
//! ensemble of several models is [`ensemble`](crate::train::ensemble), with the evaluation.

/// Mean and sample standard deviation (divisor `n - 1`, numpy's `ddof=1`) of `xs`; the
/// deviation is NaN for a single value.
///
/// # Panics
/// If `xs` is empty.
pub fn mean_and_sample_std(xs: &[f64]) -> (f64, f64) {
    assert!(!xs.is_empty(), "mean_and_sample_std of no values");
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let ss = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>();
    (mean, (ss / (n - 1.0)).sqrt())
}
