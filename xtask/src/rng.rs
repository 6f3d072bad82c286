//! A small deterministic random number generator (SplitMix64) and the few distributions the
//! generator needs, written with basic IEEE operations only (`+ - * /` and `sqrt`, which are
//! correctly rounded everywhere) so the same seed gives the same bytes on every platform.

/// SplitMix64 (Steele, Lea, Flood 2014): 64 bits of state, passes BigCrush, trivially seedable.
#[derive(Clone, Debug)]
pub struct Rng(u64);

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 finaliser: a bijective 64-bit mix.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// An independent stream for one entity (`stream` names the kind, `index` the entity), so
    /// that a movie's row can be produced again byte for byte (duplicates) or out of order.
    pub fn derive(seed: u64, stream: u64, index: u64) -> Rng {
        Rng(mix(
            mix(seed ^ GOLDEN).wrapping_add(mix(stream.wrapping_mul(GOLDEN) ^ mix(index)))
        ))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`); Lemire's multiply-shift, bias below 2^-40 for our `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)` with 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `(0, 1]`.
    pub fn unit_open(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// Picks from `(weight, item)` pairs.
    pub fn weighted<'a, T>(&mut self, items: &'a [(u32, T)]) -> &'a T {
        let total: u64 = items.iter().map(|(w, _)| *w as u64).sum();
        let mut x = self.below(total);
        for (w, item) in items {
            if x < *w as u64 {
                return item;
            }
            x -= *w as u64;
        }
        &items[items.len() - 1].1
    }

    /// Exponential with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * ln(self.unit_open())
    }

    /// A skewed index in `0..n`: small indexes are drawn far more often (density ~ x^(1/k - 1)).
    pub fn skewed(&mut self, n: u64, k: u32) -> u64 {
        let u = self.unit();
        let mut x = u;
        for _ in 1..k {
            x *= u;
        }
        ((x * n as f64) as u64).min(n - 1)
    }
}

/// Natural logarithm from basic operations only (range reduction to `[1/sqrt2, sqrt2)` and
/// the atanh series), accurate to ~1e-16 relative: platform `ln` may differ in the last bit.
pub fn ln(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_finite());
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let mut s = 1.0 / 23.0;
    for k in [21.0, 19.0, 17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0] {
        s = 1.0 / k + t2 * s;
    }
    2.0 * t * s + e as f64 * std::f64::consts::LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_matches_std() {
        for x in [1e-16, 1e-5, 0.1, 0.5, 0.7, 1.0, 1.4, 2.0, 10.0, 12345.678] {
            assert!((ln(x) - x.ln()).abs() < 1e-13, "{x}: {} vs {}", ln(x), x.ln());
        }
    }

    #[test]
    fn streams_are_reproducible() {
        let a: Vec<u64> = (0..4).map(|_| Rng::derive(42, 1, 7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::derive(42, 1, 7).next_u64(), Rng::derive(42, 1, 8).next_u64());
        let mut r = Rng::derive(1, 0, 0);
        assert!((0..1000).all(|_| r.below(10) < 10));
    }
}
