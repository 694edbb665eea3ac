//! A throwaway certificate authority for `certrotd demo`, the emulator's tests and the
//! integration tests. Never used to validate anything at run time.
//!
//! Owns: a root and an intermediate CA (ECDSA P-256, made with rcgen's ring backend) and
//! issuing leaf certificates with ECDSA P-256/P-384, Ed25519 or a caller-supplied RSA key.
//!
//! Invariants: nothing here reads the clock (the caller gives each leaf's validity; the CAs
//! are valid 2000-01-01 to 2099-12-31); every [`TestCa::issue`] call gets a fresh random
//! serial number, so two issued certificates always differ, even with the same key and
//! dates. rcgen's ring backend cannot generate RSA keys: pass an existing PKCS#8 RSA key
//! (for example `tests/fixtures/rsa-2048-a.pkcs8.pem`) as [`LeafKey::RsaPkcs8Pem`].

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber, SignatureAlgorithm,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

pub use rcgen::Error;

/// A root CA and an intermediate CA that signs leaves.
pub struct TestCa {
    root_pem: String,
    intermediate_pem: String,
    intermediate: Issuer<'static, KeyPair>,
}

/// What to issue: DNS names (in order; may be empty), validity and key algorithm.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub(crate) names: Vec<String>,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
    pub(crate) key: LeafKey,
}

/// The leaf's key: generated fresh, or an existing RSA key.
#[derive(Clone)]
pub enum LeafKey {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    /// An existing RSA private key in PKCS#8 PEM (`BEGIN PRIVATE KEY`); signs with SHA-256.
    RsaPkcs8Pem(String),
}

impl std::fmt::Debug for LeafKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeafKey::EcdsaP256 => f.write_str("EcdsaP256"),
            LeafKey::EcdsaP384 => f.write_str("EcdsaP384"),
            LeafKey::Ed25519 => f.write_str("Ed25519"),
            LeafKey::RsaPkcs8Pem(_) => f.write_str("RsaPkcs8Pem(<redacted>)"),
        }
    }
}

/// An issued leaf, as certbot would write it (PEM, LF line ends).
#[derive(Clone)]
pub struct Issued {
    /// The leaf alone (`cert.pem`).
    pub cert_pem: String,
    /// The intermediate alone (`chain.pem`).
    pub chain_pem: String,
    /// Leaf then intermediate (`fullchain.pem`).
    pub fullchain_pem: String,
    /// The leaf's private key, PKCS#8 (`privkey.pem`).
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl Leaf {
    /// A P-256 leaf for `names`, valid from `not_before` to `not_after`.
    pub fn new(names: &[&str], not_before: OffsetDateTime, not_after: OffsetDateTime) -> Leaf {
        Leaf {
            names: names.iter().map(|n| n.to_string()).collect(),
            not_before,
            not_after,
            key: LeafKey::EcdsaP256,
        }
    }

    /// The same leaf with another key.
    pub fn with_key(mut self, key: LeafKey) -> Leaf {
        self.key = key;
        self
    }
}

impl TestCa {
    /// A fresh root ("`name` Root CA") and intermediate ("`name` Intermediate CA").
    pub fn new(name: &str) -> Result<TestCa, Error> {
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let root_params = ca_params(&format!("{name} Root CA"), None)?;
        let root_pem = root_params.self_signed(&root_key)?.pem();
        let root = Issuer::new(root_params, root_key);

        let int_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let int_params = ca_params(&format!("{name} Intermediate CA"), Some(0))?;
        let intermediate_pem = int_params.signed_by(&int_key, &root)?.pem();
        Ok(TestCa {
            root_pem,
            intermediate_pem,
            intermediate: Issuer::new(int_params, int_key),
        })
    }

    /// The self-signed root certificate (PEM). Not part of [`Issued::fullchain_pem`].
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The intermediate certificate (PEM), the same as [`Issued::chain_pem`].
    #[cfg(test)]
    pub(crate) fn intermediate_pem(&self) -> &str {
        &self.intermediate_pem
    }

    /// Issues a leaf signed by the intermediate, with a random serial number.
    pub fn issue(&self, leaf: &Leaf) -> Result<Issued, Error> {
        let key = leaf_key(&leaf.key)?;
        let mut params = CertificateParams::new(leaf.names.clone())?;
        let mut dn = DistinguishedName::new();
        if let Some(first) = leaf.names.first() {
            dn.push(DnType::CommonName, first.as_str());
        }
        params.distinguished_name = dn;
        params.not_before = leaf.not_before;
        params.not_after = leaf.not_after;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert_pem = params.signed_by(&key, &self.intermediate)?.pem();
        Ok(Issued {
            fullchain_pem: format!("{cert_pem}{}", self.intermediate_pem),
            cert_pem,
            chain_pem: self.intermediate_pem.clone(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// CA parameters; `path_len` `None` means unconstrained (the root).
fn ca_params(common_name: &str, path_len: Option<u8>) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = utc_midnight(2000, Month::January, 1)?;
    params.not_after = utc_midnight(2099, Month::December, 31)?;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn leaf_key(key: &LeafKey) -> Result<KeyPair, Error> {
    let generate = |alg: &'static SignatureAlgorithm| KeyPair::generate_for(alg);
    match key {
        LeafKey::EcdsaP256 => generate(&rcgen::PKCS_ECDSA_P256_SHA256),
        LeafKey::EcdsaP384 => generate(&rcgen::PKCS_ECDSA_P384_SHA384),
        LeafKey::Ed25519 => generate(&rcgen::PKCS_ED25519),
        LeafKey::RsaPkcs8Pem(pem) => {
            KeyPair::from_pkcs8_pem_and_sign_algo(pem, &rcgen::PKCS_RSA_SHA256)
        }
    }
}

/// 16 random bytes with the top bit clear (a positive INTEGER of at most 16 bytes).
fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::RingUnspecified)?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

fn utc_midnight(year: i32, month: Month, day: u8) -> Result<OffsetDateTime, Error> {
    let date = Date::from_calendar_date(year, month, day).map_err(|_| Error::Time)?;
    Ok(PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use x509_parser::pem::parse_x509_pem;

    const RSA_A: &str = include_str!("../tests/fixtures/rsa-2048-a.pkcs8.pem");

    fn leaf() -> Leaf {
        Leaf::new(
            &["www.example.com", "*.example.com"],
            datetime!(2026-01-01 0:00 UTC),
            datetime!(2026-04-01 0:00 UTC),
        )
    }

    fn pem_blocks(text: &str) -> usize {
        text.matches("-----BEGIN CERTIFICATE-----").count()
    }

    #[test]
    fn issues_leaf_first_fullchain_with_names_and_dates() {
        let ca = TestCa::new("Test").unwrap();
        let issued = ca.issue(&leaf()).unwrap();
        assert_eq!(pem_blocks(&issued.cert_pem), 1);
        assert_eq!(pem_blocks(&issued.chain_pem), 1);
        assert_eq!(pem_blocks(&issued.fullchain_pem), 2);
        assert!(issued.fullchain_pem.starts_with(&issued.cert_pem));
        assert!(issued.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));

        let (_, pem) = parse_x509_pem(issued.cert_pem.as_bytes()).unwrap();
        let x509 = pem.parse_x509().unwrap();
        assert_eq!(x509.validity().not_before.to_datetime(), leaf().not_before);
        assert_eq!(x509.validity().not_after.to_datetime(), leaf().not_after);
        let names: Vec<String> = x509
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names,
            ["DNSName(www.example.com)", "DNSName(*.example.com)"]
        );
        assert!(x509.issuer().to_string().contains("Test Intermediate CA"));
    }

    #[test]
    fn chain_verifies_up_to_the_root() {
        let ca = TestCa::new("Chain").unwrap();
        let issued = ca.issue(&leaf()).unwrap();
        let (_, leaf_pem) = parse_x509_pem(issued.cert_pem.as_bytes()).unwrap();
        let (_, int_pem) = parse_x509_pem(ca.intermediate_pem().as_bytes()).unwrap();
        let (_, root_pem) = parse_x509_pem(ca.root_pem().as_bytes()).unwrap();
        let (leaf, int, root) = (
            leaf_pem.parse_x509().unwrap(),
            int_pem.parse_x509().unwrap(),
            root_pem.parse_x509().unwrap(),
        );
        leaf.verify_signature(Some(int.public_key())).unwrap();
        int.verify_signature(Some(root.public_key())).unwrap();
        root.verify_signature(None).unwrap();
        assert!(int.is_ca() && root.is_ca() && !leaf.is_ca());
    }

    #[test]
    fn each_issue_is_distinct_even_with_the_same_key() {
        let ca = TestCa::new("Distinct").unwrap();
        let rsa = leaf().with_key(LeafKey::RsaPkcs8Pem(RSA_A.to_string()));
        let one = ca.issue(&rsa).unwrap();
        let two = ca.issue(&rsa).unwrap();
        assert_ne!(one.cert_pem, two.cert_pem);
        assert_eq!(one.key_pem, two.key_pem);
    }

    #[test]
    fn every_key_type_issues() {
        let ca = TestCa::new("Keys").unwrap();
        for (key, oid) in [
            (LeafKey::EcdsaP256, "1.2.840.10045.2.1"),
            (LeafKey::EcdsaP384, "1.2.840.10045.2.1"),
            (LeafKey::Ed25519, "1.3.101.112"),
            (
                LeafKey::RsaPkcs8Pem(RSA_A.to_string()),
                "1.2.840.113549.1.1.1",
            ),
        ] {
            let issued = ca.issue(&leaf().with_key(key)).unwrap();
            let (_, pem) = parse_x509_pem(issued.cert_pem.as_bytes()).unwrap();
            let x509 = pem.parse_x509().unwrap();
            assert_eq!(x509.public_key().algorithm.algorithm.to_id_string(), oid);
        }
    }

    #[test]
    fn a_bad_rsa_key_is_an_error_not_a_panic() {
        let ca = TestCa::new("Bad").unwrap();
        let bad = leaf().with_key(LeafKey::RsaPkcs8Pem("not a key".into()));
        assert!(ca.issue(&bad).is_err());
    }

    #[test]
    fn debug_redacts_keys() {
        let ca = TestCa::new("Debug").unwrap();
        let issued = ca.issue(&leaf()).unwrap();
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
        let key = LeafKey::RsaPkcs8Pem(RSA_A.to_string());
        assert!(!format!("{key:?}").contains("PRIVATE KEY"));
    }
}
