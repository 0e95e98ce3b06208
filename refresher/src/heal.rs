//! Healing: every object whose capacity annotations differ from what the policy would write now
//! (missing because admission was bypassed, wrong, stale after a template or table change) is
//! re-admitted within seconds of the event that made it so.
//!
//! Pure state, fed by the watches (`heal_loop.rs` does the I/O):
//! - an object found wrong is re-admitted after a short debounce (further events within it are
//!   one re-admission);
//! - while it stays wrong (the policy server down, the policy not active for it) it is tried again
//!   with a per-object exponential backoff, and gets one Warning Event per backoff period from its
//!   second failed try on (the first may be the policy server's few-seconds cache of the table)
//!   once it has been wrong for `event_after`;
//! - when re-admissions of [`BREAKER`] different objects have failed in a row, the cause is taken
//!   to be shared (the policy server down): objects whose turn comes are held (their Event, no
//!   patch) and one of them is tried every `probe_interval` as a probe; when a probe heals, the
//!   cause is gone, and every waiting object is due at once;
//! - until a re-admission heals (at start, after a failure), [`BREAKER`] objects go first, the
//!   others once one of them is annotated;
//! - every re-admission (the refresh's too) takes a slot of one [`Budget`]: at most
//!   `per_minute` in any 60 seconds.

use crate::error::Error;
use crate::node_groups::{Census, Subject};
use crate::plan::ObjectRef;
use crate::policy_settings::Policy;
use crate::readmit::Decision;
use capa_core::capi;
use capa_core::table::Table;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

/// How healing paces itself.
#[derive(Debug, Clone, Copy)]
pub struct HealOptions {
    /// Events on one object within this window are served by one re-admission.
    pub debounce: Duration,
    /// Wait after the first failed try; doubled after each further one.
    pub backoff_base: Duration,
    /// The longest wait between two tries of one object.
    pub backoff_max: Duration,
    /// While objects wait in backoff, one of them is tried this often.
    pub probe_interval: Duration,
    /// No Warning Event for an object wrong for less than this (a blip of the policy server).
    pub event_after: Duration,
}

impl Default for HealOptions {
    fn default() -> Self {
        HealOptions {
            debounce: Duration::from_secs(1),
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            probe_interval: Duration::from_secs(5),
            event_after: Duration::from_secs(10),
        }
    }
}

/// At most `per_minute` re-admissions in any 60 seconds, for the refresher as a whole.
#[derive(Debug)]
pub struct Budget {
    per_minute: usize,
    taken: VecDeque<Instant>,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Budget {
    pub fn new(per_minute: usize) -> Self {
        Budget {
            per_minute: per_minute.max(1),
            taken: VecDeque::new(),
        }
    }

    pub fn per_minute(&self) -> usize {
        self.per_minute
    }

    fn forget_old(&mut self, now: Instant) {
        while self
            .taken
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            self.taken.pop_front();
        }
    }

    /// Takes a slot now, or says how long until one is free.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.forget_old(now);
        if self.taken.len() < self.per_minute {
            self.taken.push_back(now);
            return Ok(());
        }
        let oldest = self.taken.front().copied().unwrap_or(now);
        Err((oldest + MINUTE).saturating_duration_since(now))
    }

    /// When the next slot is free (`now` if one is).
    pub fn free_at(&mut self, now: Instant) -> Instant {
        self.forget_old(now);
        if self.taken.len() < self.per_minute {
            return now;
        }
        self.taken.front().map_or(now, |t| *t + MINUTE)
    }
}

/// What the watches report.
#[derive(Debug, Clone)]
pub enum Input {
    /// A Machine API MachineSet or a Cluster API MachineSet/MachineDeployment, as stored.
    Object(Value),
    Deleted(ObjectRef),
    /// An AWSMachineTemplate and its instance type (`None`: it has none).
    Template {
        namespace: String,
        name: String,
        instance_type: Option<String>,
    },
    TemplateDeleted {
        namespace: String,
        name: String,
    },
    /// The table the policy reads now (after a refresh).
    Table(Table),
    /// The policy's settings and scope (its ClusterAdmissionPolicy changed).
    Policy(Policy),
}

/// How a re-admission went.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// The object as stored after admission is right.
    Healed,
    /// Admitted, but still not what the policy would write.
    StillWrong,
    /// The API server refused the patch (the message says why).
    Failed(String),
}

/// One re-admission to make now.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub at: ObjectRef,
    pub patch: Value,
    /// A probe: tried ahead of its backoff to learn whether the cause is gone.
    pub probe: bool,
}

/// What an attempt led to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Healed after being wrong this long (since it was first seen wrong).
    pub healed_after: Option<Duration>,
    /// A Warning Event to write on the object.
    pub warning: Option<Error>,
}

#[derive(Debug, Clone)]
struct Entry {
    patch: Value,
    due: Instant,
    /// Tries that left it wrong, since it was first seen wrong (or its wanted state changed).
    failures: u32,
    since: Instant,
    in_flight: bool,
}

/// Where an object's instance type comes from.
enum Kind<'a> {
    MachineApi,
    /// The template's type, or why it has none.
    ClusterApi(Result<&'a str, &'a str>),
    NotOurs,
}

/// What the healer knows, and who waits for a re-admission.
#[derive(Debug)]
pub struct Healer {
    opts: HealOptions,
    /// `None` until the first refresh: nothing is judged before the table is known.
    table: Option<Table>,
    policy: Policy,
    objects: BTreeMap<ObjectRef, Value>,
    /// AWSMachineTemplates by (namespace, name): their instance type.
    templates: BTreeMap<(String, String), Option<String>>,
    queue: BTreeMap<ObjectRef, Entry>,
    last_probe: Option<Instant>,
    /// The objects whose re-admission left them wrong since the last one that healed: from
    /// [`BREAKER`] of them on, the cause is taken to be shared (the policy server down) and only
    /// probes are sent until one heals. One object the policy never annotates (outside its
    /// rules) only ever waits out its own backoff.
    failed_in_a_row: BTreeSet<ObjectRef>,
    /// The last re-admission healed its object: the next ones go out all at once. Otherwise
    /// (at start, after a failure) [`BREAKER`] go first, so a cause shared by all (the policy
    /// server down or not yet running new settings) costs that many patches, not one per object.
    proven: bool,
}

/// Distinct objects failing in a row after which only probes are sent.
pub const BREAKER: usize = 3;

/// What is due now.
#[derive(Debug, Default)]
pub struct Taken {
    /// Re-admissions to make.
    pub readmit: Vec<Due>,
    /// Warning Events of objects due but held back while re-admissions of others keep failing
    /// (only probes are sent): each hold counts as a failed try, and from the second on gives
    /// the Event of its backoff period.
    pub held: Vec<(ObjectRef, Error)>,
}

impl Healer {
    pub fn new(opts: HealOptions) -> Self {
        Healer {
            opts,
            table: None,
            policy: Policy::default(),
            objects: BTreeMap::new(),
            templates: BTreeMap::new(),
            queue: BTreeMap::new(),
            last_probe: None,
            failed_in_a_row: BTreeSet::new(),
            proven: false,
        }
    }

    /// Objects waiting for a re-admission.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Objects waiting that have failed at least once.
    pub fn failing(&self) -> usize {
        self.queue.values().filter(|e| e.failures > 0).count()
    }

    /// Takes in what a watch reported; returns the heal times of objects that became right.
    pub fn apply(&mut self, input: Input, now: Instant) -> Vec<Duration> {
        let mut healed = Vec::new();
        match input {
            Input::Object(obj) => {
                let at = ObjectRef::of(&obj);
                self.objects.insert(at.clone(), obj);
                healed.extend(self.rejudge(&at, now));
            }
            Input::Deleted(at) => {
                self.objects.remove(&at);
                self.queue.remove(&at);
            }
            Input::Template {
                namespace,
                name,
                instance_type,
            } => {
                self.templates
                    .insert((namespace.clone(), name.clone()), instance_type);
                healed.extend(self.rejudge_users(&namespace, &name, now));
            }
            Input::TemplateDeleted { namespace, name } => {
                self.templates.remove(&(namespace.clone(), name.clone()));
                healed.extend(self.rejudge_users(&namespace, &name, now));
            }
            Input::Table(table) => {
                self.table = Some(table);
                healed.extend(self.rejudge_all(now));
            }
            Input::Policy(policy) => {
                self.policy = policy;
                healed.extend(self.rejudge_all(now));
            }
        }
        healed
    }

    /// The policy's judgement of `obj` now; `None` before the first table, or for a Cluster API
    /// object whose template is not known (the refresh warns about those).
    pub fn judge(&self, obj: &Value) -> Option<Decision> {
        let table = self.table.as_ref()?;
        let judge = self.policy.judge(table);
        match self.instance_type(obj) {
            Kind::MachineApi => Some(judge.decide(obj, None)),
            Kind::ClusterApi(Ok(instance_type)) => Some(judge.decide(obj, Some(instance_type))),
            Kind::ClusterApi(Err(_)) => None,
            Kind::NotOurs => Some(Decision::Ignore),
        }
    }

    /// Where `obj`'s instance type comes from: its provider spec (Machine API), its
    /// AWSMachineTemplate as last watched (Cluster API), or nowhere the policy reads.
    fn instance_type(&self, obj: &Value) -> Kind<'_> {
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if !api_version.starts_with(capi::GROUP) {
            return Kind::MachineApi;
        }
        let Ok(tref) = capi::infrastructure_ref(obj) else {
            return Kind::NotOurs;
        };
        if !tref.is_aws_machine_template() {
            return Kind::NotOurs;
        }
        let key = (tref.namespace.to_string(), tref.name.to_string());
        Kind::ClusterApi(match self.templates.get(&key) {
            Some(Some(t)) => Ok(t.as_str()),
            Some(None) => Err("its AWSMachineTemplate has no instance type"),
            None => Err("its AWSMachineTemplate is not found"),
        })
    }

    /// Counts the node groups the healer knows (nothing before the first table).
    pub fn census(&self, census: &mut Census, now: SystemTime) {
        let Some(table) = self.table.as_ref() else {
            return;
        };
        let judge = self.policy.judge(table);
        let subjects =
            self.objects
                .iter()
                .filter_map(|(at, object)| match self.instance_type(object) {
                    Kind::NotOurs => None,
                    Kind::MachineApi => Some(Subject {
                        at,
                        object,
                        capi_type: None,
                    }),
                    Kind::ClusterApi(t) => Some(Subject {
                        at,
                        object,
                        capi_type: Some(t),
                    }),
                });
        census.update(subjects, judge, now);
    }

    fn rejudge_all(&mut self, now: Instant) -> Vec<Duration> {
        let all: Vec<ObjectRef> = self.objects.keys().cloned().collect();
        all.iter().filter_map(|at| self.rejudge(at, now)).collect()
    }

    fn rejudge_users(&mut self, namespace: &str, name: &str, now: Instant) -> Vec<Duration> {
        let users: Vec<ObjectRef> = self
            .objects
            .iter()
            .filter(|(at, obj)| {
                at.namespace == namespace
                    && capi::infrastructure_ref(obj).is_ok_and(|r| r.name == name)
            })
            .map(|(at, _)| at.clone())
            .collect();
        users
            .iter()
            .filter_map(|at| self.rejudge(at, now))
            .collect()
    }

    /// Queues or unqueues `at`; the heal time when it left the queue because it became right.
    fn rejudge(&mut self, at: &ObjectRef, now: Instant) -> Option<Duration> {
        let decision = self.objects.get(at).and_then(|obj| self.judge(obj));
        match decision {
            Some(Decision::Readmit(patch)) => {
                let debounce = self.opts.debounce;
                match self.queue.get_mut(at) {
                    // the same wanted state: its schedule (debounce or backoff) stands
                    Some(e) if e.patch == patch => {}
                    // another wanted state (a new type, table or setting): tried afresh
                    Some(e) => {
                        e.patch = patch;
                        e.failures = 0;
                        e.due = now + debounce;
                    }
                    None => {
                        self.queue.insert(
                            at.clone(),
                            Entry {
                                patch,
                                due: now + debounce,
                                failures: 0,
                                since: now,
                                in_flight: false,
                            },
                        );
                    }
                }
                None
            }
            // no table yet, or its template unknown: left as it is
            None => None,
            Some(Decision::UpToDate) => self
                .queue
                .remove(at)
                .map(|e| now.saturating_duration_since(e.since)),
            Some(Decision::Ignore | Decision::Unknown(_)) => {
                self.queue.remove(at);
                None
            }
        }
    }

    /// When something may be due next (`None`: nothing waits). The caller also waits for the
    /// budget.
    pub fn next_due(&self) -> Option<Instant> {
        let earliest = self
            .queue
            .values()
            .filter(|e| !e.in_flight)
            .map(|e| e.due)
            .min()?;
        let probe = self
            .last_probe
            .map(|p| p + self.opts.probe_interval)
            .filter(|_| self.failed_in_a_row.len() >= BREAKER)
            .filter(|_| self.queue.values().any(|e| !e.in_flight && e.failures > 0));
        Some(probe.map_or(earliest, |p| p.min(earliest)))
    }

    /// The re-admissions due at `now`, as many as `budget` allows, earliest first; a probe when
    /// none is due but objects wait in backoff. While re-admissions keep failing ([`BREAKER`]),
    /// due objects are held (not patched) and only probes go out.
    pub fn take_due(&mut self, now: Instant, budget: &mut Budget) -> Taken {
        let mut due: Vec<(Instant, ObjectRef)> = self
            .queue
            .iter()
            .filter(|(_, e)| !e.in_flight && e.due <= now)
            .map(|(at, e)| (e.due, at.clone()))
            .collect();
        due.sort();
        let mut out = Taken::default();
        let broken = self.failed_in_a_row.len() >= BREAKER;
        let limit = if self.proven { usize::MAX } else { BREAKER };
        for (_, at) in due {
            if broken {
                if let Some(warning) = self.failed(&at, None, now) {
                    out.held.push((at, warning));
                }
                continue;
            }
            if out.readmit.len() >= limit || budget.take(now).is_err() {
                break;
            }
            if let Some(e) = self.queue.get_mut(&at) {
                e.in_flight = true;
                out.readmit.push(Due {
                    at,
                    patch: e.patch.clone(),
                    probe: false,
                });
            }
        }
        let probe_due = self.failed_in_a_row.len() >= BREAKER
            && self
                .last_probe
                .is_none_or(|p| now >= p + self.opts.probe_interval);
        if out.readmit.is_empty() && probe_due {
            let waiting = self
                .queue
                .iter()
                .filter(|(_, e)| !e.in_flight && e.failures > 0)
                .min_by_key(|(_, e)| e.due)
                .map(|(at, _)| at.clone());
            if let Some(at) = waiting
                && budget.take(now).is_ok()
                && let Some(e) = self.queue.get_mut(&at)
            {
                e.in_flight = true;
                self.last_probe = Some(now);
                out.readmit.push(Due {
                    at,
                    patch: e.patch.clone(),
                    probe: true,
                });
            }
        }
        if out.readmit.iter().any(|d| !d.probe) {
            // a regular try tells as much as a probe would
            self.last_probe = Some(now);
        }
        out
    }

    /// Counts a failed try of `at` (`why`: the patch was refused; `None` with the breaker open:
    /// held back): its next try after the backoff, and from its second failure on the Warning
    /// Event text.
    fn failed(&mut self, at: &ObjectRef, why: Option<&Attempt>, now: Instant) -> Option<Error> {
        let opts = self.opts;
        let in_a_row = self.failed_in_a_row.len();
        let entry = self.queue.get_mut(at)?;
        entry.failures += 1;
        let wait = backoff(&opts, entry.failures);
        entry.due = now + wait;
        if entry.failures < 2 || now.saturating_duration_since(entry.since) < opts.event_after {
            return None;
        }
        let next = humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)));
        let likely = "is the policy server reachable (with failurePolicy Ignore, writes pass unannotated while it is down), and does the capa-annotator policy cover this object (active, its rules and namespaceSelector)?";
        Some(Error::NotHealed(match why {
            Some(Attempt::Failed(why)) => format!(
                "cannot re-submit it to the policy ({why}); tried {} times, next in {next}",
                entry.failures
            ),
            Some(_) => format!(
                "re-submitted {} times, but its capacity annotations are still not what the policy writes: {likely} Next try in {next}",
                entry.failures
            ),
            None => format!(
                "its capacity annotations are not what the policy writes, and the last {in_a_row} objects re-submitted to the policy were not annotated either: {likely} Re-submitted once a probe succeeds; next check in {next}"
            ),
        }))
    }

    /// Records how a re-admission went.
    pub fn attempted(&mut self, due: &Due, attempt: Attempt, now: Instant) -> Outcome {
        if attempt == Attempt::Healed {
            self.failed_in_a_row.clear();
            self.proven = true;
        } else if !due.probe {
            self.failed_in_a_row.insert(due.at.clone());
            self.proven = false;
        }
        let Some(entry) = self.queue.get_mut(&due.at) else {
            // healed (or deleted) meanwhile, as a watch event told
            return Outcome::default();
        };
        entry.in_flight = false;
        if attempt == Attempt::Healed {
            let since = entry.since;
            self.queue.remove(&due.at);
            if due.probe {
                // the cause is gone: whoever waits in backoff is due now
                for e in self.queue.values_mut() {
                    e.due = e.due.min(now);
                }
            }
            return Outcome {
                healed_after: Some(now.saturating_duration_since(since)),
                warning: None,
            };
        }
        if due.probe {
            // the cause stays; the object keeps its own schedule
            return Outcome::default();
        }
        Outcome {
            healed_after: None,
            warning: self.failed(&due.at, Some(&attempt), now),
        }
    }
}

/// The wait after the `failures`-th failed try.
fn backoff(opts: &HealOptions, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    opts.backoff_base
        .saturating_mul(factor)
        .min(opts.backoff_max)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use capa_core::settings::Settings;
    use capa_core::table::TypeName;
    use capa_core::{Arch, Capacity};
    use serde_json::json;

    fn table() -> Table {
        let mut t = Table::new();
        t.insert(
            TypeName::parse("m5.xlarge").unwrap(),
            Capacity {
                vcpu: 4,
                memory_mib: 16384,
                gpu: 0,
                arch: Arch::Amd64,
                gpu_vendor: None,
            },
        );
        t
    }

    fn ms(name: &str, annotations: Value) -> Value {
        json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
               "metadata": {"namespace": "openshift-machine-api", "name": name, "annotations": annotations},
               "spec": {"template": {"spec": {"providerSpec": {"value": {
                   "kind": "AWSMachineProviderConfig", "instanceType": "m5.xlarge"}}}}}})
    }

    fn right() -> Value {
        json!({"machine.openshift.io/vCPU": "4", "machine.openshift.io/memoryMb": "16384",
               "machine.openshift.io/GPU": "0",
               "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=amd64"})
    }

    fn md(name: &str, template: &str, annotations: Value) -> Value {
        json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineDeployment",
               "metadata": {"namespace": "capi", "name": name, "annotations": annotations},
               "spec": {"clusterName": "c", "template": {"spec": {"clusterName": "c",
                   "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2",
                       "kind": "AWSMachineTemplate", "name": template}}}}})
    }

    fn healer() -> Healer {
        Healer::new(HealOptions::default())
    }

    /// Events from the second failure on, however soon.
    fn eager() -> Healer {
        Healer::new(HealOptions {
            event_after: Duration::ZERO,
            ..HealOptions::default()
        })
    }

    #[test]
    fn a_right_object_is_not_queued_and_a_wrong_one_is_due_after_the_debounce() {
        let t0 = Instant::now();
        let mut h = healer();
        h.apply(Input::Table(table()), t0);
        h.apply(Input::Object(ms("ok", right())), t0);
        assert_eq!(h.pending(), 0);
        h.apply(Input::Object(ms("bare", json!({}))), t0);
        assert_eq!(h.pending(), 1);
        let mut budget = Budget::new(300);
        assert!(h.take_due(t0, &mut budget).readmit.is_empty(), "debounced");
        // more events within the debounce: still one re-admission
        h.apply(
            Input::Object(ms("bare", json!({"x": "y"}))),
            t0 + Duration::from_millis(500),
        );
        assert_eq!(h.next_due(), Some(t0 + Duration::from_secs(1)));
        let due = h.take_due(t0 + Duration::from_secs(1), &mut budget).readmit;
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].at.name, "bare");
        assert!(!due[0].probe);
        assert_eq!(
            due[0].patch["metadata"]["annotations"]["capa-annotator.io/table-entry"],
            "m5.xlarge vcpu=4 memoryMiB=16384 gpu=0 arch=amd64"
        );
        // in flight: not handed out twice
        assert!(
            h.take_due(t0 + Duration::from_secs(2), &mut budget)
                .readmit
                .is_empty()
        );
        let out = h.attempted(&due[0], Attempt::Healed, t0 + Duration::from_secs(2));
        assert_eq!(out.healed_after, Some(Duration::from_secs(2)));
        assert_eq!(h.pending(), 0);
    }

    #[test]
    fn nothing_is_judged_before_the_first_table() {
        let t0 = Instant::now();
        let mut h = healer();
        h.apply(Input::Object(ms("bare", json!({}))), t0);
        assert_eq!(h.pending(), 0);
        h.apply(Input::Table(table()), t0);
        assert_eq!(h.pending(), 1, "judged when the table arrives");
    }

    #[test]
    fn an_object_that_becomes_right_by_itself_leaves_the_queue() {
        let t0 = Instant::now();
        let mut h = healer();
        h.apply(Input::Table(table()), t0);
        h.apply(Input::Object(ms("a", json!({}))), t0);
        let healed = h.apply(Input::Object(ms("a", right())), t0 + Duration::from_secs(3));
        assert_eq!(healed, vec![Duration::from_secs(3)]);
        assert_eq!(h.pending(), 0);
        h.apply(Input::Object(ms("b", json!({}))), t0);
        h.apply(Input::Deleted(ObjectRef::of(&ms("b", json!({})))), t0);
        assert_eq!(h.pending(), 0);
    }

    #[test]
    fn failures_back_off_exponentially_and_warn_once_per_period_from_the_second() {
        let mut t = Instant::now();
        let mut h = healer();
        let mut budget = Budget::new(300);
        h.apply(Input::Table(table()), t);
        h.apply(Input::Object(ms("a", json!({}))), t);
        t += Duration::from_secs(1);
        let mut waits = Vec::new();
        let mut warnings = 0;
        for _ in 0..10 {
            let taken = h.take_due(t, &mut budget);
            // one object failing is no shared cause: always tried itself, never held
            assert!(taken.held.is_empty());
            assert_eq!(taken.readmit.len(), 1, "due at {waits:?}");
            assert!(!taken.readmit[0].probe);
            let warning = h
                .attempted(&taken.readmit[0], Attempt::StillWrong, t)
                .warning;
            warnings += usize::from(warning.is_some());
            if let Some(w) = &warning {
                assert_eq!(w.metric_label(), "not_healed");
                assert!(w.event_message().starts_with("capa-refresher: "), "{w}");
                assert!(
                    w.to_string().contains("is the policy server reachable"),
                    "{w}"
                );
            }
            let next = h.next_due().unwrap();
            // a watch event of our own patch does not pull it forward
            h.apply(
                Input::Object(ms("a", json!({"capa-annotator.io/table-entry": "x"}))),
                t,
            );
            assert_eq!(h.next_due(), Some(next));
            waits.push(next - t);
            t = next;
        }
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        // failures at 0, 2, 6, 14, … s after the first try: from the fourth (wrong for 15 s)
        assert_eq!(warnings, 7, "one per failed try once wrong for 10 s");
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let o = HealOptions::default();
        let secs: Vec<u64> = (1..=10).map(|f| backoff(&o, f).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(&o, u32::MAX), o.backoff_max);
    }

    #[test]
    fn a_healed_probe_makes_every_waiting_object_due() {
        let mut t = Instant::now();
        let mut h = healer();
        let mut budget = Budget::new(1000);
        h.apply(Input::Table(table()), t);
        for i in 0..5 {
            h.apply(Input::Object(ms(&format!("m{i}"), json!({}))), t);
        }
        // the policy server is down: tries fail, then only probes go out (the breaker)
        t += Duration::from_secs(1);
        for _ in 0..5 {
            for d in h.take_due(t, &mut budget).readmit {
                h.attempted(&d, Attempt::StillWrong, t);
            }
            t += Duration::from_secs(16);
        }
        assert_eq!(h.failing(), 5);
        // back: the next probe heals, and all others are due at once
        t = h.next_due().unwrap();
        let due = h.take_due(t, &mut budget).readmit;
        let probe = due.iter().find(|d| d.probe).cloned();
        let probe = probe.unwrap_or_else(|| due[0].clone());
        let out = h.attempted(&probe, Attempt::Healed, t);
        assert!(out.healed_after.is_some());
        for d in &due {
            if d != &probe {
                h.attempted(d, Attempt::Healed, t);
            }
        }
        let rest = h.take_due(t, &mut budget).readmit;
        assert_eq!(rest.len() + due.len(), 5, "{rest:?} {due:?}");
        assert!(rest.iter().all(|d| !d.probe));
    }

    #[test]
    fn a_failed_probe_does_not_change_the_objects_schedule() {
        let mut t = Instant::now();
        let mut h = eager();
        let mut budget = Budget::new(1000);
        h.apply(Input::Table(table()), t);
        for name in ["a", "b", "c"] {
            h.apply(Input::Object(ms(name, json!({}))), t);
        }
        t += Duration::from_secs(1);
        // three objects fail: a shared cause, the breaker opens; they wait 2 s
        for d in h.take_due(t, &mut budget).readmit {
            assert!(!d.probe);
            h.attempted(&d, Attempt::StillWrong, t);
        }
        assert_eq!(h.failing(), 3);
        // their turn: held, not patched; their second failure gives the Event
        t += Duration::from_secs(2);
        let taken = h.take_due(t, &mut budget);
        assert!(taken.readmit.is_empty(), "{taken:?}");
        assert_eq!(taken.held.len(), 3);
        assert!(
            taken.held[0]
                .1
                .to_string()
                .contains("were not annotated either"),
            "{taken:?}"
        );
        // 5 s after the last try, one of them is tried as a probe
        assert_eq!(h.next_due(), Some(t + Duration::from_secs(3)));
        t += Duration::from_secs(3);
        let d = h.take_due(t, &mut budget).readmit;
        assert_eq!(d.len(), 1);
        assert!(d[0].probe);
        let out = h.attempted(&d[0], Attempt::StillWrong, t);
        assert!(
            out.healed_after.is_none() && out.warning.is_none(),
            "no Event for a probe"
        );
        assert_eq!(h.failing(), 3);
        // the held ones wait 4 s from their hold; the next probe 5 s from this one
        assert_eq!(h.next_due(), Some(t + Duration::from_secs(1)));
    }

    #[test]
    fn a_few_go_first_until_one_heals() {
        let t0 = Instant::now();
        let mut h = healer();
        let mut budget = Budget::new(1000);
        h.apply(Input::Table(table()), t0);
        for i in 0..10 {
            h.apply(Input::Object(ms(&format!("m{i}"), json!({}))), t0);
        }
        let t = t0 + Duration::from_secs(1);
        // the policy server is down: three patches, not ten
        let first = h.take_due(t, &mut budget).readmit;
        assert_eq!(first.len(), BREAKER);
        for d in &first {
            h.attempted(d, Attempt::StillWrong, t);
        }
        let taken = h.take_due(t, &mut budget);
        assert!(taken.readmit.is_empty(), "the breaker holds the others");
        assert!(taken.held.is_empty(), "no Event at a first failure");
        assert_eq!(h.failing(), 10);
        // back: a healed object lets the rest go at once
        let mut h = healer();
        h.apply(Input::Table(table()), t0);
        for i in 0..10 {
            h.apply(Input::Object(ms(&format!("m{i}"), json!({}))), t0);
        }
        let first = h.take_due(t, &mut budget).readmit;
        assert_eq!(first.len(), BREAKER);
        h.attempted(&first[0], Attempt::Healed, t);
        assert_eq!(h.take_due(t, &mut budget).readmit.len(), 7);
    }

    #[test]
    fn one_object_the_policy_never_annotates_is_not_probed() {
        let mut t = Instant::now();
        let mut h = healer();
        let mut budget = Budget::new(1000);
        h.apply(Input::Table(table()), t);
        h.apply(Input::Object(ms("outside-the-rules", json!({}))), t);
        t += Duration::from_secs(1);
        let mut tries = 0;
        let end = t + Duration::from_secs(3600);
        while t < end {
            for d in h.take_due(t, &mut budget).readmit {
                assert!(!d.probe, "probed at {tries} tries");
                tries += 1;
                h.attempted(&d, Attempt::StillWrong, t);
            }
            t = h.next_due().unwrap();
        }
        // at 0, 2, 6, … 510 s (backoff 2 s doubling to 256 s), then every 5 min: 19 tries in an
        // hour, not one every 5 s
        assert_eq!(tries, 19);
    }

    #[test]
    fn a_refused_patch_names_why() {
        let mut t = Instant::now();
        let mut h = eager();
        let mut budget = Budget::new(1000);
        h.apply(Input::Table(table()), t);
        h.apply(Input::Object(ms("a", json!({}))), t);
        t += Duration::from_secs(1);
        let mut last = None;
        for _ in 0..2 {
            let d = h.take_due(t, &mut budget).readmit;
            last = h
                .attempted(&d[0], Attempt::Failed("forbidden: patch".into()), t)
                .warning;
            t = h.next_due().unwrap();
        }
        let w = last.unwrap().to_string();
        assert!(
            w.contains("cannot re-submit it to the policy (forbidden: patch)"),
            "{w}"
        );
    }

    #[test]
    fn a_new_wanted_state_is_tried_afresh() {
        let mut t = Instant::now();
        let mut h = healer();
        let mut budget = Budget::new(1000);
        h.apply(Input::Table(table()), t);
        h.apply(Input::Object(ms("a", json!({}))), t);
        t += Duration::from_secs(1);
        for _ in 0..4 {
            let d = h.take_due(t, &mut budget).readmit;
            h.attempted(&d[0], Attempt::StillWrong, t);
            t = h.next_due().unwrap();
        }
        // the table now says 8 vCPUs: a different patch, due after the debounce
        let mut bigger = table();
        bigger.insert(
            TypeName::parse("m5.xlarge").unwrap(),
            Capacity {
                vcpu: 8,
                memory_mib: 16384,
                gpu: 0,
                arch: Arch::Amd64,
                gpu_vendor: None,
            },
        );
        h.apply(Input::Table(bigger), t);
        assert_eq!(h.next_due(), Some(t + Duration::from_secs(1)));
        assert_eq!(h.failing(), 0);
    }

    #[test]
    fn cluster_api_objects_are_judged_by_their_template_and_follow_its_changes() {
        let t0 = Instant::now();
        let mut h = healer();
        h.apply(Input::Table(table()), t0);
        h.apply(Input::Object(md("md", "tpl", json!({}))), t0);
        assert_eq!(h.pending(), 0, "its template is not known yet");
        h.apply(
            Input::Template {
                namespace: "capi".into(),
                name: "tpl".into(),
                instance_type: Some("m5.xlarge".into()),
            },
            t0,
        );
        assert_eq!(h.pending(), 1);
        let capi_right = json!({"capacity.cluster-autoscaler.kubernetes.io/cpu": "4",
            "capacity.cluster-autoscaler.kubernetes.io/memory": "16384Mi",
            "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=amd64"});
        let healed = h.apply(Input::Object(md("md", "tpl", capi_right.clone())), t0);
        assert_eq!(healed.len(), 1);
        assert_eq!(h.pending(), 0);
        // a template of another type: wrong again
        h.apply(
            Input::Template {
                namespace: "capi".into(),
                name: "tpl".into(),
                instance_type: Some("zz9.unknown".into()),
            },
            t0,
        );
        assert_eq!(
            h.pending(),
            0,
            "unknown type: the refresh warns, healing cannot help"
        );
        // templates of another namespace do not count
        h.apply(Input::Object(md("md2", "tpl2", json!({}))), t0);
        h.apply(
            Input::Template {
                namespace: "other".into(),
                name: "tpl2".into(),
                instance_type: Some("m5.xlarge".into()),
            },
            t0,
        );
        assert_eq!(h.pending(), 0);
    }

    #[test]
    fn settings_decide_what_is_right() {
        let t0 = Instant::now();
        let mut h = healer();
        h.apply(Input::Table(Table::new()), t0);
        let custom = json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
            "metadata": {"namespace": "n", "name": "custom", "annotations": {}},
            "spec": {"template": {"spec": {"providerSpec": {"value": {
                "kind": "AWSMachineProviderConfig", "instanceType": "zz9.custom"}}}}}});
        h.apply(Input::Object(custom), t0);
        assert_eq!(h.pending(), 0, "unknown without the overrides");
        let settings = Settings::from_value(&json!({"overrides": {"zz9.custom":
            {"vcpu": 2, "memoryMiB": 4096, "gpu": 0, "arch": "arm64"}}}))
        .unwrap();
        h.apply(
            Input::Policy(Policy {
                settings,
                scope: None,
            }),
            t0,
        );
        assert_eq!(h.pending(), 1, "known from the overrides: re-admitted");
    }

    /// An object the policy does not see (outside its namespaceSelector, or a kind its rules
    /// lack) is not re-submitted: no patch the policy would never answer, no Event.
    #[test]
    fn objects_the_policy_does_not_see_are_left_alone() {
        let t0 = Instant::now();
        let mut h = healer();
        h.apply(Input::Table(table()), t0);
        let spec = json!({"rules": [{"apiGroups": ["machine.openshift.io"], "apiVersions": ["v1beta1"],
            "resources": ["machinesets"], "operations": ["CREATE", "UPDATE"]}],
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                "operator": "In", "values": ["openshift-machine-api"]}]}});
        h.apply(
            Input::Policy(Policy {
                settings: Settings::default(),
                scope: Some(capa_core::scope::Scope::of_policy(&spec, "kubewarden")),
            }),
            t0,
        );
        let mut elsewhere = ms("elsewhere", json!({}));
        elsewhere["metadata"]["namespace"] = json!("team-a");
        h.apply(Input::Object(elsewhere), t0);
        h.apply(
            Input::Template {
                namespace: "capi".into(),
                name: "t".into(),
                instance_type: Some("m5.xlarge".into()),
            },
            t0,
        );
        h.apply(Input::Object(md("md", "t", json!({}))), t0);
        assert_eq!(h.pending(), 0, "neither is seen by the policy");
        h.apply(Input::Object(ms("seen", json!({}))), t0);
        assert_eq!(h.pending(), 1);
        let mut census = Census::default();
        h.census(&mut census, SystemTime::now());
        assert_eq!(
            census.counts.values().sum::<usize>(),
            1,
            "{:?}",
            census.counts
        );
    }

    #[test]
    fn a_storm_of_a_thousand_wrong_objects_keeps_to_the_cap() {
        let t0 = Instant::now();
        let mut h = healer();
        let per_minute = 300;
        let mut budget = Budget::new(per_minute);
        h.apply(Input::Table(table()), t0);
        for i in 0..1000 {
            h.apply(Input::Object(ms(&format!("m{i:04}"), json!({}))), t0);
        }
        // a driver that asks as often as it likes (every 100 ms) and heals what it is handed
        let mut times = Vec::new();
        let mut t = t0;
        while h.pending() > 0 && t < t0 + Duration::from_secs(600) {
            for d in h.take_due(t, &mut budget).readmit {
                times.push(t);
                h.attempted(&d, Attempt::Healed, t);
            }
            t += Duration::from_millis(100);
        }
        assert_eq!(times.len(), 1000, "all healed");
        for (i, start) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|x| x.duration_since(*start) < MINUTE)
                .count();
            assert!(
                in_window <= per_minute,
                "{in_window} re-admissions within a minute"
            );
        }
        // and not slower than the cap: 1,000 at 300 a minute is done in the 4th minute
        let last = times.last().unwrap().duration_since(t0);
        assert!(last < Duration::from_secs(181 + 1), "{last:?}");
    }

    #[test]
    fn the_census_counts_what_the_healer_knows() {
        use crate::node_groups::{Api, State};
        let t0 = Instant::now();
        let mut h = healer();
        let mut census = Census::default();
        h.apply(Input::Object(ms("bare", json!({}))), t0);
        h.census(&mut census, SystemTime::now());
        assert_eq!(
            census.count(Api::MachineApi, State::Missing),
            0,
            "no table yet"
        );
        h.apply(Input::Table(table()), t0);
        h.apply(Input::Object(ms("ok", right())), t0);
        h.apply(Input::Object(md("md", "absent", json!({}))), t0);
        h.census(&mut census, SystemTime::now());
        assert_eq!(census.count(Api::MachineApi, State::Missing), 1);
        assert_eq!(census.count(Api::MachineApi, State::Right), 1);
        assert_eq!(census.count(Api::ClusterApi, State::Unreadable), 1);
    }

    #[test]
    fn the_budget_says_when_a_slot_is_free() {
        let t0 = Instant::now();
        let mut b = Budget::new(2);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0 + Duration::from_secs(10)).is_ok());
        assert_eq!(
            b.take(t0 + Duration::from_secs(20)),
            Err(Duration::from_secs(40))
        );
        assert_eq!(b.free_at(t0 + Duration::from_secs(20)), t0 + MINUTE);
        assert!(b.take(t0 + MINUTE).is_ok());
    }
}
