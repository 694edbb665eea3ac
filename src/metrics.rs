//! Prometheus metrics and the health answer of `certrotd run` (`[metrics] listen`).
//!
//! Owns: the process's one metric registry ([`global`]), what each series means, the
//! label values (kebab-case error kinds, API `Code`s that passed `untrusted::code`, domain
//! names from the configuration, lineage ids from the scan — never free text), the
//! [`Health`] the main loop keeps up to date, and the HTTP listener that serves both
//! (`serve`, on hyper like the emulator).
//!
//! Series (names follow cert-manager's `certmanager_certificate_expiration_timestamp_seconds`
//! and x509-certificate-exporter's conventions):
//! - `certrotd_domain_up_to_date{domain,product}`: 1 when the domain serves its best valid
//!   certificate (as recorded; with read-back on, confirmed), else 0;
//! - `certrotd_domain_certificate_expiry_timestamp_seconds{domain,product}`: notAfter of what
//!   the domain serves, as recorded (absent when nothing is recorded);
//! - `certrotd_certificate_expiry_timestamp_seconds{lineage}`, `certrotd_certificate_valid{lineage}`;
//! - `certrotd_api_requests_total{action,result}`: every HTTP attempt (a retry counts again);
//!   `result` is `ok`, the API's error `Code`, `transport` (no answer), or the error's kind
//!   when an answer carried no `Code`;
//! - `certrotd_push_failures_total{kind}`, `certrotd_api_retries_total{target}`,
//!   `certrotd_pending_domains`, `certrotd_pass_duration_seconds`,
//!   `certrotd_passes_total{result}`, `certrotd_torn_lineages`,
//!   `certrotd_credentials_available`, `certrotd_last_successful_pass_timestamp_seconds`,
//!   `certrotd_build_info{version}`.
//!
//! Invariants: no series carries a secret or a free text; per-domain and per-lineage series
//! are replaced whole after each pass (a domain or lineage that went away disappears);
//! the number of distinct `result` labels is capped ([`MAX_RESULTS`]), so a server inventing
//! codes cannot grow the registry without bound.

pub(crate) mod serve;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

/// Most distinct `result` label values kept; later new ones count as `other-code`.
pub(crate) const MAX_RESULTS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    action: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// The registry and its series. See the module docs.
pub(crate) struct Metrics {
    registry: Registry,
    /// The per-domain and per-lineage series, encoded from these rows at each scrape.
    rows: Arc<RwLock<Rows>>,
    api_requests: Family<ApiLabels, Counter>,
    results: Mutex<HashSet<String>>,
    retries: Family<TargetLabels, Counter>,
    push_failures: Family<KindLabels, Counter>,
    passes: Family<ResultLabels, Counter>,
    pending: Gauge,
    torn: Gauge,
    credentials: Gauge,
    last_success: Gauge,
    pass_duration: Histogram,
}

/// What the per-domain and per-lineage series show, replaced whole after each pass: a
/// compact row per domain and lineage instead of a labelled gauge per series (a hash-map
/// entry, two label `String`s and an `Arc` each), which at 100 000 domains held tens of
/// MiB. Encoded by [`RowSeries`] at each scrape, under the lock, so a scrape never sees a
/// table half replaced.
#[derive(Debug, Default)]
struct Rows {
    domains: Vec<DomainSeries>,
    lineages: Vec<LineageSeries>,
}

#[derive(Debug)]
struct DomainSeries {
    domain: Box<str>,
    product: Box<str>,
    up_to_date: bool,
    expiry: Option<i64>,
}

#[derive(Debug)]
struct LineageSeries {
    lineage: Box<str>,
    valid: bool,
    expiry: Option<i64>,
}

impl DomainSeries {
    fn labels(&self) -> [(&'static str, &str); 2] {
        [("domain", &self.domain), ("product", &self.product)]
    }
}

impl LineageSeries {
    fn labels(&self) -> [(&'static str, &str); 1] {
        [("lineage", &self.lineage)]
    }
}

/// The registry's collector of [`Rows`].
#[derive(Debug)]
struct RowSeries(Arc<RwLock<Rows>>);

impl Collector for RowSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.0.read().unwrap_or_else(|e| e.into_inner());
        let domain = DomainSeries::labels;
        gauges(
            &mut encoder,
            "certrotd_domain_up_to_date",
            "1 when the CDN domain serves its best valid certificate (as recorded), else 0",
            rows.domains
                .iter()
                .map(|d| (domain(d), i64::from(d.up_to_date))),
        )?;
        gauges(
            &mut encoder,
            "certrotd_domain_certificate_expiry_timestamp_seconds",
            "notAfter (Unix time) of the certificate the CDN domain serves, as recorded",
            rows.domains
                .iter()
                .filter_map(|d| Some((domain(d), d.expiry?))),
        )?;
        let lineage = LineageSeries::labels;
        gauges(
            &mut encoder,
            "certrotd_certificate_expiry_timestamp_seconds",
            "notAfter (Unix time) of the lineage's certificate on disk",
            rows.lineages
                .iter()
                .filter_map(|l| Some((lineage(l), l.expiry?))),
        )?;
        gauges(
            &mut encoder,
            "certrotd_certificate_valid",
            "1 when the lineage on disk holds a valid certificate and key, else 0",
            rows.lineages
                .iter()
                .map(|l| (lineage(l), i64::from(l.valid))),
        )
    }
}

/// One gauge family: its descriptor, then a sample per labelled value.
fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl Iterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// One managed domain after a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DomainRow<'a> {
    pub(crate) domain: &'a str,
    pub(crate) product: &'a str,
    pub(crate) up_to_date: bool,
    /// notAfter of what the domain serves, as recorded.
    pub(crate) expiry: Option<OffsetDateTime>,
}

/// One scanned lineage after a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LineageRow<'a> {
    pub(crate) lineage: &'a str,
    /// notAfter of its certificate, when the certificate could be read.
    pub(crate) expiry: Option<OffsetDateTime>,
    pub(crate) valid: bool,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub(crate) fn global() -> &'static Metrics {
    &METRICS
}

/// Counts one HTTP attempt of `action` with its `result` label (`ok`, the API's `Code`,
/// `transport`, or an error kind: `aliyun::error::attempt_label`). The client's hook.
pub(crate) fn api_attempt(action: &'static str, result: &str) {
    global().count_attempt(action, result);
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            rows: Arc::default(),
            api_requests: Family::default(),
            results: Mutex::new(HashSet::new()),
            retries: Family::default(),
            push_failures: Family::default(),
            passes: Family::default(),
            pending: Gauge::default(),
            torn: Gauge::default(),
            credentials: Gauge::default(),
            last_success: Gauge::default(),
            pass_duration: Histogram::new([0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
        };
        m.with_registry()
    }

    fn with_registry(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register_collector(Box::new(RowSeries(Arc::clone(&self.rows))));
        r.register(
            "certrotd_api_requests",
            "HTTP attempts of Alibaba Cloud API calls by action and result (ok, the error Code, or transport)",
            self.api_requests.clone(),
        );
        r.register(
            "certrotd_api_retries",
            "write-call retries after a retryable failure, by target (cdn-batch, cdn-per-domain, ...)",
            self.retries.clone(),
        );
        r.register(
            "certrotd_push_failures",
            "domains whose push failed, by error kind",
            self.push_failures.clone(),
        );
        r.register(
            "certrotd_passes",
            "reconcile passes by result (ok: ran to its end and saved; failed: did not)",
            self.passes.clone(),
        );
        r.register(
            "certrotd_pending_domains",
            "managed domains planned for a push and not yet done",
            self.pending.clone(),
        );
        r.register(
            "certrotd_torn_lineages",
            "lineages held on their last valid certificate while their files disagree (renewal in progress)",
            self.torn.clone(),
        );
        r.register(
            "certrotd_credentials_available",
            "1 when usable Alibaba Cloud credentials were found, else 0",
            self.credentials.clone(),
        );
        r.register(
            "certrotd_last_successful_pass_timestamp_seconds",
            "Unix time of the end of the last pass that ran to its end with its outcome saved",
            self.last_success.clone(),
        );
        r.register(
            "certrotd_pass_duration_seconds",
            "duration of reconcile passes",
            self.pass_duration.clone(),
        );
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        r.register("certrotd_build_info", "certrotd's version", build);
        self
    }

    fn count_attempt(&self, action: &str, result: &str) {
        let result = {
            let mut seen = self.results.lock().unwrap_or_else(|e| e.into_inner());
            if seen.contains(result) || seen.len() < MAX_RESULTS {
                seen.insert(result.to_string());
                result
            } else {
                "other-code"
            }
        };
        self.api_requests
            .get_or_create(&ApiLabels {
                action: action.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// A failed write attempt through `target` (`push::Target::name`) is about to be retried.
    pub(crate) fn retry(&self, target: &str) {
        self.retries
            .get_or_create(&TargetLabels {
                target: target.to_string(),
            })
            .inc();
    }

    /// A domain's push failed with an error of `kind`.
    pub(crate) fn push_failed(&self, kind: &str) {
        self.push_failures
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Whether usable credentials were found.
    pub(crate) fn set_credentials(&self, available: bool) {
        self.credentials.set(i64::from(available));
    }

    /// Domains planned and not yet done.
    pub(crate) fn set_pending(&self, domains: usize) {
        self.pending.set(gauge(domains));
    }

    /// Replaces every per-domain series.
    pub(crate) fn set_domains<'a>(&self, rows: impl IntoIterator<Item = DomainRow<'a>>) {
        let domains: Vec<DomainSeries> = rows
            .into_iter()
            .map(|row| DomainSeries {
                domain: row.domain.into(),
                product: row.product.into(),
                up_to_date: row.up_to_date,
                expiry: row.expiry.map(OffsetDateTime::unix_timestamp),
            })
            .collect();
        self.rows.write().unwrap_or_else(|e| e.into_inner()).domains = domains;
    }

    /// Replaces every per-lineage series; `torn` is how many are held as torn.
    pub(crate) fn set_lineages<'a>(
        &self,
        rows: impl IntoIterator<Item = LineageRow<'a>>,
        torn: usize,
    ) {
        let lineages: Vec<LineageSeries> = rows
            .into_iter()
            .map(|row| LineageSeries {
                lineage: row.lineage.into(),
                valid: row.valid,
                expiry: row.expiry.map(OffsetDateTime::unix_timestamp),
            })
            .collect();
        self.rows
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .lineages = lineages;
        self.torn.set(gauge(torn));
    }

    /// A pass ended after `took`; `successful` when it ran to its end with its outcome
    /// saved (`at` is then the last successful pass's time).
    pub(crate) fn pass_finished(&self, took: Duration, successful: bool, at: OffsetDateTime) {
        self.pass_duration.observe(took.as_secs_f64());
        let result = if successful { "ok" } else { "failed" };
        self.passes
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
        if successful {
            self.last_success.set(at.unix_timestamp());
        }
    }

    /// The OpenMetrics text exposition (what Prometheus asks for).
    pub(crate) fn openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition, for scrapers
/// and tools (`curl`, `promtool check metrics`) that do not ask for OpenMetrics: the same
/// samples; a counter's `# HELP`/`# TYPE` lines name its `_total` sample, and OpenMetrics'
/// `# EOF` and `# UNIT` lines are left out.
pub(crate) fn text_format(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                let _ = writeln!(out, "{prefix}{name}{suffix} {tail}");
            }
            None => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out
}

/// What `/healthz` answers: the main loop is alive (it beat recently) and the last pass
/// ran to its end.
#[derive(Debug)]
pub(crate) struct Health {
    /// Unix time of the loop's last beat; 0 before the first.
    beat: AtomicI64,
    /// The loop has ended.
    ended: AtomicBool,
    /// The last pass that ended ran to its end with its outcome saved.
    last_pass_ok: AtomicBool,
    /// Why not, when not (a kebab-case kind).
    why: Mutex<&'static str>,
}

/// A loop that has not beaten for this long is taken to hang.
pub(crate) const BEAT_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the main loop beats.
pub(crate) const BEAT_EVERY: Duration = Duration::from_secs(15);

impl Default for Health {
    fn default() -> Health {
        Health {
            beat: AtomicI64::new(0),
            ended: AtomicBool::new(false),
            last_pass_ok: AtomicBool::new(false),
            why: Mutex::new("starting"),
        }
    }
}

impl Health {
    /// The main loop is alive at `now`.
    pub(crate) fn beat(&self, now: OffsetDateTime) {
        self.beat.store(now.unix_timestamp(), Ordering::Release);
    }

    /// The main loop has ended.
    pub(crate) fn ended(&self) {
        self.ended.store(true, Ordering::Release);
    }

    /// A pass ended: ran to its end (`Ok`), or why not (a kind).
    pub(crate) fn pass_ended(&self, outcome: Result<(), &'static str>) {
        *self.why.lock().unwrap_or_else(|e| e.into_inner()) = outcome.err().unwrap_or("");
        self.last_pass_ok.store(outcome.is_ok(), Ordering::Release);
    }

    /// `Ok` when healthy at `now`, else the reason (one line).
    pub(crate) fn check(&self, now: OffsetDateTime) -> Result<(), String> {
        if self.ended.load(Ordering::Acquire) {
            return Err("the main loop has ended".to_string());
        }
        let beat = self.beat.load(Ordering::Acquire);
        let silent = now.unix_timestamp().saturating_sub(beat);
        if beat == 0 {
            return Err("the main loop has not started".to_string());
        }
        if silent > BEAT_TIMEOUT.as_secs().cast_signed() {
            return Err(format!("the main loop has not run for {silent} s"));
        }
        if !self.last_pass_ok.load(Ordering::Acquire) {
            let why = *self.why.lock().unwrap_or_else(|e| e.into_inner());
            return Err(format!("the last pass did not run to its end ({why})"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
