//! What tells the two products apart on the wire: each one's API version and action names
//! ([`Actions`]). The DCDN API (`dcdn.aliyuncs.com`, Version `2018-01-15`) takes the same
//! parameters as the CDN's per-domain call (`SetDcdnDomainSSLCertificate`: `DomainName`,
//! `SSLProtocol`, `CertType`, `CertName`, `SSLPub`, `SSLPri`) and answers its reads in its
//! own shapes (`SSLProtocol`/`SSLPub` where the CDN says
//! `ServerCertificateStatus`/`ServerCertificate`), which the client's decoders accept both
//! of. DCDN has no batch call any more (it left the SDK in 3.0.0): a DCDN target is always
//! per-domain.
//!
//! Pure constants; the client ([`super::Client::for_product`]) picks the set.

use crate::config::Product;

/// One product's API version and the actions certrotd calls on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Actions {
    pub(crate) product: Product,
    pub(crate) version: &'static str,
    /// The batch write (CDN only; DCDN's was retired, so its name here is never sent).
    pub(crate) batch_set: &'static str,
    pub(crate) set_ssl: &'static str,
    pub(crate) describe_cert: &'static str,
    pub(crate) user_domains: &'static str,
}

/// The CDN API (2018-05-10).
pub(crate) const CDN: Actions = Actions {
    product: Product::Cdn,
    version: "2018-05-10",
    batch_set: "BatchSetCdnDomainServerCertificate",
    set_ssl: "SetCdnDomainSSLCertificate",
    describe_cert: "DescribeDomainCertificateInfo",
    user_domains: "DescribeUserDomains",
};

/// The DCDN API (2018-01-15).
pub(crate) const DCDN: Actions = Actions {
    product: Product::Dcdn,
    version: "2018-01-15",
    batch_set: "BatchSetDcdnDomainCertificate",
    set_ssl: "SetDcdnDomainSSLCertificate",
    describe_cert: "DescribeDcdnDomainCertificateInfo",
    user_domains: "DescribeDcdnUserDomains",
};

/// The actions of `product`.
pub(crate) fn actions(product: Product) -> Actions {
    match product {
        Product::Cdn => CDN,
        Product::Dcdn => DCDN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_product_has_its_own_version_and_actions() {
        assert_eq!(actions(Product::Cdn), CDN);
        assert_eq!(actions(Product::Dcdn), DCDN);
        assert_eq!(CDN.version, crate::aliyun::sign::API_VERSION);
        assert_eq!(DCDN.version, "2018-01-15");
        assert_eq!(DCDN.set_ssl, "SetDcdnDomainSSLCertificate");
        assert_eq!(DCDN.describe_cert, "DescribeDcdnDomainCertificateInfo");
        assert_eq!(DCDN.user_domains, "DescribeDcdnUserDomains");
    }
}
