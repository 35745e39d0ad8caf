//! A small, serializable, deterministic PRNG: xoshiro256++ seeded through splitmix64.
//!
//! The whole state (four `u64` words and a cached normal deviate) serializes with serde, so a
//! training run can checkpoint its RNG and resume the exact same random stream.
//! Reference: Blackman & Vigna, "Scrambled linear pseudorandom number generators" (2021).

use serde::{Deserialize, Serialize};

/// xoshiro256++ generator. Not cryptographic; fast and statistically strong.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Rng {
    s: [u64; 4],
    /// Second Box–Muller deviate, handed out by the next `normal_f32` call.
    spare: Option<f32>,
}

/// One step of splitmix64: advances `state` and returns a well-mixed output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Combines several numbers (a base seed, an epoch, a chunk index, ...) into one seed, so that
/// each combination starts an unrelated stream: `derive_seed(&[seed, epoch])`.
pub fn derive_seed(parts: &[u64]) -> u64 {
    let mut h = 0x6a09_e667_f3bc_c908_u64;
    for &p in parts {
        let mut s = p;
        let mixed = splitmix64(&mut s);
        h ^= mixed;
        h = splitmix64(&mut h);
    }
    h
}

impl Rng {
    /// A generator whose 256-bit state is filled by splitmix64 from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s, spare: None }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 24 random bits.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal deviate by the Box–Muller transform:
    /// `r = sqrt(-2 ln u1)`, `θ = 2π u2`, giving `r cos θ` now and `r sin θ` on the next call.
    pub fn normal_f32(&mut self) -> f32 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // One draw feeds both uniforms: 32 bits for u1 in (0, 1) (tails reach 6.8σ),
        // 24 bits for u2 in [0, 1). f32 math: about twice as fast as f64 here.
        let bits = self.next_u64();
        let u1 = ((bits >> 32) as f32 + 0.5) * (1.0 / 4_294_967_296.0);
        let u2 = (bits & 0xff_ffff) as f32 * (1.0 / 16_777_216.0);
        let r = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (std::f32::consts::TAU * u2).sin_cos();
        self.spare = Some(r * sin);
        r * cos
    }

    /// Uniform integer in `[0, n)`, unbiased (Lemire's multiply-and-reject). Returns 0 for `n = 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// Fisher–Yates shuffle in place: every permutation equally likely.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A keyed pseudo-random permutation of `0..n` that needs no table: a balanced four-round
/// Feistel network on the smallest `2^(2h) ≥ n`, with cycle walking to stay inside `0..n`
/// (Black & Rogaway 2002, "Ciphers with arbitrary finite domains"). Each `apply` costs a few
/// hashes (the walk takes < 4 rounds of the network on average, as `2^(2h) < 4n`), so a reader
/// can visit a store of any size in a uniformly shuffled order without holding an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permutation {
    n: u64,
    half_bits: u32,
    keys: [u64; 4],
}

impl Permutation {
    /// The permutation of `0..n` for `seed`.
    pub fn new(n: u64, seed: u64) -> Self {
        let bits = 64 - n.saturating_sub(1).leading_zeros();
        let mut s = seed;
        Self {
            n,
            half_bits: bits.div_ceil(2),
            keys: std::array::from_fn(|_| splitmix64(&mut s)),
        }
    }

    /// Where `x` goes (`x < n`; panics otherwise, a caller bug).
    pub fn apply(&self, x: u64) -> u64 {
        assert!(x < self.n, "permutation of 0..{} applied to {x}", self.n);
        let mut y = self.feistel(x);
        while y >= self.n {
            y = self.feistel(y);
        }
        y
    }

    /// One pass of the network: `(L, R) → (R, L ⊕ F_k(R))` four times, `F_k(R)` the
    /// splitmix64 finaliser of `R ⊕ k` cut to `h` bits.
    fn feistel(&self, x: u64) -> u64 {
        let h = self.half_bits;
        let mask = (1u64 << h) - 1;
        let (mut l, mut r) = (x >> h, x & mask);
        for &k in &self.keys {
            let mut z = r ^ k;
            let f = splitmix64(&mut z) & mask;
            (l, r) = (r, l ^ f);
        }
        (l << h) | r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_matches_reference_output() {
        // Reference vector: state {1, 2, 3, 4}, first outputs from the authors' C code.
        let mut rng = Rng {
            s: [1, 2, 3, 4],
            spare: None,
        };
        let expected = [41943041_u64, 58720359, 3588806011781223, 3591011842654386];
        for e in expected {
            assert_eq!(rng.next_u64(), e);
        }
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(8);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(derive_seed(&[1, 2]), derive_seed(&[2, 1]));
    }

    #[test]
    fn serialized_state_resumes_the_same_stream() {
        let mut r = Rng::new(3);
        r.normal_f32(); // leaves a spare deviate in the state
        let json = serde_json::to_string(&r).unwrap();
        let mut back: Rng = serde_json::from_str(&json).unwrap();
        for _ in 0..5 {
            assert_eq!(r.normal_f32().to_bits(), back.normal_f32().to_bits());
            assert_eq!(r.next_u64(), back.next_u64());
        }
    }

    #[test]
    fn uniform_and_normal_moments() {
        let mut r = Rng::new(11);
        let n = 200_000;
        let (mut su, mut sn, mut sn2) = (0.0f64, 0.0f64, 0.0f64);
        for _ in 0..n {
            let u = r.uniform_f32();
            assert!((0.0..1.0).contains(&u));
            su += f64::from(u);
            let z = f64::from(r.normal_f32());
            sn += z;
            sn2 += z * z;
        }
        let n = n as f64;
        assert!((su / n - 0.5).abs() < 0.005, "uniform mean {}", su / n);
        assert!((sn / n).abs() < 0.01, "normal mean {}", sn / n);
        assert!((sn2 / n - 1.0).abs() < 0.02, "normal variance {}", sn2 / n);
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut r = Rng::new(5);
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            let v = r.below(7);
            counts[v as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "counts {counts:?}");
        }
        assert_eq!(r.below(1), 0);
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn permutation_is_a_bijection_that_follows_its_seed() {
        for n in [1u64, 2, 3, 5, 16, 17, 1000, 4097] {
            let p = Permutation::new(n, 3);
            let mut image: Vec<u64> = (0..n).map(|x| p.apply(x)).collect();
            let moved = image
                .iter()
                .enumerate()
                .filter(|(i, y)| *i as u64 != **y)
                .count();
            image.sort_unstable();
            assert_eq!(image, (0..n).collect::<Vec<_>>(), "n {n}");
            if n >= 16 {
                assert!(moved as u64 > n / 2, "n {n}: only {moved} moved");
            }
        }
        let a: Vec<u64> = (0..1000)
            .map(|x| Permutation::new(1000, 1).apply(x))
            .collect();
        let b: Vec<u64> = (0..1000)
            .map(|x| Permutation::new(1000, 2).apply(x))
            .collect();
        assert_ne!(a, b);
    }

    #[test]
    fn permutation_scatters_neighbours() {
        // A shuffle for training must not keep runs of neighbouring rows together: the rank
        // correlation of position and image is near 0 (its sd under independence is 1/√n),
        // and consecutive positions land far apart.
        let n = 10_000u64;
        let p = Permutation::new(n, 7);
        let img: Vec<f64> = (0..n).map(|x| p.apply(x) as f64).collect();
        let mean = (n - 1) as f64 / 2.0;
        let cov: f64 = img
            .iter()
            .enumerate()
            .map(|(i, y)| (i as f64 - mean) * (y - mean))
            .sum();
        let var: f64 = (0..n).map(|i| (i as f64 - mean).powi(2)).sum();
        let rho = cov / var;
        assert!(rho.abs() < 0.04, "rank correlation {rho}");
        let close = img
            .windows(2)
            .filter(|w| (w[0] - w[1]).abs() < 100.0)
            .count();
        // Independent draws land within 100 of each other with probability ≈ 0.02.
        assert!(close < 400, "{close} consecutive pairs within 100");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut r = Rng::new(9);
        let mut v: Vec<u32> = (0..1000).collect();
        r.shuffle(&mut v);
        assert_ne!(v, (0..1000).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..1000).collect::<Vec<_>>());
    }
}
