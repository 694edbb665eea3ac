//! Certificate chains: X.509 parsing, the leaf-first order, issuer signatures, DNS names.
//!
//! Certificates are numbered from 1 in file order in every message.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::invalid::Invalid;
use super::key::{self, Key};

/// Parses every certificate (trailing bytes after one are an error).
pub(super) fn parse_all(ders: &[Vec<u8>]) -> Result<Vec<X509Certificate<'_>>, Invalid> {
    ders.iter()
        .enumerate()
        .map(|(i, der)| match X509Certificate::from_der(der) {
            Ok(([], cert)) => Ok(cert),
            Ok(_) => Err(bad_cert(i, "trailing bytes after the certificate".into())),
            Err(e) => Err(bad_cert(i, e.to_string())),
        })
        .collect()
}

/// The key must belong to the first certificate. When it belongs to a later one the file
/// is not leaf first; when it belongs to none it is the wrong key.
pub(super) fn check_key(certs: &[X509Certificate<'_>], key: &Key) -> Result<(), Invalid> {
    for (i, cert) in certs.iter().enumerate() {
        if key::matches(key, cert.public_key())? {
            return match i {
                0 => Ok(()),
                _ => Err(Invalid::NotLeafFirst { leaf: i + 1 }),
            };
        }
    }
    Err(Invalid::KeyMismatch)
}

/// Each certificate must be signed by the next one; the last one's issuer may be absent.
pub(super) fn check_links(certs: &[X509Certificate<'_>]) -> Result<(), Invalid> {
    for (i, pair) in certs.windows(2).enumerate() {
        let [cert, issuer] = pair else { continue };
        if cert.issuer() == issuer.subject()
            && cert.verify_signature(Some(issuer.public_key())).is_ok()
        {
            continue;
        }
        let issuer_at = certs
            .iter()
            .position(|c| c.subject() == cert.issuer())
            .filter(|&at| at != i)
            .map(|at| at + 1);
        return Err(Invalid::NotIssuedBy {
            index: i + 1,
            subject: cert.subject().to_string(),
            next: i + 2,
            next_subject: issuer.subject().to_string(),
            issuer_at,
        });
    }
    Ok(())
}

/// The leaf's DNS subjectAltNames, lowercased, in certificate order (never empty).
pub(super) fn dns_names(leaf: &X509Certificate<'_>) -> Result<Vec<String>, Invalid> {
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| bad_cert(0, format!("bad subjectAltName extension: {e}")))?;
    let names: Vec<String> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return Err(Invalid::NoDnsNames);
    }
    Ok(names)
}

fn bad_cert(i: usize, detail: String) -> Invalid {
    Invalid::BadCertificate {
        index: i + 1,
        detail,
    }
}
