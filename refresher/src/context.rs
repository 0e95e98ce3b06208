//! What every part of the refresher shares: the Kubernetes client, the metrics, the way to EC2
//! and the re-admission budget.

use crate::cluster;
use crate::ec2::{Ec2Connect, SdkConnect};
use crate::error::Error;
use crate::heal::Budget;
use crate::metrics::Metrics;
use crate::plan::ObjectRef;
use kube::Client;
use std::sync::{Arc, Mutex};

/// `--max-readmissions-per-minute`'s default: client-go's default rate (5 requests a second).
pub const DEFAULT_READMISSIONS_PER_MINUTE: usize = 300;

/// Shared by the refresh, the healer and the watches.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub ec2: Arc<dyn Ec2Connect>,
    /// Re-admissions per minute, refresh and healer together.
    pub budget: Arc<Mutex<Budget>>,
}

impl Context {
    /// The AWS SDK for EC2 and the default re-admission budget.
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Self {
        Context {
            client,
            metrics,
            ec2: Arc::new(SdkConnect::default()),
            budget: Arc::new(Mutex::new(Budget::new(DEFAULT_READMISSIONS_PER_MINUTE))),
        }
    }

    pub fn with_ec2(mut self, ec2: Arc<dyn Ec2Connect>) -> Self {
        self.ec2 = ec2;
        self
    }

    pub fn with_readmissions_per_minute(mut self, per_minute: usize) -> Self {
        self.budget = Arc::new(Mutex::new(Budget::new(per_minute)));
        self
    }

    /// Counts `error` and puts it on `at` as a Warning Event (an Event that cannot be written
    /// is logged: it must not stop the work).
    pub async fn warn(&self, at: &ObjectRef, error: &Error) {
        self.metrics.error(error.metric_label());
        tracing::warn!(object = %at, error = %error, kind = error.metric_label(), "Warning Event");
        cluster::event(
            &self.client,
            at,
            "Warning",
            error.event_reason(),
            &error.event_message(),
        )
        .await;
    }
}
