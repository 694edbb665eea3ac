//! `[aliyun]` keys of how certrotd reaches Alibaba Cloud besides the CDN endpoint:
//! `ca_file` (PEM roots, read at load and checked to hold at least one CA certificate),
//! `sts_endpoint` (the `endpoint` rule: https, or http to loopback), `metadata_endpoint`
//! (plain http: the metadata service has no TLS), `role_name`, `imds_v1`.

use super::{Ctx, NOT_GATHERED, Section};
use crate::config::{AccessSettings, DEFAULT_STS_ENDPOINT, endpoint};

pub(in crate::config) fn access(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<AccessSettings> {
    let ca_file = ca_file(ctx, s);
    let sts_endpoint = match s.string(ctx, "sts_endpoint") {
        None if s.value("sts_endpoint").is_some() => None,
        None => Some(DEFAULT_STS_ENDPOINT.to_string()),
        Some(raw) => match endpoint::check(raw.get_ref()) {
            Ok(e) => Some(e),
            Err(why) => {
                let message = format!("`aliyun.sts_endpoint` = {:?}: {why}", raw.get_ref());
                ctx.problem(&raw.span(), "aliyun.sts_endpoint", message);
                None
            }
        },
    };
    let metadata_endpoint = metadata_endpoint(ctx, s);
    let role_name = role_name(ctx, s);
    let imds_v1 = match s.value("imds_v1") {
        None => Some(false),
        Some(_) => s.boolean(ctx, "imds_v1"),
    };
    Some(AccessSettings {
        ca_file: ca_file?,
        sts_endpoint: sts_endpoint?,
        metadata_endpoint: metadata_endpoint?,
        role_name: role_name?,
        imds_v1: imds_v1?,
    })
}

fn ca_file(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<Option<std::path::PathBuf>> {
    const KEY: &str = "aliyun.ca_file";
    let raw = match s.string(ctx, "ca_file") {
        None if s.value("ca_file").is_some() => return None,
        None => return Some(None),
        Some(raw) => raw,
    };
    let path = ctx.resolve(raw.get_ref());
    let problem = match ctx.files.contents(&path) {
        None => Some(NOT_GATHERED.to_string()),
        Some(Err(e)) => Some(format!(
            "cannot read it ({}); name a PEM file of the CA certificates to trust, or \
             remove the key",
            e.reason()
        )),
        Some(Ok(bytes)) => crate::config::parse_ca_pem(bytes).err().map(|why| {
            format!("{why}; name a PEM file of CA certificates (-----BEGIN CERTIFICATE-----)")
        }),
    };
    match problem {
        None => Some(Some(path)),
        Some(why) => {
            let message = format!("`{KEY}` = {}: {why}", path.display());
            ctx.problem(&raw.span(), KEY, message);
            None
        }
    }
}

fn metadata_endpoint(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<Option<String>> {
    const KEY: &str = "aliyun.metadata_endpoint";
    let raw = match s.string(ctx, "metadata_endpoint") {
        None if s.value("metadata_endpoint").is_some() => return None,
        None => return Some(None),
        Some(raw) => raw,
    };
    let text = raw.get_ref().trim_end_matches('/');
    let ok = text.strip_prefix("http://").is_some_and(|rest| {
        !rest.is_empty()
            && !rest.contains(['/', '?', '#', '@'])
            && !rest.contains(char::is_whitespace)
    });
    if ok {
        return Some(Some(text.to_string()));
    }
    let message = format!(
        "`{KEY}` = {:?}: write it as http://host[:port] (the metadata service speaks plain \
         http; default http://100.100.100.200)",
        raw.get_ref()
    );
    ctx.problem(&raw.span(), KEY, message);
    None
}

fn role_name(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<Option<String>> {
    const KEY: &str = "aliyun.role_name";
    let raw = match s.string(ctx, "role_name") {
        None if s.value("role_name").is_some() => return None,
        None => return Some(None),
        Some(raw) => raw,
    };
    let name = raw.get_ref();
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        return Some(Some(name.clone()));
    }
    let message = format!(
        "`{KEY}` = {name:?} is not a RAM role name (1-64 letters, digits, `-`, `_`, `.`); \
         write the instance's role name, or remove the key to discover it"
    );
    ctx.problem(&raw.span(), KEY, message);
    None
}
