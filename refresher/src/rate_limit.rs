//! At most one scan per region per interval (10 minutes by default) for on-demand refreshes,
//! failures included, so that a failing AWS is not hammered.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RegionRateLimiter {
    min_interval: Duration,
    last: HashMap<String, Instant>,
}

impl RegionRateLimiter {
    pub fn new(min_interval: Duration) -> Self {
        RegionRateLimiter {
            min_interval,
            last: HashMap::new(),
        }
    }

    /// `Ok` and records the attempt if the region may be scanned now; else how long to wait.
    pub fn try_acquire(&mut self, region: &str, now: Instant) -> Result<(), Duration> {
        if let Some(at) = self.last.get(region) {
            let elapsed = now.saturating_duration_since(*at);
            if elapsed < self.min_interval {
                return Err(self.min_interval - elapsed);
            }
        }
        self.last.insert(region.to_string(), now);
        Ok(())
    }

    /// Records a scan made outside the limiter (the scheduled full refresh).
    pub fn record(&mut self, region: &str, now: Instant) {
        self.last.insert(region.to_string(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_scan_per_interval_per_region() {
        let t0 = Instant::now();
        let mut l = RegionRateLimiter::new(Duration::from_secs(600));
        assert!(l.try_acquire("eu-west-3", t0).is_ok());
        assert_eq!(
            l.try_acquire("eu-west-3", t0 + Duration::from_secs(60)),
            Err(Duration::from_secs(540))
        );
        assert!(
            l.try_acquire("us-east-1", t0).is_ok(),
            "regions are independent"
        );
        assert!(
            l.try_acquire("eu-west-3", t0 + Duration::from_secs(600))
                .is_ok()
        );
        l.record("ap-south-1", t0);
        assert!(
            l.try_acquire("ap-south-1", t0 + Duration::from_secs(1))
                .is_err()
        );
    }
}
