//! Pure certificate validation: bytes (and `now`) in, values out. No I/O, no clock reads.
//!
//! Owns: parsing a PEM chain and private key into a [`Certificate`], the precise reason a
//! pair is [`Invalid`] (and which file it concerns, [`Part`]), the key/leaf match, the upload
//! form Alibaba documents (leaf first, LF, no blank lines; RSA keys PKCS#1, EC keys SEC1),
//! the renewal rule ([`renewal_overdue`]), domain coverage ([`covers`], [`CoverIndex`],
//! [`DomainSet`]) and the sharing of issuers' PEM between certificates ([`Chain`],
//! [`Issuers`]).
//!
//! Submodules: `pem` (PEM in and out), `key` (key parsing, matching, upload form), `chain`
//! (X.509, order, signatures, names), `cover` (coverage), `invalid` (the reasons).
//!
//! Invariants: a `Certificate` value always holds a parsed, leaf-first, signature-checked
//! chain and a key that matches the leaf; key bytes live only inside [`PrivateKey`], whose
//! `Debug` redacts and which zeroizes on drop, or in `Zeroizing` buffers while parsing.
//! (One exception outside our control: the PEM decoder's internal base64 buffer.)
//! ECDSA matching asks ring to derive the public key, which draws a nonce seed from the
//! system RNG; that is the only system call.

mod chain;
mod cover;
mod invalid;
mod key;
mod pem;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use time::OffsetDateTime;
use zeroize::Zeroizing;

#[cfg(test)]
pub(crate) use cover::best_for;
pub(crate) use cover::{CoverAll, DomainSet};
pub use cover::{CoverIndex, covers};
pub use invalid::Invalid;
pub use invalid::Part;

/// SHA-256 of the leaf certificate's DER.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Lowercase hex of all 32 bytes.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
    /// First 12 hex characters, for tables and names.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
    /// Parses 64 hex characters (either case).
    pub(crate) fn from_hex(s: &str) -> Option<Fingerprint> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Fingerprint(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.short())
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Fingerprint::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex characters"))
    }
}

/// The algorithm and size of a private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyType {
    Rsa { bits: u32 },
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyType::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyType::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyType::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// A private key in the PEM form Alibaba wants (RSA: PKCS#1, EC: SEC1, Ed25519: PKCS#8).
///
/// `Debug` never shows the key; the text is zeroized on drop. There is deliberately no
/// `Display` and no `Serialize`.
#[derive(Clone)]
pub struct PrivateKey {
    pem: Zeroizing<String>,
}

impl PrivateKey {
    /// Wraps a PEM text that is already in upload form.
    pub(crate) fn from_upload_pem(pem: Zeroizing<String>) -> PrivateKey {
        PrivateKey { pem }
    }
    /// The PEM text to send as `SSLPri`. Only the API client may call this.
    pub fn expose_upload_pem(&self) -> &str {
        &self.pem
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A validated certificate lineage: chain + matching key, in upload form.
#[derive(Clone, Debug)]
pub struct Certificate {
    /// SHA-256 of the leaf's DER.
    pub fingerprint: Fingerprint,
    /// DNS subjectAltNames of the leaf, lowercased, in certificate order.
    pub(crate) names: Vec<String>,
    pub(crate) not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub(crate) key_type: KeyType,
    /// The chain in upload form.
    chain: Chain,
    /// The private key in upload form; shared (not copied) by every upload of it.
    pub key: Arc<PrivateKey>,
}

impl Certificate {
    /// The chain in upload form, in its shared parts (an upload holds this, not a copy).
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// [`Chain::pem`] of [`Certificate::chain`].
    pub fn chain_pem(&self) -> String {
        self.chain.pem()
    }

    /// Whether `self` and `other` share one copy of their issuers' PEM.
    #[cfg(test)]
    pub(crate) fn shares_issuers_with(&self, other: &Certificate) -> bool {
        Arc::ptr_eq(&self.chain.issuers, &other.chain.issuers)
    }
}

/// A chain in upload form, held in two shared parts: the leaf's PEM block and its
/// issuers' PEM blocks. The issuers' part is one copy for every certificate of a scan with
/// the same issuers ([`Issuers`]), as thousands of lineages from one CA have; the whole
/// text is put together only for the call that sends it.
#[derive(Clone, Debug)]
pub struct Chain {
    leaf: Arc<str>,
    issuers: Arc<str>,
}

impl Chain {
    /// A chain given as one text (no sharing), for callers that have only that.
    pub fn whole(pem: &str) -> Chain {
        Chain {
            leaf: pem.into(),
            issuers: "".into(),
        }
    }

    /// Full chain, leaf first, LF line ends, no blank lines, nothing outside PEM blocks:
    /// the upload form (`SSLPub`).
    pub fn pem(&self) -> String {
        let mut out = String::with_capacity(self.leaf.len() + self.issuers.len());
        out.push_str(&self.leaf);
        out.push_str(&self.issuers);
        out
    }
}

/// The issuers' PEM texts of the certificates parsed so far, so that certificates with the
/// same issuers share one copy ([`parse_sharing`]). [`Issuers::prune`] drops the texts no
/// certificate holds any more.
#[derive(Debug, Default)]
pub(crate) struct Issuers(std::sync::Mutex<std::collections::HashSet<Arc<str>>>);

impl Issuers {
    fn intern(&self, pem: String) -> Arc<str> {
        let mut set = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(known) = set.get(pem.as_str()) {
            return Arc::clone(known);
        }
        let text: Arc<str> = pem.into();
        set.insert(Arc::clone(&text));
        text
    }

    /// Forgets the texts held by nothing but this set.
    pub(crate) fn prune(&self) {
        let mut set = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set.retain(|text| Arc::strong_count(text) > 1);
    }

    /// How many distinct texts are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().map(|s| s.len()).unwrap_or(0)
    }
}

/// [`parse`] then [`check_time`].
#[cfg(test)]
pub(crate) fn validate(
    chain: &[u8],
    key: &[u8],
    now: OffsetDateTime,
) -> Result<Certificate, Invalid> {
    let cert = parse(chain, key)?;
    check_time(&cert, now)?;
    Ok(cert)
}

/// Parses and checks a chain and key, independent of time (see [`check_time`]), so callers
/// may cache the result by file identity.
///
/// Checks, in order: both files are PEM with a certificate and exactly one unencrypted
/// private key; every certificate parses; the key parses and belongs to the first
/// certificate; each certificate is signed by the next; the leaf has DNS names.
pub fn parse(chain: &[u8], key: &[u8]) -> Result<Certificate, Invalid> {
    parse_sharing(chain, key, &Issuers::default())
}

/// [`parse`], with the issuers' PEM shared through `issuers` with the certificates parsed
/// before (the scanner's).
pub(crate) fn parse_sharing(
    chain: &[u8],
    key: &[u8],
    issuers: &Issuers,
) -> Result<Certificate, Invalid> {
    let ders = pem::read_chain(chain)?;
    let raw_key = pem::read_key(key)?;
    let certs = chain::parse_all(&ders)?;
    let key = key::parse(raw_key)?;
    let (Some(leaf), Some(leaf_der)) = (certs.first(), ders.first()) else {
        return Err(Invalid::NoCertificate { has_key: true });
    };
    chain::check_key(&certs, &key)?;
    chain::check_links(&certs)?;
    let names = chain::dns_names(leaf)?;
    let (key_type, key) = key::upload_form(&key, leaf.public_key())?;
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf_der);
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(digest.as_ref());
    Ok(Certificate {
        fingerprint: Fingerprint(fingerprint),
        names,
        not_before: leaf.validity().not_before.to_datetime(),
        not_after: leaf.validity().not_after.to_datetime(),
        key_type,
        chain: Chain {
            leaf: chain_pem(std::slice::from_ref(leaf_der)).into(),
            issuers: issuers.intern(chain_pem(ders.get(1..).unwrap_or_default())),
        },
        key: Arc::new(key),
    })
}

/// The leaf's DNS names of a chain alone (no key): what `check` shows for a lineage whose
/// certificate is readable but whose key is not. `None` when the chain does not parse.
pub(crate) fn leaf_names(chain: &[u8]) -> Option<Vec<String>> {
    let ders = pem::read_chain(chain).ok()?;
    let certs = chain::parse_all(&ders).ok()?;
    chain::dns_names(certs.first()?).ok()
}

/// `Ok` when `now` is within [notBefore, notAfter] (both inclusive).
pub(crate) fn check_time(cert: &Certificate, now: OffsetDateTime) -> Result<(), Invalid> {
    if now < cert.not_before {
        return Err(Invalid::NotYetValid {
            not_before: cert.not_before,
            days: (cert.not_before - now).whole_days(),
        });
    }
    if now > cert.not_after {
        return Err(Invalid::Expired {
            not_after: cert.not_after,
            days: (now - cert.not_after).whole_days(),
        });
    }
    Ok(())
}

/// Less than a third of the certificate's lifetime is left at `now` (certbot renews at
/// that point, so an overdue certificate means a renewal failed). Expired ones are overdue.
pub(crate) fn renewal_overdue(cert: &Certificate, now: OffsetDateTime) -> bool {
    let lifetime = cert.not_after - cert.not_before;
    let left = cert.not_after - now;
    left.checked_mul(3).is_none_or(|left3| left3 < lifetime)
}

/// The upload form of a chain: every certificate re-encoded, leaf first, LF line ends.
fn chain_pem(ders: &[Vec<u8>]) -> String {
    let len = ders
        .iter()
        .map(|d| pem::encoded_len("CERTIFICATE", d.len()))
        .sum();
    let mut out = String::with_capacity(len);
    for der in ders {
        pem::encode("CERTIFICATE", der, &mut out);
    }
    out
}

/// How a certificate name covers a CDN domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Match {
    /// A wildcard SAN covers it (lower rank).
    Wildcard,
    /// A SAN equals the domain.
    Exact,
}

/// One valid lineage as the best-lineage rule sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The lineage's path (ties are broken by the lexically first).
    pub id: &'a str,
    pub names: &'a [String],
    pub not_after: OffsetDateTime,
}
