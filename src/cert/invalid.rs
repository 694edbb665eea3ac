//! [`Invalid`]: the one precise reason a chain/key pair cannot be used, worded for a person.
//!
//! Invariant: no message and no `Debug` output contains private key material; details come
//! from static text, certificate (public) data or ASN.1 error positions. Nothing is quoted
//! from a file's text but a known PEM label.

use time::OffsetDateTime;

/// Which input file a problem concerns, so the caller can name the right path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The certificate chain file (`fullchain.pem`, `tls.crt`, ...).
    Chain,
    /// The private key file (`privkey.pem`, `tls.key`, ...).
    Key,
}

impl Part {
    fn expected(self) -> &'static str {
        match self {
            Part::Chain => "PEM certificates (-----BEGIN CERTIFICATE-----)",
            Part::Key => "a PEM private key (-----BEGIN PRIVATE KEY-----)",
        }
    }

    fn convert_hint(self) -> &'static str {
        match self {
            Part::Chain => "openssl x509 -inform DER -in FILE -out FILE.pem",
            Part::Key => "openssl pkey -inform DER -in FILE -out FILE.pem",
        }
    }
}

/// Why a chain/key pair cannot be used. `Display` is one precise, human sentence; the
/// caller prefixes the file path given by [`Invalid::part`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the file is empty; expected {}", .part.expected())]
    Empty { part: Part },

    #[error("the file is not PEM (no -----BEGIN line); expected {}", .part.expected())]
    NotPem { part: Part },

    #[error("file is DER, expected PEM; convert it with `{}`", .part.convert_hint())]
    Der { part: Part },

    #[error(
        "truncated PEM: {} has no -----END line; \
         the file was cut short, restore it or renew the certificate",
        block(label)
    )]
    TruncatedPem {
        part: Part,
        /// A known PEM label, or empty when the file's label is not one (it is never
        /// quoted: it is text from the file).
        label: String,
    },

    #[error("malformed PEM: {detail}; expected {}", .part.expected())]
    MalformedPem { part: Part, detail: &'static str },

    #[error(
        "no certificate in the file (no -----BEGIN CERTIFICATE----- block){}",
        if *.has_key { "; it holds a private key: are the certificate and key files swapped?" } else { "" }
    )]
    NoCertificate { has_key: bool },

    #[error(
        "no private key in the file (no -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY block){}",
        if *.has_certificate { "; it holds a certificate: are the certificate and key files swapped?" } else { "" }
    )]
    NoPrivateKey { has_certificate: bool },

    #[error("the file holds {count} private keys; keep only the certificate's key")]
    SeveralPrivateKeys { count: usize },

    #[error(
        "encrypted private keys are not supported; store the key unencrypted \
         (`openssl pkey -in FILE -out FILE.plain`) with mode 0600"
    )]
    EncryptedKey,

    #[error(
        "certificate {index} in the file does not parse: {detail}; \
         check the file or renew the certificate"
    )]
    BadCertificate { index: usize, detail: String },

    #[error("the private key does not parse: {detail}; check the file or renew the certificate")]
    BadKey { detail: String },

    #[error("unsupported key type: {what}; use RSA, ECDSA P-256/P-384 or Ed25519")]
    UnsupportedKey { what: String },

    #[error(
        "the chain is not leaf first: the private key belongs to certificate {leaf} of the \
         file; put the leaf certificate first, then each issuer (as fullchain.pem does)"
    )]
    NotLeafFirst { leaf: usize },

    #[error(
        "certificate {index} ({subject}) is not issued by certificate {next} ({next_subject}); \
         the file must hold the leaf first, then each certificate's issuer{}",
        match .issuer_at { Some(at) => format!(" (its issuer is certificate {at})"), None => String::new() }
    )]
    NotIssuedBy {
        index: usize,
        subject: String,
        next: usize,
        next_subject: String,
        issuer_at: Option<usize>,
    },

    #[error(
        "private key does not match the certificate; the two files come from different \
         issuances: let the ACME client write the pair again (e.g. `certbot renew \
         --force-renewal --cert-name NAME`), or point the key path at the certificate's own key"
    )]
    KeyMismatch,

    #[error(
        "the certificate has no DNS names (subjectAltName), so it can serve no CDN domain; \
         request it with the domain names"
    )]
    NoDnsNames,

    #[error(
        "expired {} ({}); renew it (e.g. `certbot renew`) and check that the ACME client's \
         renewal timer runs",
        ymd(.not_after),
        ago(*.days)
    )]
    Expired {
        not_after: OffsetDateTime,
        /// Whole days since notAfter.
        days: i64,
    },

    #[error("not valid until {} ({})", ymd(.not_before), ahead(*.days))]
    NotYetValid {
        not_before: OffsetDateTime,
        /// Whole days until notBefore.
        days: i64,
    },
}

impl Invalid {
    /// The input file this problem concerns; `None` when it concerns the pair or the
    /// lineage as a whole (the key/certificate mismatch).
    pub(crate) fn part(&self) -> Option<Part> {
        match self {
            Invalid::Empty { part }
            | Invalid::NotPem { part }
            | Invalid::Der { part }
            | Invalid::TruncatedPem { part, .. }
            | Invalid::MalformedPem { part, .. } => Some(*part),
            Invalid::NoPrivateKey { .. }
            | Invalid::SeveralPrivateKeys { .. }
            | Invalid::EncryptedKey
            | Invalid::BadKey { .. }
            | Invalid::UnsupportedKey { .. } => Some(Part::Key),
            Invalid::NoCertificate { .. }
            | Invalid::BadCertificate { .. }
            | Invalid::NotLeafFirst { .. }
            | Invalid::NotIssuedBy { .. }
            | Invalid::NoDnsNames
            | Invalid::Expired { .. }
            | Invalid::NotYetValid { .. } => Some(Part::Chain),
            Invalid::KeyMismatch => None,
        }
    }

    /// A short stable label for logs, the status table and metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Invalid::Empty { .. } => "empty-file",
            Invalid::NotPem { .. } => "not-pem",
            Invalid::Der { .. } => "der-not-pem",
            Invalid::TruncatedPem { .. } => "truncated-pem",
            Invalid::MalformedPem { .. } => "malformed-pem",
            Invalid::NoCertificate { .. } => "no-certificate",
            Invalid::NoPrivateKey { .. } => "no-private-key",
            Invalid::SeveralPrivateKeys { .. } => "several-private-keys",
            Invalid::EncryptedKey => "encrypted-key",
            Invalid::BadCertificate { .. } => "bad-certificate",
            Invalid::BadKey { .. } => "bad-key",
            Invalid::UnsupportedKey { .. } => "unsupported-key",
            Invalid::NotLeafFirst { .. } => "not-leaf-first",
            Invalid::NotIssuedBy { .. } => "broken-chain",
            Invalid::KeyMismatch => "key-mismatch",
            Invalid::NoDnsNames => "no-dns-names",
            Invalid::Expired { .. } => "expired",
            Invalid::NotYetValid { .. } => "not-yet-valid",
        }
    }
}

/// "the -----BEGIN CERTIFICATE----- block", or a block with an unexpected label.
fn block(label: &str) -> String {
    if label.is_empty() {
        "a block with an unexpected PEM label".to_string()
    } else {
        format!("the -----BEGIN {label}----- block")
    }
}

/// `2026-03-01` (the UTC date).
fn ymd(t: &OffsetDateTime) -> String {
    let d = t.to_offset(time::UtcOffset::UTC).date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn ago(days: i64) -> String {
    match days {
        ..=0 => "less than a day ago".to_string(),
        1 => "1 day ago".to_string(),
        n => format!("{n} days ago"),
    }
}

fn ahead(days: i64) -> String {
    match days {
        ..=0 => "in less than a day".to_string(),
        1 => "in 1 day".to_string(),
        n => format!("in {n} days"),
    }
}
