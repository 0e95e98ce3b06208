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
    /// A scan recorded in the future (the latest start of a scan the previous leader recorded)
    /// waits until the interval has passed from then.
    pub fn wait(&self, region: &str, now: Instant) -> Option<Duration> {
        let until = *self.last.get(region)? + self.min_interval;
        (until > now).then(|| until - now)
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
        // recorded ahead: the interval runs from then
        l.record("us-west-2", t0 + Duration::from_secs(3));
        assert_eq!(l.wait("us-west-2", t0), Some(Duration::from_secs(603)));
        // a zero interval never limits (--once)
        let mut free = RegionRateLimiter::new(Duration::ZERO);
        free.record("x", t0);
        assert_eq!(free.wait("x", t0), None);
    }
}
