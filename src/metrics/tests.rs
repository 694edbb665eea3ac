use time::macros::datetime;

use super::*;

#[test]
fn text_format_names_counters_by_their_total_sample_and_drops_openmetrics_lines() {
    let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\n\
              x_requests_total{a=\"b\"} 3\n# HELP g A gauge.\n# TYPE g gauge\n# UNIT g seconds\n\
              g 1\n# EOF\n";
    assert_eq!(
        text_format(om),
        "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\n\
         x_requests_total{a=\"b\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
    );
}

#[test]
fn the_registry_has_the_issue_names_and_the_text_format_is_consistent() {
    let m = Metrics::new();
    m.count_attempt("BatchSetCdnDomainServerCertificate", "ok");
    m.set_domains([DomainRow {
        domain: "www.example.com",
        product: "cdn",
        up_to_date: true,
        expiry: Some(datetime!(2027-01-01 0:00 UTC)),
    }]);
    m.set_lineages(
        [LineageRow {
            lineage: "/etc/letsencrypt/live/www",
            expiry: None,
            valid: false,
        }],
        0,
    );
    let text = text_format(&m.openmetrics());
    for line in [
        "# TYPE certrotd_api_requests_total counter",
        "certrotd_api_requests_total{action=\"BatchSetCdnDomainServerCertificate\",result=\"ok\"} 1",
        "certrotd_domain_up_to_date{domain=\"www.example.com\",product=\"cdn\"} 1",
        "certrotd_domain_certificate_expiry_timestamp_seconds{domain=\"www.example.com\",product=\"cdn\"} 1798761600",
        "certrotd_certificate_valid{lineage=\"/etc/letsencrypt/live/www\"} 0",
        "certrotd_build_info{version=\"0.1.0\"} 1",
        "# TYPE certrotd_last_successful_pass_timestamp_seconds gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    // A lineage without a readable certificate has no expiry sample.
    assert!(!text.contains("certrotd_certificate_expiry_timestamp_seconds{"));
}

#[test]
fn per_domain_series_are_replaced_whole() {
    let m = Metrics::new();
    let row = |domain| DomainRow {
        domain,
        product: "cdn",
        up_to_date: false,
        expiry: None,
    };
    m.set_domains([row("a.example.com")]);
    m.set_domains([row("b.example.com")]);
    let text = m.openmetrics();
    assert!(
        text.contains("b.example.com") && !text.contains("a.example.com"),
        "{text}"
    );
}

#[test]
fn result_labels_are_capped() {
    let m = Metrics::new();
    for i in 0..MAX_RESULTS + 5 {
        m.count_attempt("X", &format!("Code{i}"));
    }
    m.count_attempt("X", "Code0");
    let text = m.openmetrics();
    assert!(text.contains("result=\"other-code\"} 5"), "{text}");
    assert!(text.contains("result=\"Code0\"} 2"), "{text}");
}

#[test]
fn pass_finished_sets_the_last_success_only_for_a_successful_pass() {
    let m = Metrics::new();
    let at = datetime!(2026-12-01 0:00 UTC);
    m.pass_finished(Duration::from_secs(2), false, at);
    assert_eq!(m.last_success.get(), 0);
    m.pass_finished(Duration::from_secs(2), true, at);
    assert_eq!(m.last_success.get(), at.unix_timestamp());
}

#[test]
fn health_needs_a_recent_beat_and_a_completed_pass() {
    let h = Health::default();
    let t = datetime!(2026-12-01 0:00 UTC);
    assert!(h.check(t).unwrap_err().contains("not started"));
    h.beat(t);
    assert!(h.check(t).unwrap_err().contains("last pass"));
    h.pass_ended(Ok(()));
    assert_eq!(h.check(t), Ok(()));
    let late = t + BEAT_TIMEOUT + time::Duration::seconds(1);
    assert!(h.check(late).unwrap_err().contains("has not run"));
    h.pass_ended(Err("credentials"));
    assert!(h.check(t).unwrap_err().contains("credentials"));
    h.pass_ended(Ok(()));
    h.ended();
    assert!(h.check(t).unwrap_err().contains("ended"));
}
