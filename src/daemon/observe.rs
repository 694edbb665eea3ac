//! What a pass of `certrotd run` tells the metrics: the per-domain and per-lineage series,
//! worked out from the pass's scan and the recorded state after it.
//!
//! A domain is up to date when a fresh plan against the recorded state (read-back on: only
//! verified deployments count) has nothing to push to it and a valid certificate covers it —
//! the planner's own rule, so the metric and the next pass never disagree.

use std::collections::{BTreeMap, HashSet};

use time::OffsetDateTime;

use crate::config::Product;
use crate::metrics::{self, DomainRow, LineageRow};
use crate::reconcile::{self, PlanParams, ValidLineage};
use crate::source::Lineage;
use crate::state::State;

/// One pass's view, as the metrics want it.
pub(crate) struct PassView<'a> {
    /// Managed domains (every product) and each one's product (the `product` label).
    pub(crate) domains: &'a [String],
    pub(crate) products: &'a BTreeMap<String, Product>,
    pub(crate) verify: bool,
    pub(crate) batch: usize,
    pub(crate) lineages: &'a [Lineage],
    pub(crate) valid: &'a [ValidLineage],
    /// Lineages held on their last valid certificate.
    pub(crate) torn: usize,
}

/// The domains that serve their best valid certificate, as recorded in `state`.
pub(crate) fn up_to_date(
    view: &PassView<'_>,
    state: &State,
    now: OffsetDateTime,
) -> HashSet<String> {
    let deployed = state.deployed_fingerprints(view.verify);
    let params = PlanParams {
        domains: view.domains,
        deployed: &deployed,
        now,
        batch: view.batch.max(1),
        force: false,
    };
    reconcile::make_plan(view.valid, &params)
        .up_to_date
        .into_iter()
        .collect()
}

/// Replaces the per-domain and per-lineage series with this pass's.
pub(crate) fn record(view: &PassView<'_>, state: &State, now: OffsetDateTime) {
    let fresh = up_to_date(view, state, now);
    let m = metrics::global();
    // Lineages first: a scrape that sees this pass's domain series sees its lineages too.
    let valid: HashSet<&str> = view.valid.iter().map(|v| v.id.as_str()).collect();
    m.set_lineages(
        view.lineages.iter().map(|l| LineageRow {
            lineage: &l.id,
            expiry: l.result.as_ref().ok().map(|c| c.not_after),
            valid: valid.contains(l.id.as_str()),
        }),
        view.torn,
    );
    m.set_domains(view.domains.iter().map(|d| {
        DomainRow {
            domain: d,
            product: view
                .products
                .get(d)
                .copied()
                .unwrap_or(Product::Cdn)
                .label(),
            up_to_date: fresh.contains(d),
            expiry: state
                .domains
                .get(d)
                .and_then(|s| s.deployed.as_ref())
                .map(|dep| dep.not_after),
        }
    }));
}
