//! Exponential backoff with jitter between reconnects. Pure but for the random draw.

use std::time::Duration;

use rand::Rng;

/// 100 ms doubling to 5 s, each delay drawn from [d/2, d].
pub struct Backoff {
    current: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    const START: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        Backoff { current: Self::START }
    }

    pub fn reset(&mut self) {
        self.current = Self::START;
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(Self::MAX);
        let half = base / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new();
        let first = backoff.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            assert!(backoff.next_delay() <= Backoff::MAX);
        }
        assert!(backoff.next_delay() >= Backoff::MAX / 2);
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
