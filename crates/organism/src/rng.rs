//! The world's seeded random numbers (SplitMix64, as lm's sampler uses), so a seed fixes every
//! document, split and initial weight.

use lantern_lm::generate::SplitMix;

/// A seeded generator with the draws the world needs.
#[derive(Clone, Debug)]
pub struct Rng(SplitMix);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(SplitMix(seed))
    }

    /// An independent stream for `purpose` (so adding draws to one part of the world does not
    /// move another's).
    pub fn derive(seed: u64, purpose: &str) -> Self {
        let h = purpose.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let mut r = Self::new(seed ^ h);
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0.uniform()
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n - 1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}
