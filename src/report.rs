//! Evaluation reports as text: the confusion matrix, a per-class precision / recall / F1
//! table laid out like scikit-learn's `classification_report`, and the most confused pairs.
//! Pure functions from labels and predictions to numbers and strings; printing is the
//! caller's business.

/// `m[true][predicted]` counts for `k` classes.
pub fn confusion_matrix(labels: &[u8], predictions: &[u8], k: usize) -> Vec<Vec<usize>> {
    assert_eq!(
        labels.len(),
        predictions.len(),
        "confusion_matrix: {} labels, {} predictions",
        labels.len(),
        predictions.len()
    );
    let mut m = vec![vec![0; k]; k];
    for (&t, &p) in labels.iter().zip(predictions) {
        m[t as usize][p as usize] += 1;
    }
    m
}

/// Precision, recall, F1 and support of one class. A ratio with a zero denominator is 0,
/// as scikit-learn reports it (with its `zero_division` warning).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Scores of every class from a confusion matrix.
pub fn class_scores(m: &[Vec<usize>]) -> Vec<ClassScores> {
    let k = m.len();
    (0..k)
        .map(|c| {
            let tp = m[c][c];
            let predicted: usize = (0..k).map(|t| m[t][c]).sum();
            let support: usize = m[c].iter().sum();
            let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
            let f1 =
                if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
            ClassScores { precision, recall, f1, support }
        })
        .collect()
}

/// The table scikit-learn's `classification_report(digits=4)` prints.
pub fn classification_report(m: &[Vec<usize>], names: &[String]) -> String {
    let scores = class_scores(m);
    let total: usize = scores.iter().map(|s| s.support).sum();
    let correct: usize = (0..m.len()).map(|c| m[c][c]).sum();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0).max("weighted avg".len());
    let mut out =
        format!("{:>width$} {:>9} {:>9} {:>9} {:>9}\n\n", "", "precision", "recall", "f1-score", "support");
    let row = |name: &str, p: f64, r: f64, f: f64, s: usize| {
        format!("{name:>width$} {p:>9.4} {r:>9.4} {f:>9.4} {s:>9}\n")
    };
    for (name, s) in names.iter().zip(&scores) {
        out += &row(name, s.precision, s.recall, s.f1, s.support);
    }
    let k = scores.len().max(1) as f64;
    let mean = |f: fn(&ClassScores) -> f64| scores.iter().map(f).sum::<f64>() / k;
    let weighted = |f: fn(&ClassScores) -> f64| {
        scores.iter().map(|s| f(s) * s.support as f64).sum::<f64>() / (total.max(1) as f64)
    };
    out += "\n";
    out +=
        &format!("{:>width$} {:>9} {:>9} {:>9.4} {:>9}\n", "accuracy", "", "", ratio(correct, total), total);
    out += &row("macro avg", mean(|s| s.precision), mean(|s| s.recall), mean(|s| s.f1), total);
    out += &row("weighted avg", weighted(|s| s.precision), weighted(|s| s.recall), weighted(|s| s.f1), total);
    out
}

/// The confusion matrix as a table: rows are true classes (named), columns predicted class
/// indices.
pub fn confusion_table(m: &[Vec<usize>], names: &[String]) -> String {
    let label = |i: usize| format!("{i} {}", names[i]);
    let w0 = (0..m.len()).map(|i| label(i).len()).max().unwrap_or(0).max("true \\ predicted".len());
    let cell = m.iter().flatten().map(|v| v.to_string().len()).max().unwrap_or(1).max(4);
    let mut out = format!("{:<w0$}", "true \\ predicted");
    for j in 0..m.len() {
        out += &format!(" {j:>cell$}");
    }
    out += "\n";
    for (i, row) in m.iter().enumerate() {
        out += &format!("{:<w0$}", label(i));
        for v in row {
            out += &format!(" {v:>cell$}");
        }
        out += "\n";
    }
    out
}

/// The `n` largest off-diagonal counts, both directions of a pair added: `(a, b, count)`.
pub fn most_confused(m: &[Vec<usize>], n: usize) -> Vec<(usize, usize, usize)> {
    let mut pairs = Vec::new();
    for (a, row) in m.iter().enumerate() {
        for (b, col_b) in m.iter().enumerate().skip(a + 1) {
            pairs.push((a, b, row[b] + col_b[a]));
        }
    }
    pairs.sort_by(|x, y| y.2.cmp(&x.2).then((x.0, x.1).cmp(&(y.0, y.1))));
    pairs.into_iter().take(n).filter(|p| p.2 > 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_a_hand_computed_case() {
        // Three classes. True: 0 0 0 1 1 2; predicted: 0 0 1 1 2 2.
        let m = confusion_matrix(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 2, 2], 3);
        assert_eq!(m, vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]);
        let s = class_scores(&m);
        // Class 0: precision 2/2, recall 2/3, F1 = 2*(1*2/3)/(1+2/3) = 0.8.
        assert_eq!((s[0].precision, s[0].recall, s[0].support), (1.0, 2.0 / 3.0, 3));
        assert!((s[0].f1 - 0.8).abs() < 1e-12);
        // Class 1: precision 1/2, recall 1/2.
        assert_eq!((s[1].precision, s[1].recall, s[1].f1), (0.5, 0.5, 0.5));
        // Class 2: precision 1/2, recall 1/1, F1 = 2/3.
        assert!((s[2].f1 - 2.0 / 3.0).abs() < 1e-12);
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let r = classification_report(&m, &names);
        // sklearn prints: accuracy 0.6667 over 6; macro avg precision (1+.5+.5)/3 = 0.6667.
        assert!(r.contains("    accuracy                        0.6667         6"), "{r}");
        assert!(r.contains("weighted avg    0.7500    0.6667    0.6778         6"), "{r}");
        assert!(r.contains("   macro avg    0.6667    0.7222    0.6556         6"), "{r}");
        assert_eq!(most_confused(&m, 5), vec![(0, 1, 1), (1, 2, 1)]);
    }

    #[test]
    fn an_unpredicted_class_scores_zero_not_nan() {
        let m = confusion_matrix(&[0, 1], &[0, 0], 2);
        let s = class_scores(&m);
        assert_eq!((s[1].precision, s[1].recall, s[1].f1), (0.0, 0.0, 0.0));
    }
}
