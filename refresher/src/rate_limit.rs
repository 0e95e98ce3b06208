//! At most one scan per region per interval (10 minutes by default), failures included, so that
//! a failing AWS is not hammered: on-demand and scheduled refreshes alike, and across replicas
//! (the leader records its scans in the Lease before it makes them, see `leader.rs`).

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

    /// Records a scan made at `at` (e.g. by the previous leader).
    pub fn record(&mut self, region: &str, at: Instant) {
        let slot = self.last.entry(region.to_string()).or_insert(at);
        if at > *slot {
            *slot = at;
        }
    }

    /// How long `region` must wait before it may be scanned; `None`: now.
    pub fn wait(&self, region: &str, now: Instant) -> Option<Duration> {
        let at = self.last.get(region)?;
        let elapsed = now.saturating_duration_since(*at);
        (elapsed < self.min_interval).then(|| self.min_interval - elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_scan_per_interval_per_region() {
        let t0 = Instant::now();
        let mut l = RegionRateLimiter::new(Duration::from_secs(600));
        assert_eq!(l.wait("eu-west-3", t0), None);
        l.record("eu-west-3", t0);
        assert_eq!(
            l.wait("eu-west-3", t0 + Duration::from_secs(60)),
            Some(Duration::from_secs(540))
        );
        assert_eq!(l.wait("us-east-1", t0), None, "regions are independent");
        assert_eq!(l.wait("eu-west-3", t0 + Duration::from_secs(600)), None);
        // the previous leader's older record does not move a newer one back
        l.record("eu-west-3", t0 - Duration::from_secs(100));
        assert_eq!(
            l.wait("eu-west-3", t0 + Duration::from_secs(4)),
            Some(Duration::from_secs(596))
        );
        // a zero interval never limits (--once)
        let mut free = RegionRateLimiter::new(Duration::ZERO);
        free.record("x", t0);
        assert_eq!(free.wait("x", t0), None);
    }
}
