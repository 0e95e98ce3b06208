//! At most one scan per region per interval (10 minutes by default), failures included, so that
//! a failing AWS is not hammered: on-demand and scheduled refreshes alike, and across replicas
//! (the leader records its scans in the Lease before it makes them, see `leader.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Which regions a refresh may scan now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Due {
    pub now: BTreeSet<String>,
    /// The others, with how long each still waits.
    pub postponed: BTreeMap<String, Duration>,
}

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

    /// The regions of `wanted` that may be scanned at `now`, recorded as tried then (a failed
    /// scan counts too: a failing AWS is not hammered).
    pub fn take_due<'a>(
        &mut self,
        wanted: impl IntoIterator<Item = &'a String>,
        now: Instant,
    ) -> Due {
        let mut due = Due::default();
        for region in wanted {
            match self.wait(region, now) {
                None => {
                    due.now.insert(region.clone());
                }
                Some(wait) => {
                    due.postponed.insert(region.clone(), wait);
                }
            }
        }
        for region in &due.now {
            self.record(region, now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_regions_due_are_recorded_and_the_others_say_how_long_they_wait() {
        let t0 = Instant::now();
        let mut l = RegionRateLimiter::new(Duration::from_secs(600));
        l.record("eu-west-1", t0);
        let wanted = ["eu-west-1".to_string(), "us-east-1".to_string()];
        let due = l.take_due(&wanted, t0 + Duration::from_secs(60));
        assert_eq!(due.now, BTreeSet::from(["us-east-1".to_string()]));
        assert_eq!(
            due.postponed,
            BTreeMap::from([("eu-west-1".to_string(), Duration::from_secs(540))])
        );
        let again = l.take_due(&wanted, t0 + Duration::from_secs(120));
        assert!(
            again.now.is_empty(),
            "a region just tried waits, failed or not"
        );
        assert_eq!(again.postponed.len(), 2);
    }

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
