//! Capped exponential back-off with jitter: a small pure unit, reusable by any layer.

use std::time::Duration;

/// Delays between reconnect attempts: `base * 2^n`, capped at `max`, each scaled by a
/// random factor in `[1 - jitter, 1]` so that many gateways do not retry in lock-step.
///
/// The unit is pure: the random factor is an argument of [`Backoff::next_delay_with`],
/// so tests are deterministic; [`Backoff::next_delay`] draws it from `rand`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: f64,
    attempt: u32,
}

impl Backoff {
    /// A back-off starting at `base`, never above `max`; `jitter` is clamped to `0.0..=1.0`.
    pub fn new(base: Duration, max: Duration, jitter: f64) -> Self {
        Self {
            base,
            max: max.max(base),
            jitter: jitter.clamp(0.0, 1.0),
            attempt: 0,
        }
    }

    /// How many delays were handed out since the last [`Backoff::reset`].
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Starts over at `base` (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay, with a fresh random jitter factor.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(rand::random::<f64>())
    }

    /// The next delay, with `unit` in `0.0..1.0` choosing where in the jitter range it lands
    /// (0.0: the full delay, towards 1.0: shortened by up to `jitter`).
    pub fn next_delay_with(&mut self, unit: f64) -> Duration {
        let exp = self.attempt.min(30);
        self.attempt = self.attempt.saturating_add(1);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        let factor = 1.0 - self.jitter * unit.clamp(0.0, 1.0);
        raw.mul_f64(factor)
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 30 s, with 20 % jitter.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(30), 0.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_base_until_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 0.0);
        let got: Vec<u128> = (0..6).map(|_| b.next_delay_with(0.5).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.attempt(), 6);
    }

    #[test]
    fn jitter_only_shortens_and_stays_within_its_range() {
        let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_secs(10), 0.25);
        assert_eq!(b.next_delay_with(0.0), Duration::from_millis(1000));
        b.reset();
        assert_eq!(b.next_delay_with(1.0), Duration::from_millis(750));
        for _ in 0..100 {
            b.reset();
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(750) && d <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn reset_starts_over_and_huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(5), 0.0);
        for _ in 0..1000 {
            assert!(b.next_delay_with(0.0) <= Duration::from_secs(5));
        }
        b.reset();
        assert_eq!(b.next_delay_with(0.0), Duration::from_millis(10));
    }

    #[test]
    fn max_below_base_is_raised_to_base() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1), 0.0);
        assert_eq!(b.next_delay_with(0.0), Duration::from_secs(2));
    }
}
