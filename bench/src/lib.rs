//! Shared pieces of the benchmark binaries. Reading a process's CPU time,
//! memory and descriptors from `/proc` is connect-loadtest's (re-exported
//! here); the load itself comes from the connect-loadtest binary.
#![forbid(unsafe_code)]

pub use loadtest::procfs;

/// Median of a list (mean of the middle two when even); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}
