//! `DescribeRegions(AllRegions=true)` answers, cached 30 minutes per credentials identity, and the
//! region check made with them (upstream parity).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a DescribeRegions answer is trusted.
pub const REGION_CACHE_TTL: Duration = Duration::from_secs(30 * 60);

/// One region as DescribeRegions lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    pub name: String,
    /// `opt-in-not-required`, `opted-in` or `not-opted-in`.
    pub opt_in_status: Option<String>,
}

/// Why a region cannot be scanned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("region {0} is not a valid region")]
    Unknown(String),
    #[error("region {0} is not opted in")]
    NotOptedIn(String),
}

/// Checks a region against a DescribeRegions answer.
pub fn check(regions: &[RegionInfo], region: &str) -> Result<(), RegionError> {
    match regions.iter().find(|r| r.name == region) {
        None => Err(RegionError::Unknown(region.to_string())),
        Some(r) if r.opt_in_status.as_deref() == Some("not-opted-in") => {
            Err(RegionError::NotOptedIn(region.to_string()))
        }
        Some(_) => Ok(()),
    }
}

/// Cache keyed by credentials identity (access key id), with an explicit clock for tests.
#[derive(Debug)]
pub struct RegionCache {
    ttl: Duration,
    entries: HashMap<String, (Instant, Vec<RegionInfo>)>,
}

impl Default for RegionCache {
    fn default() -> Self {
        RegionCache::new(REGION_CACHE_TTL)
    }
}

impl RegionCache {
    pub fn new(ttl: Duration) -> Self {
        RegionCache {
            ttl,
            entries: HashMap::new(),
        }
    }

    pub fn get(&self, identity: &str, now: Instant) -> Option<&[RegionInfo]> {
        self.entries
            .get(identity)
            .filter(|(at, _)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(_, r)| r.as_slice())
    }

    pub fn insert(&mut self, identity: &str, regions: Vec<RegionInfo>, now: Instant) {
        self.entries.insert(identity.to_string(), (now, regions));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, status: &str) -> RegionInfo {
        RegionInfo {
            name: name.into(),
            opt_in_status: Some(status.into()),
        }
    }

    #[test]
    fn miss_hit_expiry_isolation() {
        let t0 = Instant::now();
        let mut c = RegionCache::default();
        assert!(c.get("AKIA1", t0).is_none(), "miss for a new key");
        c.insert("AKIA1", vec![r("eu-west-3", "opt-in-not-required")], t0);
        assert_eq!(
            c.get("AKIA1", t0 + Duration::from_secs(60)).unwrap().len(),
            1,
            "hit after set"
        );
        assert!(
            c.get("AKIA1", t0 + Duration::from_secs(30 * 60)).is_none(),
            "expired after 30 min"
        );
        assert!(c.get("AKIA2", t0).is_none(), "isolated between access keys");
    }

    #[test]
    fn region_checks() {
        let regions = [
            r("eu-west-3", "opt-in-not-required"),
            r("af-south-1", "not-opted-in"),
            r("me-south-1", "opted-in"),
        ];
        assert_eq!(check(&regions, "eu-west-3"), Ok(()));
        assert_eq!(check(&regions, "me-south-1"), Ok(()));
        assert_eq!(
            check(&regions, "af-south-1"),
            Err(RegionError::NotOptedIn("af-south-1".into()))
        );
        assert_eq!(
            check(&regions, "mars-1"),
            Err(RegionError::Unknown("mars-1".into()))
        );
        assert_eq!(
            RegionError::Unknown("x".into()).to_string(),
            "region x is not a valid region"
        );
    }
}
