//! The emulator's second product: DCDN (Edge Security Acceleration, `dcdn.aliyuncs.com`,
//! Version `2018-01-15`), served by `certrotd emulate --product dcdn` (one emulator per
//! product, each on its own port, as each product has its own endpoint).
//!
//! Owns what differs between the products: which actions each one answers ([`op`]) — DCDN:
//! `SetDcdnDomainSSLCertificate` (the CDN per-domain call's parameters and checks, on its
//! own 30/s budget), `DescribeDcdnDomainCertificateInfo`, `DescribeDcdnUserDomains`; no batch
//! call (`BatchSetDcdnDomainCertificate` left the SDK in 3.0.0 and is answered
//! `InvalidAction.NotFound`) — its version, its `HostId`, and the shapes of its read answers
//! (DCDN's certificate info says `SSLProtocol`/`SSLPub` where the CDN says
//! `ServerCertificateStatus`/`ServerCertificate`; its domain list says `SSLProtocol` where the
//! CDN says `SslProtocol`), as the official SDKs' response models name them.

use serde_json::{Value, json};

use super::api::api_time;
use super::record::Served;
use crate::config::Product;

/// What an action does, whichever product's name it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    BatchSet,
    SetSsl,
    DescribeCert,
    UserDomains,
}

/// The DCDN API version.
pub(crate) const DCDN_VERSION: &str = "2018-01-15";
pub(crate) const ACTION_SET_DCDN_SSL: &str = "SetDcdnDomainSSLCertificate";
pub(crate) const ACTION_DESCRIBE_DCDN_CERT: &str = "DescribeDcdnDomainCertificateInfo";
pub(crate) const ACTION_DCDN_USER_DOMAINS: &str = "DescribeDcdnUserDomains";

/// The operation `action` names on `product`'s API, if it has it.
pub(super) fn op(product: Product, action: &str) -> Option<Op> {
    use super::api::{ACTION_DESCRIBE_CERT, ACTION_SET, ACTION_SET_SSL, ACTION_USER_DOMAINS};
    let op = match (product, action) {
        (Product::Cdn, ACTION_SET) => Op::BatchSet,
        (Product::Cdn, ACTION_SET_SSL) | (Product::Dcdn, ACTION_SET_DCDN_SSL) => Op::SetSsl,
        (Product::Cdn, ACTION_DESCRIBE_CERT) | (Product::Dcdn, ACTION_DESCRIBE_DCDN_CERT) => {
            Op::DescribeCert
        }
        (Product::Cdn, ACTION_USER_DOMAINS) | (Product::Dcdn, ACTION_DCDN_USER_DOMAINS) => {
            Op::UserDomains
        }
        _ => return None,
    };
    Some(op)
}

/// Is `action` a write call on any product (for the log)?
pub(super) fn is_write(action: &str) -> bool {
    [Product::Cdn, Product::Dcdn]
        .into_iter()
        .any(|p| matches!(op(p, action), Some(Op::BatchSet | Op::SetSsl)))
}

/// The API version `product` speaks.
pub(super) fn version(product: Product) -> &'static str {
    match product {
        Product::Cdn => super::api::VERSION,
        Product::Dcdn => DCDN_VERSION,
    }
}

/// `HostId` of `product`'s error answers.
pub(super) fn host_id(product: Product) -> &'static str {
    match product {
        Product::Cdn => "cdn.aliyuncs.com",
        Product::Dcdn => "dcdn.aliyuncs.com",
    }
}

/// The product name in `Recommend` links.
pub(super) fn recommend_product(product: Product) -> &'static str {
    match product {
        Product::Cdn => "Cdn",
        Product::Dcdn => "dcdn",
    }
}

/// One `CertInfo` entry of a certificate read, in `product`'s shape.
pub(super) fn cert_info(product: Product, domain: &str, served: Option<&Served>) -> Value {
    match (product, served) {
        (Product::Cdn, Some(s)) => json!({
            "DomainName": domain,
            "CertName": s.cert_name,
            "CertType": cert_type(s),
            "CertId": s.cas_cert_id.map(|id| id.to_string()).unwrap_or_default(),
            "ServerCertificateStatus": "on",
            "ServerCertificate": s.chain_pem,
            "CertExpireTime": api_time(s.not_after),
            "CertStartTime": api_time(s.not_before),
            "CertUpdateTime": api_time(s.updated_at),
            "CertDomainName": s.names.join(","),
            "Status": "success",
        }),
        (Product::Cdn, None) => json!({
            "DomainName": domain,
            "CertName": "",
            "CertType": "",
            "ServerCertificateStatus": "off",
            "ServerCertificate": "",
            "CertExpireTime": "",
            "CertStartTime": "",
            "CertDomainName": "",
        }),
        (Product::Dcdn, Some(s)) => json!({
            "DomainName": domain,
            "CertName": s.cert_name,
            "CertType": cert_type(s),
            "SSLProtocol": "on",
            "SSLPub": s.chain_pem,
            "CertExpireTime": api_time(s.not_after),
            "CertStartTime": api_time(s.not_before),
            "CertDomainName": s.names.join(","),
            "Status": "success",
        }),
        (Product::Dcdn, None) => json!({
            "DomainName": domain,
            "CertName": "",
            "CertType": "",
            "SSLProtocol": "off",
            "SSLPub": "",
            "Status": "",
        }),
    }
}

/// `cas` for a domain bound to a CAS certificate by reference, `upload` otherwise.
fn cert_type(s: &Served) -> &'static str {
    if s.cas_cert_id.is_some() {
        "cas"
    } else {
        "upload"
    }
}

/// One `PageData` entry of a domain list, in `product`'s shape.
pub(super) fn page_entry(product: Product, domain: &str, online: bool, https: bool) -> Value {
    let status = if online { "online" } else { "offline" };
    let ssl = if https { "on" } else { "off" };
    match product {
        Product::Cdn => json!({
            "DomainName": domain,
            "DomainStatus": status,
            "SslProtocol": ssl,
            "CdnType": "web",
        }),
        Product::Dcdn => json!({
            "DomainName": domain,
            "DomainStatus": status,
            "SSLProtocol": ssl,
            "Scene": "apiscene",
        }),
    }
}
