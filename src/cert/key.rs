//! Private keys: parsing RSA (PKCS#1, PKCS#8), ECDSA P-256/P-384 (SEC1, PKCS#8) and Ed25519
//! (PKCS#8), matching a key with a certificate's SubjectPublicKeyInfo, and the upload form
//! (RSA: PKCS#1, EC: SEC1 with the named curve, Ed25519: PKCS#8).
//!
//! Matching: RSA compares modulus and exponent with the SPKI (cheap; ring's full RSA key
//! validation costs milliseconds). EC and Ed25519 let ring derive the public key from the
//! private one and compare it with the SPKI's point.
//!
//! Invariant: every buffer holding private key bytes is `Zeroizing`; public values (RSA
//! modulus, EC points) are plain.

use pkcs8::der::asn1::{ObjectIdentifier, OctetStringRef};
use pkcs8::der::{Decode, Encode};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING};
use ring::signature::{EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

use super::invalid::Invalid;
use super::pem::{self, KeyEncoding, RawKey};
use super::{KeyType, PrivateKey};

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Key algorithms we name in "unsupported key type" messages.
const KNOWN_UNSUPPORTED: &[(&str, &str)] = &[
    ("1.2.840.113549.1.1.10", "RSA-PSS"),
    ("1.2.840.10040.4.1", "DSA"),
    ("1.3.101.113", "Ed448"),
    ("1.3.101.110", "X25519"),
    ("1.3.101.111", "X448"),
    ("1.3.132.0.35", "ECDSA P-521"),
    ("1.3.132.0.10", "ECDSA secp256k1"),
];

/// The two supported ECDSA curves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Curve {
    P256,
    P384,
}

impl Curve {
    fn from_oid(oid: &[u8]) -> Option<Curve> {
        if oid == OID_P256.as_bytes() {
            Some(Curve::P256)
        } else if oid == OID_P384.as_bytes() {
            Some(Curve::P384)
        } else {
            None
        }
    }
    fn oid(self) -> ObjectIdentifier {
        match self {
            Curve::P256 => OID_P256,
            Curve::P384 => OID_P384,
        }
    }
    fn scalar_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
    fn ring_alg(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            Curve::P384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }
    fn key_type(self) -> KeyType {
        match self {
            Curve::P256 => KeyType::EcdsaP256,
            Curve::P384 => KeyType::EcdsaP384,
        }
    }
}

/// A parsed private key; public parts in the clear, private parts zeroized on drop.
pub(super) enum Key {
    Rsa {
        /// The PKCS#1 `RSAPrivateKey` DER.
        pkcs1: Zeroizing<Vec<u8>>,
        modulus: Vec<u8>,
        exponent: Vec<u8>,
    },
    Ec {
        /// `None` when neither the SEC1 nor the PKCS#8 structure names the curve.
        curve: Option<Curve>,
        /// The private scalar, as stored (possibly without leading zeros).
        scalar: Zeroizing<Vec<u8>>,
        /// The public point the key file carries, if any.
        public: Option<Vec<u8>>,
    },
    Ed25519 {
        pkcs8: Zeroizing<Vec<u8>>,
        seed: Zeroizing<Vec<u8>>,
    },
}

/// Parses a decoded key block.
pub(super) fn parse(raw: RawKey) -> Result<Key, Invalid> {
    match raw.encoding {
        KeyEncoding::Pkcs1 => parse_rsa(raw.der),
        KeyEncoding::Sec1 => parse_sec1(&raw.der, None),
        KeyEncoding::Pkcs8 => parse_pkcs8(raw.der),
    }
}

fn parse_pkcs8(der: Zeroizing<Vec<u8>>) -> Result<Key, Invalid> {
    let info = pkcs8::PrivateKeyInfoRef::from_der(&der).map_err(bad_key)?;
    let (oid, param) = info.algorithm.oids().map_err(bad_key)?;
    let inner = info.private_key.as_bytes();
    if oid == OID_RSA {
        parse_rsa(Zeroizing::new(inner.to_vec()))
    } else if oid == OID_EC {
        let curve = match param {
            Some(p) => Some(Curve::from_oid(p.as_bytes()).ok_or_else(|| unsupported(&p))?),
            None => None,
        };
        parse_sec1(inner, curve)
    } else if oid == OID_ED25519 {
        let seed = <&OctetStringRef>::from_der(inner)
            .map_err(bad_key)?
            .as_bytes();
        if seed.len() != 32 {
            return Err(bad_key_text("the Ed25519 seed is not 32 bytes"));
        }
        let seed = Zeroizing::new(seed.to_vec());
        Ok(Key::Ed25519 { pkcs8: der, seed })
    } else {
        Err(unsupported(&oid))
    }
}

fn parse_rsa(pkcs1: Zeroizing<Vec<u8>>) -> Result<Key, Invalid> {
    let key = pkcs1::RsaPrivateKeyRef::from_der(&pkcs1).map_err(bad_key)?;
    if key.other_prime_infos.is_some() {
        return Err(Invalid::UnsupportedKey {
            what: "multi-prime RSA".into(),
        });
    }
    let modulus = strip_zeros(key.modulus.as_bytes()).to_vec();
    let exponent = strip_zeros(key.public_exponent.as_bytes()).to_vec();
    Ok(Key::Rsa {
        pkcs1,
        modulus,
        exponent,
    })
}

fn parse_sec1(der: &[u8], pkcs8_curve: Option<Curve>) -> Result<Key, Invalid> {
    let key = sec1::EcPrivateKey::from_der(der).map_err(bad_key)?;
    let own_curve = match key.parameters.and_then(|p| p.named_curve()) {
        Some(oid) => Some(Curve::from_oid(oid.as_bytes()).ok_or_else(|| unsupported(&oid))?),
        None => None,
    };
    if let (Some(a), Some(b)) = (own_curve, pkcs8_curve)
        && a != b
    {
        return Err(bad_key_text(
            "the SEC1 and PKCS#8 structures name different curves",
        ));
    }
    Ok(Key::Ec {
        curve: own_curve.or(pkcs8_curve),
        scalar: Zeroizing::new(key.private_key.to_vec()),
        public: key.public_key.map(<[u8]>::to_vec),
    })
}

/// Does this key belong to the certificate with this SubjectPublicKeyInfo?
///
/// `Ok(false)` for any other key, of any type; `Err` only when the key itself is unusable.
pub(super) fn matches(key: &Key, spki: &SubjectPublicKeyInfo<'_>) -> Result<bool, Invalid> {
    let alg = spki.algorithm.algorithm.as_bytes();
    let point: &[u8] = &spki.subject_public_key.data;
    match key {
        Key::Rsa {
            modulus, exponent, ..
        } => Ok(alg == OID_RSA.as_bytes()
            && match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => {
                    strip_zeros(rsa.modulus) == modulus.as_slice()
                        && strip_zeros(rsa.exponent) == exponent.as_slice()
                }
                _ => false,
            }),
        Key::Ec {
            curve,
            scalar,
            public,
        } => {
            let Some(spki_curve) = spki_curve(spki) else {
                return Ok(false);
            };
            if curve.is_some_and(|c| c != spki_curve)
                || public.as_ref().is_some_and(|p| p.as_slice() != point)
            {
                return Ok(false);
            }
            let padded = pad_scalar(scalar, spki_curve)?;
            let rng = ring::rand::SystemRandom::new();
            ring_verdict(EcdsaKeyPair::from_private_key_and_public_key(
                spki_curve.ring_alg(),
                &padded,
                point,
                &rng,
            ))
        }
        Key::Ed25519 { seed, .. } => {
            if alg != OID_ED25519.as_bytes() {
                return Ok(false);
            }
            ring_verdict(Ed25519KeyPair::from_seed_and_public_key(seed, point))
        }
    }
}

/// The key's type and upload form, for the certificate it [`matches`].
pub(super) fn upload_form(
    key: &Key,
    spki: &SubjectPublicKeyInfo<'_>,
) -> Result<(KeyType, PrivateKey), Invalid> {
    match key {
        Key::Rsa { pkcs1, modulus, .. } => {
            let bits = bit_len(modulus);
            Ok((KeyType::Rsa { bits }, to_pem("RSA PRIVATE KEY", pkcs1)))
        }
        Key::Ec { scalar, .. } => {
            let curve = spki_curve(spki).ok_or(Invalid::KeyMismatch)?;
            let padded = pad_scalar(scalar, curve)?;
            let sec1 = sec1::EcPrivateKey {
                private_key: &padded,
                parameters: Some(sec1::EcParameters::NamedCurve(curve.oid())),
                public_key: Some(&spki.subject_public_key.data),
            };
            let der = encode_secret(&sec1)?;
            Ok((curve.key_type(), to_pem("EC PRIVATE KEY", &der)))
        }
        Key::Ed25519 { pkcs8, .. } => Ok((KeyType::Ed25519, to_pem("PRIVATE KEY", pkcs8))),
    }
}

fn spki_curve(spki: &SubjectPublicKeyInfo<'_>) -> Option<Curve> {
    if spki.algorithm.algorithm.as_bytes() != OID_EC.as_bytes() {
        return None;
    }
    let param = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
    Curve::from_oid(param.as_bytes())
}

/// The scalar left-padded with zeros to the curve's size (some encoders strip them).
fn pad_scalar(scalar: &[u8], curve: Curve) -> Result<Zeroizing<Vec<u8>>, Invalid> {
    let len = curve.scalar_len();
    let Some(pad) = len.checked_sub(scalar.len()) else {
        return Err(bad_key_text(
            "the EC private scalar is longer than the curve allows",
        ));
    };
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    out.resize(pad, 0);
    out.extend_from_slice(scalar);
    Ok(out)
}

/// ring's judgement of a (private, public) pair: consistent, another key, or broken.
fn ring_verdict<T>(result: Result<T, ring::error::KeyRejected>) -> Result<bool, Invalid> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.to_string() == "InconsistentComponents" => Ok(false),
        Err(e) => Err(bad_key_text(&format!("ring rejects it ({e})"))),
    }
}

fn encode_secret(value: &impl Encode) -> Result<Zeroizing<Vec<u8>>, Invalid> {
    let len = value
        .encoded_len()
        .and_then(usize::try_from)
        .map_err(bad_key)?;
    let mut buf = Zeroizing::new(vec![0u8; len]);
    value.encode_to_slice(&mut buf).map_err(bad_key)?;
    Ok(buf)
}

fn to_pem(label: &str, der: &[u8]) -> PrivateKey {
    let mut out = Zeroizing::new(String::with_capacity(pem::encoded_len(label, der.len())));
    pem::encode(label, der, &mut out);
    PrivateKey::from_upload_pem(out)
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// Bit length of a big-endian unsigned integer without leading zeros.
fn bit_len(n: &[u8]) -> u32 {
    match n.first() {
        None => 0,
        Some(first) => {
            let len = u32::try_from(n.len()).unwrap_or(u32::MAX / 8);
            len.saturating_sub(1) * 8 + (8 - first.leading_zeros())
        }
    }
}

fn unsupported(oid: &ObjectIdentifier) -> Invalid {
    let id = oid.to_string();
    let what = KNOWN_UNSUPPORTED
        .iter()
        .find(|(known, _)| *known == id)
        .map_or_else(|| format!("algorithm {id}"), |(_, name)| name.to_string());
    Invalid::UnsupportedKey { what }
}

/// A DER error says where the structure breaks, never what the bytes are.
fn bad_key(e: pkcs8::der::Error) -> Invalid {
    bad_key_text(&e.to_string())
}

fn bad_key_text(detail: &str) -> Invalid {
    Invalid::BadKey {
        detail: detail.to_string(),
    }
}
