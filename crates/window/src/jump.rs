//! Jumps: large relative changes between consecutive ticks of a symbol.

use crate::spec::JumpSpec;

/// A relative change between two consecutive accepted ticks of a symbol (arrival order) whose
/// absolute value is strictly above the threshold. The sign is kept: a drop is negative.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jump {
    /// The previous accepted price.
    pub from: f64,
    /// This tick's price.
    pub to: f64,
    /// `(to - from) / from`, in percent.
    pub change_pct: f64,
    /// The configured threshold, in percent.
    pub threshold_pct: f64,
}

impl Jump {
    /// The jump from `from` to `to`, if there is one under `spec`. Both prices are valid
    /// (finite, positive), so the change is finite.
    #[inline(always)]
    pub(crate) fn detect(from: f64, to: f64, spec: JumpSpec) -> Option<Self> {
        let change = (to - from) / from;
        (change.abs() > spec.threshold()).then(|| Self {
            from,
            to,
            change_pct: change * 100.0,
            threshold_pct: spec.threshold_pct(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_beyond_the_threshold_sign_kept() {
        let spec = JumpSpec::default();
        assert_eq!(
            Jump::detect(100.0, 102.0, spec),
            None,
            "exactly 2 % is not a jump"
        );
        assert_eq!(Jump::detect(100.0, 98.0, spec), None);
        let up = Jump::detect(100.0, 102.5, spec).expect("2.5 % up");
        assert_eq!(
            (up.from, up.to, up.change_pct, up.threshold_pct),
            (100.0, 102.5, 2.5, 2.0)
        );
        let down = Jump::detect(100.0, 97.0, spec).expect("3 % down");
        assert_eq!(down.change_pct, -3.0);
        assert_eq!(
            Jump::detect(1e-8, 2e-8, spec).map(|j| j.change_pct),
            Some(100.0)
        );
        assert_eq!(Jump::detect(1e6, 1e6 + 1e-4, spec), None);
    }
}
