//! The walk of `[aliyun] store` and the `[cas]` section.

use super::super::cas::{CAS_REGIONS, CasSettings, DEFAULT_ENDPOINT, Store};
use super::super::endpoint;
use super::{Ctx, Section, choice, int_or};
use std::time::Duration;

pub(super) const CAS_KEYS: &[&str] = &[
    "endpoint",
    "region",
    "delete_superseded",
    "delete_after_hours",
];

/// `aliyun.store` (from the `[aliyun]` section) and the `[cas]` section.
pub(super) fn cas(
    ctx: &mut Ctx<'_>,
    aliyun: &Section<'_, '_>,
    s: &Section<'_, '_>,
) -> Option<CasSettings> {
    let options = [("upload", Store::Upload), ("cas", Store::Cas)];
    let explain = "is not a certificate store; use \"upload\" (every write call carries the \
                   certificate and key, the default) or \"cas\" (upload once to the SSL \
                   Certificates Service, bind by reference)";
    let store = choice(ctx, aliyun, "store", Store::Upload, &options, explain);
    let endpoint = match s.string(ctx, "endpoint") {
        None if s.value("endpoint").is_some() => None,
        None => Some(DEFAULT_ENDPOINT.to_string()),
        Some(raw) => match endpoint::check(raw.get_ref()) {
            Ok(e) => Some(e),
            Err(why) => {
                let why = why.replace(endpoint::DEFAULT, DEFAULT_ENDPOINT);
                let message = format!("`cas.endpoint` = {:?}: {why}", raw.get_ref());
                ctx.problem(&raw.span(), "cas.endpoint", message);
                None
            }
        },
    };
    let region = match s.string(ctx, "region") {
        None if s.value("region").is_some() => None,
        None => Some(CAS_REGIONS[0].to_string()),
        Some(r) if CAS_REGIONS.contains(&r.get_ref().as_str()) => Some(r.into_inner()),
        Some(r) => {
            let message = format!(
                "`cas.region` = {:?} is not a CAS region; use \"cn-hangzhou\" (China site \
                 accounts) or \"ap-southeast-1\" (international accounts)",
                r.get_ref()
            );
            ctx.problem(&r.span(), "cas.region", message);
            None
        }
    };
    let delete = match s.value("delete_superseded") {
        None => Some(false),
        Some(_) => s.boolean(ctx, "delete_superseded"),
    };
    let hours = s.integer(ctx, "delete_after_hours", 0..=8760, " hours");
    Some(CasSettings {
        store: store?,
        endpoint: endpoint?,
        region: region?,
        delete_superseded: delete?,
        delete_after: Duration::from_secs(3600 * int_or(hours, 24u64)?),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{CasSettings, ConfigError, Store, parse};

    fn cas(text: &str) -> CasSettings {
        let loaded = parse(Path::new("/c.toml"), text, Path::new("/")).expect("valid");
        loaded.settings.cas
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(cas(""), CasSettings::default());
        assert_eq!(CasSettings::default().store, Store::Upload);
        let s = cas(
            "[aliyun]\nstore = \"cas\"\n[cas]\nendpoint = \"http://127.0.0.1:9\"\nregion = \"ap-southeast-1\"\ndelete_superseded = true\ndelete_after_hours = 0\n",
        );
        assert_eq!(s.store, Store::Cas);
        assert_eq!(s.endpoint, "http://127.0.0.1:9");
        assert_eq!(s.region, "ap-southeast-1");
        assert!(s.delete_superseded);
        assert_eq!(s.delete_after, Duration::ZERO);
        assert_eq!(
            cas("[cas]\ndelete_after_hours = 48\n").delete_after,
            Duration::from_secs(48 * 3600)
        );
    }

    #[test]
    fn a_plain_http_cas_endpoint_elsewhere_is_refused_naming_the_cas_default() {
        let text = "[cas]\nendpoint = \"http://cas.example.com\"\n";
        let Err(ConfigError::Invalid { problems, .. }) =
            parse(Path::new("/c.toml"), text, Path::new("/"))
        else {
            panic!("accepted");
        };
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key.as_deref(), Some("cas.endpoint"));
        assert!(
            problems[0].message.contains("loopback"),
            "{}",
            problems[0].message
        );
    }
}
