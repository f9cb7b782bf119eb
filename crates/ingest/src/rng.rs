//! The synthetic source's random numbers: SplitMix64 (Steele, Lea & Flood 2014) and
//! Box–Muller normals. Hand-written rather than the `rand` crates because the walk needs only
//! a seeded uniform and a normal, and a fixed algorithm here guarantees that a seed gives the
//! same ticks on every version and platform (rand's `StdRng` documents no such promise).

/// SplitMix64: 64 bits of state, passes BigCrush, one add and three xor-shift-multiplies.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
    /// The second normal of the last Box–Muller pair.
    spare_normal: Option<f64>,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare_normal: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (mean 0, variance 1), Box–Muller.
    pub fn next_normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        // 1 - u is in (0, 1]: ln never sees 0.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        self.spare_normal = Some(radius * angle.sin());
        radius * angle.cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // From the reference implementation (Vigna's splitmix64.c), seed 1234567.
        let mut rng = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
    }

    #[test]
    fn uniforms_stay_in_range_and_average_one_half() {
        let mut rng = SplitMix64::new(7);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let u = rng.next_f64();
            assert!((0.0..1.0).contains(&u));
            sum += u;
        }
        let mean = sum / f64::from(n);
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn normals_have_mean_zero_and_variance_one() {
        let mut rng = SplitMix64::new(42);
        let n = 200_000;
        let samples: Vec<f64> = (0..n).map(|_| rng.next_normal()).collect();
        let mean = samples.iter().sum::<f64>() / f64::from(n);
        let variance = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f64::from(n);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((variance - 1.0).abs() < 0.02, "variance {variance}");
        let beyond_two_sigma = samples.iter().filter(|x| x.abs() > 2.0).count();
        let share = beyond_two_sigma as f64 / f64::from(n);
        assert!(
            (share - 0.0455).abs() < 0.005,
            "share beyond 2 sigma {share}"
        );
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut a = SplitMix64::new(99);
        let mut b = SplitMix64::new(99);
        let mut c = SplitMix64::new(100);
        let first: Vec<f64> = (0..10).map(|_| a.next_normal()).collect();
        let second: Vec<f64> = (0..10).map(|_| b.next_normal()).collect();
        let other: Vec<f64> = (0..10).map(|_| c.next_normal()).collect();
        assert_eq!(first, second);
        assert_ne!(first, other);
    }
}
