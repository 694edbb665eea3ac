//! The operations sections of the walk: `[metrics]` (where `run` serves `/metrics` and
//! `/healthz`) and `[notify]` (the program run on events). Same rules as the rest of the
//! walk: every problem collected with its location; valid but unwise values are warnings.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{Ctx, Section, int_or};
use crate::config::{MetricsSettings, NotifySettings};

pub(super) const METRICS_KEYS: &[&str] = &["listen"];
pub(super) const NOTIFY_KEYS: &[&str] = &["command", "timeout_secs"];

pub(super) fn metrics(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<MetricsSettings> {
    let Some(listen) = s.string(ctx, "listen") else {
        return s.value("listen").is_none().then(MetricsSettings::default);
    };
    let Ok(addr) = listen.get_ref().parse::<SocketAddr>() else {
        let message = format!(
            "`metrics.listen` = {:?} is not an IP address and port; use e.g. \"127.0.0.1:9466\"",
            listen.get_ref()
        );
        ctx.problem(&listen.span(), "metrics.listen", message);
        return None;
    };
    if !addr.ip().is_loopback() {
        let message = format!(
            "`metrics.listen` = \"{addr}\" is reachable from other hosts: anyone who can \
             connect reads the domain list and health; prefer 127.0.0.1 behind a proxy, or \
             firewall the port"
        );
        ctx.warn(&listen.span(), "metrics.listen", message);
    }
    Some(MetricsSettings { listen: Some(addr) })
}

pub(super) fn notify(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<NotifySettings> {
    let timeout = s.integer(ctx, "timeout_secs", 1..=3600, " seconds");
    let command = match s.strings(ctx, "command") {
        None if s.value("command").is_some() => None,
        None => Some(Vec::new()),
        Some(argv) => {
            let span = s.value("command").map(|v| v.span()).unwrap_or(0..0);
            let program = argv.first().map(|p| p.get_ref().as_str());
            if !program.is_some_and(|p| Path::new(p).is_absolute()) {
                let message = "`notify.command` must start with the program's absolute path, \
                               e.g. [\"/usr/local/bin/certrotd-alert\", \"--to\", \"ops\"] \
                               (it is run without a shell)"
                    .to_string();
                ctx.problem(&span, "notify.command", message);
                None
            } else {
                Some(argv.into_iter().map(|a| a.into_inner()).collect())
            }
        }
    };
    Some(NotifySettings {
        command: command?,
        timeout: Duration::from_secs(int_or(timeout, 60)?),
    })
}
