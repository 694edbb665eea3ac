//! Tests of the cert module: every key form, the upload form, chains, every `Invalid`
//! message, coverage and the best-lineage rule. Certificates come from `testca`; RSA keys
//! from `tests/fixtures` (made once with openssl).

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::testca::{Issued, Leaf, LeafKey, TestCa};

const RSA_A_PKCS8: &str = include_str!("../../tests/fixtures/rsa-2048-a.pkcs8.pem");
const RSA_A_PKCS1: &str = include_str!("../../tests/fixtures/rsa-2048-a.pkcs1.pem");
const RSA_B_PKCS8: &str = include_str!("../../tests/fixtures/rsa-2048-b.pkcs8.pem");
const RSA_B_PKCS1: &str = include_str!("../../tests/fixtures/rsa-2048-b.pkcs1.pem");
const RSA_A_ENCRYPTED_PKCS8: &str =
    include_str!("../../tests/fixtures/rsa-2048-a.encrypted-pkcs8.pem");
const RSA_A_ENCRYPTED_PKCS1: &str =
    include_str!("../../tests/fixtures/rsa-2048-a.encrypted-pkcs1.pem");

const NOT_BEFORE: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);
const NOT_AFTER: OffsetDateTime = datetime!(2026-04-01 0:00 UTC);
const NOW: OffsetDateTime = datetime!(2026-02-01 12:00 UTC);

fn ca() -> TestCa {
    TestCa::new("Test").unwrap()
}

fn leaf(key: LeafKey) -> Leaf {
    Leaf::new(&["www.example.com", "*.example.com"], NOT_BEFORE, NOT_AFTER).with_key(key)
}

fn issue(key: LeafKey) -> Issued {
    ca().issue(&leaf(key)).unwrap()
}

fn rsa_a() -> LeafKey {
    LeafKey::RsaPkcs8Pem(RSA_A_PKCS8.to_string())
}

fn ok(chain: &str, key: &str) -> Certificate {
    parse(chain.as_bytes(), key.as_bytes()).unwrap()
}

fn err(chain: &str, key: &str) -> Invalid {
    parse(chain.as_bytes(), key.as_bytes()).unwrap_err()
}

fn err_bytes(chain: &[u8], key: &[u8]) -> Invalid {
    parse(chain, key).unwrap_err()
}

fn pem_of(label: &str, der: &[u8]) -> String {
    let mut out = String::new();
    pem::encode(label, der, &mut out);
    out
}

fn der_blocks(text: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(text.as_bytes())
        .map(|c| c.unwrap().to_vec())
        .collect()
}

/// The DER inside the only PEM block of `text`, whatever its label.
fn only_der(text: &str) -> Vec<u8> {
    let (_, der) =
        <(rustls_pki_types::pem::SectionKind, Vec<u8>)>::from_pem_slice(text.as_bytes()).unwrap();
    der
}

/// Shape of the upload form: LF only, no blank lines, 64-character lines, only PEM blocks.
fn assert_canonical_pem(text: &str, label: &str) {
    assert!(!text.contains('\r'), "CR in {label}");
    assert!(text.ends_with('\n'));
    let mut inside = false;
    for line in text.lines() {
        assert!(!line.is_empty(), "blank line in {label}");
        if line == format!("-----BEGIN {label}-----") {
            assert!(!inside);
            inside = true;
        } else if line == format!("-----END {label}-----") {
            assert!(inside);
            inside = false;
        } else {
            assert!(inside, "text outside PEM blocks: {line}");
            assert!(line.len() <= 64 && !line.is_empty());
        }
    }
    assert!(!inside);
}

// ---- key forms and the upload form -------------------------------------------------------

#[test]
fn rsa_pkcs8_and_pkcs1_give_the_pkcs1_upload_form() {
    let issued = issue(rsa_a());
    for key in [RSA_A_PKCS8, RSA_A_PKCS1] {
        let cert = ok(&issued.fullchain_pem, key);
        assert_eq!(cert.key_type, KeyType::Rsa { bits: 2048 });
        assert_eq!(cert.key_type.to_string(), "RSA-2048");
        let upload = cert.key.expose_upload_pem();
        assert_canonical_pem(upload, "RSA PRIVATE KEY");
        // openssl writes canonical PEM, so the PKCS#1 fixture is the expected text.
        assert_eq!(upload, RSA_A_PKCS1);
        // The upload form is itself accepted and stable.
        assert_eq!(
            ok(&issued.fullchain_pem, upload).key.expose_upload_pem(),
            upload
        );
    }
}

#[test]
fn ecdsa_pkcs8_gives_sec1_with_named_curve_and_public_key() {
    for (key, key_type, curve_oid) in [
        (
            LeafKey::EcdsaP256,
            KeyType::EcdsaP256,
            "1.2.840.10045.3.1.7",
        ),
        (LeafKey::EcdsaP384, KeyType::EcdsaP384, "1.3.132.0.34"),
    ] {
        let issued = issue(key);
        let cert = ok(&issued.fullchain_pem, &issued.key_pem);
        assert_eq!(cert.key_type, key_type);
        let upload = cert.key.expose_upload_pem();
        assert_canonical_pem(upload, "EC PRIVATE KEY");

        let der = only_der(upload);
        let sec1 = sec1::EcPrivateKey::try_from(der.as_slice()).unwrap();
        let named = sec1.parameters.and_then(|p| p.named_curve()).unwrap();
        assert_eq!(named.to_string(), curve_oid);
        let leaf_der = der_blocks(&issued.cert_pem).remove(0);
        let (_, x509) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        assert_eq!(
            sec1.public_key.unwrap(),
            &x509.public_key().subject_public_key.data[..]
        );
        // Round trip: the SEC1 form parses and still matches, unchanged.
        assert_eq!(
            ok(&issued.fullchain_pem, upload).key.expose_upload_pem(),
            upload
        );
    }
}

#[test]
fn sec1_without_curve_parameters_is_accepted_and_completed() {
    let issued = issue(LeafKey::EcdsaP256);
    let pkcs8 = only_der(&issued.key_pem);
    let info = pkcs8::PrivateKeyInfoRef::try_from(pkcs8.as_slice()).unwrap();
    let bare = sec1::EcPrivateKey::try_from(info.private_key.as_bytes()).unwrap();
    assert!(
        bare.parameters.is_none(),
        "ring's PKCS#8 omits the inner curve"
    );
    let bare_pem = pem_of("EC PRIVATE KEY", info.private_key.as_bytes());

    let cert = ok(&issued.fullchain_pem, &bare_pem);
    let completed = only_der(cert.key.expose_upload_pem());
    let sec1 = sec1::EcPrivateKey::try_from(completed.as_slice()).unwrap();
    assert!(sec1.parameters.is_some());
    assert_eq!(sec1.private_key, bare.private_key);
}

#[test]
fn ed25519_stays_pkcs8() {
    let issued = issue(LeafKey::Ed25519);
    let cert = ok(&issued.fullchain_pem, &issued.key_pem);
    assert_eq!(cert.key_type, KeyType::Ed25519);
    let upload = cert.key.expose_upload_pem();
    assert_canonical_pem(upload, "PRIVATE KEY");
    assert_eq!(only_der(upload), only_der(&issued.key_pem));
    assert_eq!(
        ok(&issued.fullchain_pem, upload).key.expose_upload_pem(),
        upload
    );
}

#[test]
fn chain_upload_form_is_canonical_leaf_first() {
    let ca = ca();
    let issued = ca.issue(&leaf(LeafKey::EcdsaP256)).unwrap();
    // Messy input: CRLF, blank lines, text outside blocks, the root appended.
    let messy = format!(
        "subject=CN = www.example.com\r\n\r\n{}\r\n\n# intermediate\n{}{}",
        issued.cert_pem.replace('\n', "\r\n"),
        issued.chain_pem,
        ca.root_pem()
    );
    let cert = ok(&messy, &issued.key_pem);
    assert_canonical_pem(&cert.chain_pem(), "CERTIFICATE");
    let want = format!("{}{}", issued.fullchain_pem, ca.root_pem());
    assert_eq!(der_blocks(&cert.chain_pem()), der_blocks(&want));
    assert!(
        cert.chain_pem()
            .starts_with("-----BEGIN CERTIFICATE-----\n")
    );
}

#[test]
fn a_chain_file_that_also_holds_the_key_never_copies_it() {
    let issued = issue(LeafKey::EcdsaP256);
    let combined = format!("{}{}", issued.fullchain_pem, issued.key_pem);
    let cert = ok(&combined, &issued.key_pem);
    assert!(!cert.chain_pem().contains("PRIVATE KEY"));
    assert_eq!(der_blocks(&cert.chain_pem()).len(), 2);
}

#[test]
fn openssl_ecparam_output_with_parameters_block_is_accepted() {
    let issued = issue(LeafKey::EcdsaP256);
    let sec1 = ok(&issued.fullchain_pem, &issued.key_pem).key;
    let with_params = format!(
        "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
        sec1.expose_upload_pem()
    );
    assert!(parse(issued.fullchain_pem.as_bytes(), with_params.as_bytes()).is_ok());
}

#[test]
fn extracts_names_fingerprint_and_validity() {
    let names = [
        "WWW.Example.COM",
        "*.example.com",
        "api.example.com",
        "10.0.0.1",
    ];
    let issued = ca()
        .issue(&Leaf::new(&names, NOT_BEFORE, NOT_AFTER))
        .unwrap();
    let cert = ok(&issued.fullchain_pem, &issued.key_pem);
    assert_eq!(
        cert.names,
        ["www.example.com", "*.example.com", "api.example.com"]
    );
    let leaf_der = der_blocks(&issued.cert_pem).remove(0);
    let digest = ring::digest::digest(&ring::digest::SHA256, &leaf_der);
    assert_eq!(cert.fingerprint.0.as_slice(), digest.as_ref());
    assert_eq!(cert.not_before, NOT_BEFORE);
    assert_eq!(cert.not_after, NOT_AFTER);
}

#[test]
fn each_issue_has_its_own_fingerprint() {
    let ca = ca();
    let one = ca.issue(&leaf(rsa_a())).unwrap();
    let two = ca.issue(&leaf(rsa_a())).unwrap();
    assert_ne!(
        ok(&one.fullchain_pem, RSA_A_PKCS1).fingerprint,
        ok(&two.fullchain_pem, RSA_A_PKCS1).fingerprint
    );
}

#[test]
fn debug_never_shows_key_text() {
    for key in [rsa_a(), LeafKey::EcdsaP256, LeafKey::Ed25519] {
        let issued = issue(key);
        let cert = ok(&issued.fullchain_pem, &issued.key_pem);
        let upload = cert.key.expose_upload_pem().to_string();
        let debug = format!("{cert:?} {:?} {:#?}", cert.key, cert);
        assert!(!debug.contains("PRIVATE KEY"));
        for line in upload.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!debug.contains(line));
        }
        assert!(debug.contains("PrivateKey(<redacted>)"));
    }
}

// ---- chains ------------------------------------------------------------------------------

#[test]
fn leaf_alone_and_full_chain_with_root_are_valid() {
    let ca = ca();
    let issued = ca.issue(&leaf(LeafKey::EcdsaP256)).unwrap();
    ok(&issued.cert_pem, &issued.key_pem);
    let with_root = format!("{}{}", issued.fullchain_pem, ca.root_pem());
    ok(&with_root, &issued.key_pem);
}

#[test]
fn intermediate_before_leaf_is_not_leaf_first() {
    for key in [rsa_a(), LeafKey::EcdsaP256, LeafKey::Ed25519] {
        let issued = issue(key);
        let shuffled = format!("{}{}", issued.chain_pem, issued.cert_pem);
        let e = err(&shuffled, &issued.key_pem);
        assert_eq!(e, Invalid::NotLeafFirst { leaf: 2 });
        assert_eq!(
            e.to_string(),
            "the chain is not leaf first: the private key belongs to certificate 2 of the file; \
             put the leaf certificate first, then each issuer (as fullchain.pem does)"
        );
    }
}

#[test]
fn intermediates_out_of_order_name_the_broken_link() {
    let ca = ca();
    let issued = ca.issue(&leaf(LeafKey::EcdsaP256)).unwrap();
    let shuffled = format!("{}{}{}", issued.cert_pem, ca.root_pem(), issued.chain_pem);
    let e = err(&shuffled, &issued.key_pem);
    assert_eq!(
        e.to_string(),
        "certificate 1 (CN=www.example.com) is not issued by certificate 2 (CN=Test Root CA); \
         the file must hold the leaf first, then each certificate's issuer \
         (its issuer is certificate 3)"
    );
    assert_eq!(e.kind(), "broken-chain");
    assert_eq!(e.part(), Some(Part::Chain));
}

#[test]
fn an_intermediate_of_another_ca_is_not_the_issuer() {
    let issued = issue(LeafKey::EcdsaP256);
    let other = TestCa::new("Other").unwrap();
    let chain = format!("{}{}", issued.cert_pem, other.intermediate_pem());
    assert_eq!(
        err(&chain, &issued.key_pem).to_string(),
        "certificate 1 (CN=www.example.com) is not issued by certificate 2 \
         (CN=Other Intermediate CA); the file must hold the leaf first, then each \
         certificate's issuer"
    );
}

#[test]
fn same_issuer_name_but_wrong_signature_is_caught() {
    // Two CAs with the same names: the names chain up, the signature does not.
    let issued = issue(LeafKey::EcdsaP256);
    let twin = TestCa::new("Test").unwrap();
    let chain = format!("{}{}", issued.cert_pem, twin.intermediate_pem());
    let e = err(&chain, &issued.key_pem);
    assert!(
        matches!(
            e,
            Invalid::NotIssuedBy {
                index: 1,
                next: 2,
                ..
            }
        ),
        "{e}"
    );
}

// ---- every Invalid, with its message ----------------------------------------------------

#[test]
fn empty_files() {
    let issued = issue(LeafKey::EcdsaP256);
    for empty in ["", " \n\r\n\t"] {
        let e = err(empty, &issued.key_pem);
        assert_eq!(e, Invalid::Empty { part: Part::Chain });
        assert_eq!(
            e.to_string(),
            "the file is empty; expected PEM certificates (-----BEGIN CERTIFICATE-----)"
        );
        let e = err(&issued.fullchain_pem, empty);
        assert_eq!(e.part(), Some(Part::Key));
        assert_eq!(
            e.to_string(),
            "the file is empty; expected a PEM private key (-----BEGIN PRIVATE KEY-----)"
        );
        assert_eq!(e.kind(), "empty-file");
    }
}

/// Deterministic noise (xorshift), never starting like DER or PEM.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect();
    if let Some(first) = out.first_mut() {
        *first = 0xff;
    }
    out
}

#[test]
fn random_bytes_and_plain_text_are_not_pem() {
    let issued = issue(LeafKey::EcdsaP256);
    for junk in [noise(4096), b"hello, world\n".to_vec(), b"0123".to_vec()] {
        let e = err_bytes(&junk, issued.key_pem.as_bytes());
        assert_eq!(e, Invalid::NotPem { part: Part::Chain });
        assert_eq!(
            e.to_string(),
            "the file is not PEM (no -----BEGIN line); expected PEM certificates \
             (-----BEGIN CERTIFICATE-----)"
        );
        let e = err_bytes(issued.fullchain_pem.as_bytes(), &junk);
        assert_eq!(e, Invalid::NotPem { part: Part::Key });
        assert_eq!(e.kind(), "not-pem");
    }
}

#[test]
fn der_files() {
    let issued = issue(LeafKey::EcdsaP256);
    let leaf_der = der_blocks(&issued.cert_pem).remove(0);
    let key_der = only_der(&issued.key_pem);
    let rsa_key_der = only_der(RSA_A_PKCS1);

    let e = err_bytes(&leaf_der, issued.key_pem.as_bytes());
    assert_eq!(e, Invalid::Der { part: Part::Chain });
    assert_eq!(
        e.to_string(),
        "file is DER, expected PEM; convert it with \
         `openssl x509 -inform DER -in FILE -out FILE.pem`"
    );
    for key in [key_der, rsa_key_der] {
        let e = err_bytes(issued.fullchain_pem.as_bytes(), &key);
        assert_eq!(e, Invalid::Der { part: Part::Key });
        assert_eq!(
            e.to_string(),
            "file is DER, expected PEM; convert it with \
             `openssl pkey -inform DER -in FILE -out FILE.pem`"
        );
        assert_eq!(e.kind(), "der-not-pem");
    }
}

#[test]
fn truncated_pem() {
    let issued = issue(LeafKey::EcdsaP256);
    let cut = &issued.fullchain_pem[..issued.fullchain_pem.len() / 2];
    let e = err(cut, &issued.key_pem);
    assert_eq!(
        e,
        Invalid::TruncatedPem {
            part: Part::Chain,
            label: "CERTIFICATE".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "truncated PEM: the -----BEGIN CERTIFICATE----- block has no -----END line; \
         the file was cut short, restore it or renew the certificate"
    );
    let cut_key = &issued.key_pem[..issued.key_pem.len() - 10];
    let e = err(&issued.fullchain_pem, cut_key);
    assert_eq!(e.part(), Some(Part::Key));
    assert_eq!(e.kind(), "truncated-pem");
    assert!(e.to_string().contains("-----BEGIN PRIVATE KEY-----"));
}

#[test]
fn malformed_pem() {
    let issued = issue(LeafKey::EcdsaP256);
    let bad_base64 = "-----BEGIN CERTIFICATE-----\nnot*base64!\n-----END CERTIFICATE-----\n";
    let e = err(bad_base64, &issued.key_pem);
    assert_eq!(e.kind(), "malformed-pem");
    assert_eq!(
        e.to_string(),
        "malformed PEM: a PEM block holds invalid base64 (or unsupported header lines); \
         expected PEM certificates (-----BEGIN CERTIFICATE-----)"
    );
    let bad_begin = "-----BEGIN CERTIFICATE----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_eq!(
        err(bad_begin, &issued.key_pem).to_string(),
        "malformed PEM: a -----BEGIN line does not end with five dashes; \
         expected PEM certificates (-----BEGIN CERTIFICATE-----)"
    );
    let bad_key = "-----BEGIN PRIVATE KEY-----\nMII*\n-----END PRIVATE KEY-----\n";
    assert_eq!(err(&issued.fullchain_pem, bad_key).part(), Some(Part::Key));
}

#[test]
fn no_certificate_in_the_chain_file() {
    let issued = issue(LeafKey::EcdsaP256);
    let e = err(&issued.key_pem, &issued.key_pem);
    assert_eq!(e, Invalid::NoCertificate { has_key: true });
    assert_eq!(
        e.to_string(),
        "no certificate in the file (no -----BEGIN CERTIFICATE----- block); it holds a \
         private key: are the certificate and key files swapped?"
    );
    let public_only = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    let e = err(public_only, &issued.key_pem);
    assert_eq!(
        e.to_string(),
        "no certificate in the file (no -----BEGIN CERTIFICATE----- block)"
    );
    assert_eq!((e.kind(), e.part()), ("no-certificate", Some(Part::Chain)));
}

#[test]
fn no_private_key_in_the_key_file() {
    let issued = issue(LeafKey::EcdsaP256);
    let e = err(&issued.fullchain_pem, &issued.fullchain_pem);
    assert_eq!(
        e,
        Invalid::NoPrivateKey {
            has_certificate: true
        }
    );
    assert_eq!(
        e.to_string(),
        "no private key in the file (no -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC \
         PRIVATE KEY block); it holds a certificate: are the certificate and key files swapped?"
    );
    let public_only = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    let e = err(&issued.fullchain_pem, public_only);
    assert_eq!(
        e.to_string(),
        "no private key in the file (no -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC \
         PRIVATE KEY block)"
    );
    assert_eq!((e.kind(), e.part()), ("no-private-key", Some(Part::Key)));
}

#[test]
fn several_private_keys() {
    let issued = issue(LeafKey::EcdsaP256);
    let two = format!("{}{}", issued.key_pem, RSA_A_PKCS8);
    let e = err(&issued.fullchain_pem, &two);
    assert_eq!(e, Invalid::SeveralPrivateKeys { count: 2 });
    assert_eq!(
        e.to_string(),
        "the file holds 2 private keys; keep only the certificate's key"
    );
    assert_eq!(e.part(), Some(Part::Key));
}

#[test]
fn encrypted_keys_both_forms() {
    let issued = issue(rsa_a());
    for key in [RSA_A_ENCRYPTED_PKCS8, RSA_A_ENCRYPTED_PKCS1] {
        let e = err(&issued.fullchain_pem, key);
        assert_eq!(e, Invalid::EncryptedKey);
        assert_eq!(
            e.to_string(),
            "encrypted private keys are not supported; store the key unencrypted \
             (`openssl pkey -in FILE -out FILE.plain`) with mode 0600"
        );
        assert_eq!((e.kind(), e.part()), ("encrypted-key", Some(Part::Key)));
    }
}

#[test]
fn certificate_that_does_not_parse() {
    let issued = issue(LeafKey::EcdsaP256);
    let garbage = pem_of("CERTIFICATE", &noise(300));
    let e = err(&garbage, &issued.key_pem);
    let text = e.to_string();
    assert!(
        text.starts_with("certificate 1 in the file does not parse: "),
        "{text}"
    );
    assert!(text.ends_with("; check the file or renew the certificate"));
    assert_eq!((e.kind(), e.part()), ("bad-certificate", Some(Part::Chain)));

    let mut padded = der_blocks(&issued.chain_pem).remove(0);
    padded.extend_from_slice(b"\0\0");
    let chain = format!("{}{}", issued.cert_pem, pem_of("CERTIFICATE", &padded));
    assert_eq!(
        err(&chain, &issued.key_pem).to_string(),
        "certificate 2 in the file does not parse: trailing bytes after the certificate; \
         check the file or renew the certificate"
    );
}

#[test]
fn private_key_that_does_not_parse() {
    let issued = issue(LeafKey::EcdsaP256);
    for label in ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"] {
        let garbage = pem_of(label, &noise(100));
        let e = err(&issued.fullchain_pem, &garbage);
        let text = e.to_string();
        assert!(
            text.starts_with("the private key does not parse: "),
            "{text}"
        );
        assert!(text.ends_with("; check the file or renew the certificate"));
        assert_eq!((e.kind(), e.part()), ("bad-key", Some(Part::Key)));
    }
    // An EC scalar longer than the curve's order.
    let long = sec1::EcPrivateKey {
        private_key: &[7u8; 40],
        parameters: None,
        public_key: None,
    };
    let der = pkcs8::der::Encode::to_der(&long).unwrap();
    assert_eq!(
        err(&issued.fullchain_pem, &pem_of("EC PRIVATE KEY", &der)).to_string(),
        "the private key does not parse: the EC private scalar is longer than the curve \
         allows; check the file or renew the certificate"
    );
}

/// DER TLV for contents under 256 bytes.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = u8::try_from(content.len()).unwrap();
    let mut out = match len {
        0..=127 => vec![tag, len],
        _ => vec![tag, 0x81, len],
    };
    out.extend_from_slice(content);
    out
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

fn pkcs8_with(alg_id: &[u8], private_key: &[u8]) -> String {
    let body = [&[0x02, 0x01, 0x00][..], alg_id, &tlv(0x04, private_key)].concat();
    pem_of("PRIVATE KEY", &tlv(0x30, &body))
}

#[test]
fn unsupported_key_types() {
    let issued = issue(LeafKey::EcdsaP256);
    let ed448 = pkcs8_with(
        &tlv(0x30, &[0x06, 0x03, 0x2b, 0x65, 0x71]),
        &tlv(0x04, &[1u8; 57]),
    );
    let p521_alg = [
        &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01][..],
        &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
    ]
    .concat();
    let p521 = pkcs8_with(
        &tlv(0x30, &p521_alg),
        &tlv(
            0x30,
            &[&[0x02, 0x01, 0x01][..], &tlv(0x04, &[1u8; 66])].concat(),
        ),
    );
    let unknown = pkcs8_with(&tlv(0x30, &[0x06, 0x03, 0x2a, 0x03, 0x04]), &[1u8; 8]);
    let dsa = "-----BEGIN DSA PRIVATE KEY-----\nAAAA\n-----END DSA PRIVATE KEY-----\n";
    for (key, what) in [
        (ed448.as_str(), "Ed448"),
        (p521.as_str(), "ECDSA P-521"),
        (unknown.as_str(), "algorithm 1.2.3.4"),
        (dsa, "a -----BEGIN DSA PRIVATE KEY----- block"),
    ] {
        let e = err(&issued.fullchain_pem, key);
        assert_eq!(
            e.to_string(),
            format!("unsupported key type: {what}; use RSA, ECDSA P-256/P-384 or Ed25519")
        );
        assert_eq!((e.kind(), e.part()), ("unsupported-key", Some(Part::Key)));
    }
}

#[test]
fn multi_prime_rsa_is_unsupported() {
    let issued = issue(rsa_a());
    let der = only_der(RSA_A_PKCS1);
    let two = pkcs1::RsaPrivateKeyRef::try_from(der.as_slice()).unwrap();
    let extra = pkcs1::OtherPrimeInfo {
        prime: two.prime1,
        exponent: two.exponent1,
        coefficient: two.coefficient,
    };
    let multi = pkcs1::RsaPrivateKey {
        other_prime_infos: Some(vec![extra]),
        ..two
    };
    let key = pem_of(
        "RSA PRIVATE KEY",
        &pkcs8::der::Encode::to_der(&multi).unwrap(),
    );
    assert_eq!(
        err(&issued.fullchain_pem, &key).to_string(),
        "unsupported key type: multi-prime RSA; use RSA, ECDSA P-256/P-384 or Ed25519"
    );
}

#[test]
fn inconsistent_or_broken_keys_do_not_parse() {
    let p256 = issue(LeafKey::EcdsaP256);
    let ed = issue(LeafKey::Ed25519);
    // PKCS#8 says P-384, the SEC1 inside says P-256.
    let sec1_p256 = only_der(
        ok(&p256.fullchain_pem, &p256.key_pem)
            .key
            .expose_upload_pem(),
    );
    let alg = tlv(0x30, &[OID_EC_PUBLIC_KEY, OID_P384].concat());
    let curves = pkcs8_with(&alg, &sec1_p256);
    // A zero scalar is not a private key.
    let zero = sec1::EcPrivateKey {
        private_key: &[0u8; 32],
        parameters: None,
        public_key: None,
    };
    let zero = pem_of(
        "EC PRIVATE KEY",
        &pkcs8::der::Encode::to_der(&zero).unwrap(),
    );
    // An Ed25519 seed of 31 bytes.
    let short_seed = pkcs8_with(
        &tlv(0x30, &[0x06, 0x03, 0x2b, 0x65, 0x70]),
        &tlv(0x04, &[1; 31]),
    );
    for (chain, key, detail) in [
        (
            &p256.fullchain_pem,
            &curves,
            "the SEC1 and PKCS#8 structures name different curves",
        ),
        (
            &p256.fullchain_pem,
            &zero,
            "ring rejects it (InvalidComponent)",
        ),
        (
            &ed.fullchain_pem,
            &short_seed,
            "the Ed25519 seed is not 32 bytes",
        ),
    ] {
        assert_eq!(
            err(chain, key).to_string(),
            format!(
                "the private key does not parse: {detail}; check the file or renew the certificate"
            )
        );
    }
}

#[test]
fn key_of_another_certificate() {
    let p256_a = issue(LeafKey::EcdsaP256);
    let p256_b = issue(LeafKey::EcdsaP256);
    let p384 = issue(LeafKey::EcdsaP384);
    let ed = issue(LeafKey::Ed25519);
    let ed_other = issue(LeafKey::Ed25519);
    let rsa = issue(rsa_a());
    let cases = [
        (&p256_a.fullchain_pem, p256_b.key_pem.as_str()),
        (&p256_a.fullchain_pem, p384.key_pem.as_str()),
        (&p256_a.fullchain_pem, RSA_A_PKCS8),
        (&rsa.fullchain_pem, RSA_B_PKCS8),
        (&rsa.fullchain_pem, RSA_B_PKCS1),
        (&rsa.fullchain_pem, p256_a.key_pem.as_str()),
        (&ed.fullchain_pem, ed_other.key_pem.as_str()),
        (&ed.fullchain_pem, p256_a.key_pem.as_str()),
    ];
    for (chain, key) in cases {
        let e = err(chain, key);
        assert_eq!(e, Invalid::KeyMismatch);
        assert!(
            e.to_string()
                .starts_with("private key does not match the certificate; "),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("let the ACME client write the pair again"),
            "{e}"
        );
        assert_eq!((e.kind(), e.part()), ("key-mismatch", None));
    }
}

#[test]
fn sec1_key_whose_embedded_public_key_is_another_still_mismatches() {
    // Scalar of key A with the public point of key B: never accepted for either leaf.
    let a = issue(LeafKey::EcdsaP256);
    let b = issue(LeafKey::EcdsaP256);
    let sec1_a = only_der(ok(&a.fullchain_pem, &a.key_pem).key.expose_upload_pem());
    let sec1_b = only_der(ok(&b.fullchain_pem, &b.key_pem).key.expose_upload_pem());
    let ka = sec1::EcPrivateKey::try_from(sec1_a.as_slice()).unwrap();
    let kb = sec1::EcPrivateKey::try_from(sec1_b.as_slice()).unwrap();
    let franken = sec1::EcPrivateKey {
        private_key: ka.private_key,
        parameters: ka.parameters,
        public_key: kb.public_key,
    };
    let der = pkcs8::der::Encode::to_der(&franken).unwrap();
    let key = pem_of("EC PRIVATE KEY", &der);
    assert_eq!(err(&a.fullchain_pem, &key), Invalid::KeyMismatch);
    assert_eq!(err(&b.fullchain_pem, &key), Invalid::KeyMismatch);
}

#[test]
fn no_dns_names() {
    let ca = ca();
    for names in [&[][..], &["192.0.2.7"][..]] {
        let issued = ca.issue(&Leaf::new(names, NOT_BEFORE, NOT_AFTER)).unwrap();
        let e = err(&issued.fullchain_pem, &issued.key_pem);
        assert_eq!(e, Invalid::NoDnsNames);
        assert_eq!(
            e.to_string(),
            "the certificate has no DNS names (subjectAltName), so it can serve no CDN \
             domain; request it with the domain names"
        );
        assert_eq!((e.kind(), e.part()), ("no-dns-names", Some(Part::Chain)));
    }
}

// ---- time --------------------------------------------------------------------------------

fn valid_cert() -> Certificate {
    let issued = issue(LeafKey::EcdsaP256);
    ok(&issued.fullchain_pem, &issued.key_pem)
}

#[test]
fn time_window_is_inclusive() {
    let cert = valid_cert();
    assert_eq!(check_time(&cert, NOT_BEFORE), Ok(()));
    assert_eq!(check_time(&cert, NOW), Ok(()));
    assert_eq!(check_time(&cert, NOT_AFTER), Ok(()));
}

#[test]
fn expired_messages() {
    let cert = valid_cert();
    for (now, text) in [
        (
            NOT_AFTER + Duration::seconds(1),
            "expired 2026-04-01 (less than a day ago)",
        ),
        (
            NOT_AFTER + Duration::hours(36),
            "expired 2026-04-01 (1 day ago)",
        ),
        (
            NOT_AFTER + Duration::days(27),
            "expired 2026-04-01 (27 days ago)",
        ),
    ] {
        let e = check_time(&cert, now).unwrap_err();
        let remedy =
            "; renew it (e.g. `certbot renew`) and check that the ACME client's renewal timer runs";
        assert_eq!(e.to_string(), format!("{text}{remedy}"));
        assert_eq!((e.kind(), e.part()), ("expired", Some(Part::Chain)));
    }
}

#[test]
fn not_yet_valid_messages() {
    let cert = valid_cert();
    for (now, text) in [
        (
            NOT_BEFORE - Duration::hours(3),
            "not valid until 2026-01-01 (in less than a day)",
        ),
        (
            NOT_BEFORE - Duration::hours(30),
            "not valid until 2026-01-01 (in 1 day)",
        ),
        (
            NOT_BEFORE - Duration::days(6),
            "not valid until 2026-01-01 (in 6 days)",
        ),
    ] {
        let e = check_time(&cert, now).unwrap_err();
        assert_eq!(e.to_string(), text);
        assert_eq!((e.kind(), e.part()), ("not-yet-valid", Some(Part::Chain)));
    }
}

#[test]
fn validate_is_parse_then_time() {
    let issued = issue(LeafKey::EcdsaP256);
    let (chain, key) = (issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes());
    assert!(validate(chain, key, NOW).is_ok());
    let later = NOT_AFTER + Duration::days(2);
    assert_eq!(validate(chain, key, later).unwrap_err().kind(), "expired");
    assert_eq!(
        validate(chain, RSA_A_PKCS8.as_bytes(), later).unwrap_err(),
        Invalid::KeyMismatch
    );
}

#[test]
fn renewal_overdue_after_two_thirds_of_the_lifetime() {
    let cert = valid_cert(); // 90 days: overdue when fewer than 30 days are left
    assert!(!renewal_overdue(&cert, NOT_BEFORE));
    assert!(!renewal_overdue(&cert, NOT_AFTER - Duration::days(30)));
    assert!(renewal_overdue(&cert, NOT_AFTER - Duration::days(29)));
    assert!(renewal_overdue(&cert, NOT_AFTER + Duration::days(1)));
}

#[test]
fn every_kind_is_distinct() {
    let at = NOW;
    let all = [
        Invalid::Empty { part: Part::Chain },
        Invalid::NotPem { part: Part::Chain },
        Invalid::Der { part: Part::Chain },
        Invalid::TruncatedPem {
            part: Part::Chain,
            label: String::new(),
        },
        Invalid::MalformedPem {
            part: Part::Chain,
            detail: "",
        },
        Invalid::NoCertificate { has_key: false },
        Invalid::NoPrivateKey {
            has_certificate: false,
        },
        Invalid::SeveralPrivateKeys { count: 2 },
        Invalid::EncryptedKey,
        Invalid::BadCertificate {
            index: 1,
            detail: String::new(),
        },
        Invalid::BadKey {
            detail: String::new(),
        },
        Invalid::UnsupportedKey {
            what: String::new(),
        },
        Invalid::NotLeafFirst { leaf: 2 },
        Invalid::NotIssuedBy {
            index: 1,
            subject: String::new(),
            next: 2,
            next_subject: String::new(),
            issuer_at: None,
        },
        Invalid::KeyMismatch,
        Invalid::NoDnsNames,
        Invalid::Expired {
            not_after: at,
            days: 1,
        },
        Invalid::NotYetValid {
            not_before: at,
            days: 1,
        },
    ];
    let mut kinds: Vec<&str> = all.iter().map(Invalid::kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), all.len());
}

// ---- coverage ----------------------------------------------------------------------------

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn exact_names_match_case_insensitively() {
    let n = names(&["www.example.com", "API.example.com"]);
    assert_eq!(covers(&n, "www.example.com"), Some(Match::Exact));
    assert_eq!(covers(&n, "WWW.EXAMPLE.COM"), Some(Match::Exact));
    assert_eq!(covers(&n, "api.example.com"), Some(Match::Exact));
    assert_eq!(covers(&n, "example.com"), None);
    assert_eq!(covers(&n, "ww.example.com"), None);
    assert_eq!(covers(&n, ""), None);
}

#[test]
fn wildcard_covers_exactly_one_label() {
    let n = names(&["*.example.com"]);
    assert_eq!(covers(&n, "a.example.com"), Some(Match::Wildcard));
    assert_eq!(covers(&n, "A.Example.COM"), Some(Match::Wildcard));
    assert_eq!(covers(&n, "example.com"), None);
    assert_eq!(covers(&n, "a.b.example.com"), None);
    assert_eq!(covers(&n, ".a.example.com"), None);
    assert_eq!(covers(&n, "a.example.org"), None);
    assert_eq!(covers(&n, "aexample.com"), None);
    assert_eq!(covers(&n, "a.notexample.com"), None);
    assert_eq!(covers(&names(&["*."]), "a."), None);
}

#[test]
fn wildcard_covers_alibabas_wildcard_domain() {
    let n = names(&["*.example.com"]);
    assert_eq!(covers(&n, ".example.com"), Some(Match::Wildcard));
    assert_eq!(covers(&n, ".EXAMPLE.com"), Some(Match::Wildcard));
    assert_eq!(covers(&n, ".b.example.com"), None);
    assert_eq!(covers(&n, ".com"), None);
    assert_eq!(
        covers(&names(&["example.com", "www.example.com"]), ".example.com"),
        None
    );
    assert_eq!(covers(&names(&["*.b.example.com"]), ".example.com"), None);
}

#[test]
fn exact_wins_over_wildcard_in_one_certificate() {
    let n = names(&["*.example.com", "www.example.com"]);
    assert_eq!(covers(&n, "www.example.com"), Some(Match::Exact));
    assert_eq!(covers(&n, "cdn.example.com"), Some(Match::Wildcard));
}

fn candidate<'a>(id: &'a str, names: &'a [String], not_after: OffsetDateTime) -> Candidate<'a> {
    Candidate {
        id,
        names,
        not_after,
    }
}

#[test]
fn best_prefers_exact_then_later_not_after_then_first_id() {
    let wild = names(&["*.example.com"]);
    let exact = names(&["www.example.com"]);
    let early = NOT_AFTER;
    let late = NOT_AFTER + Duration::days(30);

    // Exact beats a wildcard that lasts longer.
    let c = [candidate("/a", &wild, late), candidate("/b", &exact, early)];
    assert_eq!(best_for("www.example.com", &c), Some(1));
    // Same rank: the later notAfter wins, wherever it is.
    let c = [
        candidate("/a", &exact, early),
        candidate("/b", &exact, late),
    ];
    assert_eq!(best_for("www.example.com", &c), Some(1));
    let c = [
        candidate("/a", &exact, late),
        candidate("/b", &exact, early),
    ];
    assert_eq!(best_for("www.example.com", &c), Some(0));
    // Full tie: the lexically first id, whatever the order.
    let c = [candidate("/z", &wild, late), candidate("/m", &wild, late)];
    assert_eq!(best_for("x.example.com", &c), Some(1));
    let c = [candidate("/m", &wild, late), candidate("/z", &wild, late)];
    assert_eq!(best_for("x.example.com", &c), Some(0));
}

#[test]
fn best_ignores_what_does_not_cover() {
    let other = names(&["www.example.org"]);
    let wild = names(&["*.example.com"]);
    let late = NOT_AFTER + Duration::days(300);
    let c = [
        candidate("/a", &other, late),
        candidate("/b", &wild, NOT_AFTER),
    ];
    assert_eq!(best_for(".example.com", &c), Some(1));
    assert_eq!(best_for("example.com", &c), None);
    assert_eq!(best_for("www.example.com", &[]), None);
}

// ---- speed -------------------------------------------------------------------------------

/// `cargo test --release --lib cert::tests::parse_speed -- --ignored --nocapture`
#[test]
#[ignore = "measurement; run by hand in release mode"]
fn parse_speed() {
    let rsa = issue(rsa_a());
    let p256 = issue(LeafKey::EcdsaP256);
    for (name, chain, key) in [
        ("RSA-2048 (PKCS#8)", &rsa.fullchain_pem, RSA_A_PKCS8),
        (
            "ECDSA P-256 (PKCS#8)",
            &p256.fullchain_pem,
            p256.key_pem.as_str(),
        ),
    ] {
        let rounds = 2000u32;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            assert!(parse(chain.as_bytes(), key.as_bytes()).is_ok());
        }
        println!("{name}: {:?} per parse", start.elapsed() / rounds);
    }
}

#[test]
fn encoded_len_is_exact_so_key_buffers_never_reallocate() {
    for len in [0, 1, 2, 3, 47, 48, 49, 95, 96, 97, 1191, 1218] {
        let mut out = String::new();
        pem::encode("EC PRIVATE KEY", &noise(len), &mut out);
        assert_eq!(
            out.len(),
            pem::encoded_len("EC PRIVATE KEY", len),
            "len {len}"
        );
        assert_canonical_pem(&out, "EC PRIVATE KEY");
    }
}

/// Where `parse` spends its time (same command as `parse_speed`).
#[test]
#[ignore = "measurement; run by hand in release mode"]
fn parse_speed_breakdown() {
    use std::time::Instant;
    let rsa = issue(rsa_a());
    let p256 = issue(LeafKey::EcdsaP256);
    for (name, chain, key_text) in [
        ("RSA", &rsa.fullchain_pem, RSA_A_PKCS8),
        ("P-256", &p256.fullchain_pem, p256.key_pem.as_str()),
    ] {
        let rounds = 2000u32;
        let mut t = [std::time::Duration::ZERO; 7];
        for _ in 0..rounds {
            let s = Instant::now();
            let ders = pem::read_chain(chain.as_bytes()).unwrap();
            let raw = pem::read_key(key_text.as_bytes()).unwrap();
            t[0] += s.elapsed();
            let s = Instant::now();
            let certs = chain::parse_all(&ders).unwrap();
            t[1] += s.elapsed();
            let s = Instant::now();
            let k = key::parse(raw).unwrap();
            t[2] += s.elapsed();
            let s = Instant::now();
            chain::check_key(&certs, &k).unwrap();
            t[3] += s.elapsed();
            let s = Instant::now();
            chain::check_links(&certs).unwrap();
            t[4] += s.elapsed();
            let s = Instant::now();
            let _ = chain::dns_names(&certs[0]).unwrap();
            let _ = key::upload_form(&k, certs[0].public_key()).unwrap();
            t[5] += s.elapsed();
            let s = Instant::now();
            let _ = chain_pem(&ders);
            t[6] += s.elapsed();
        }
        let labels = [
            "pem",
            "x509",
            "key",
            "match",
            "links",
            "names+upload",
            "chain_pem",
        ];
        let parts: Vec<String> = labels
            .iter()
            .zip(t)
            .map(|(l, d)| format!("{l} {:?}", d / rounds))
            .collect();
        println!("{name}: {}", parts.join(", "));
    }
}

#[test]
fn a_hostile_pem_label_is_never_quoted() {
    let issued = issue(LeafKey::EcdsaP256);
    let secret = "hunter2 PASSWORD=Tr0ub4dor&3";
    // A key block of an unknown kind, truncated blocks in either file: none quotes the label.
    let other =
        format!("-----BEGIN {secret} PRIVATE KEY-----\nAAAA\n-----END {secret} PRIVATE KEY-----\n");
    let cut_key = format!("-----BEGIN {secret}-----\nAAAA\n");
    let cut_chain = format!("{}-----BEGIN {secret}-----\nAAAA\n", issued.fullchain_pem);
    let shouting = "-----BEGIN HUNTER2 PASSWORD TROUB4DOR PRIVATE KEY-----\nAAAA\n\
                    -----END HUNTER2 PASSWORD TROUB4DOR PRIVATE KEY-----\n";
    let cases = [
        (issued.fullchain_pem.clone(), other),
        (issued.fullchain_pem.clone(), cut_key),
        (cut_chain, issued.key_pem.clone()),
        (issued.fullchain_pem.clone(), shouting.to_string()),
    ];
    for (chain, key) in cases {
        let e = err(&chain, &key);
        let shown = format!("{e} {e:?}");
        for word in ["hunter2", "HUNTER2", "PASSWORD", "Tr0ub4dor", "TROUB4DOR"] {
            assert!(!shown.contains(word), "{word} quoted: {shown}");
        }
        assert!(shown.contains("unexpected PEM label"), "{shown}");
    }
    // Known labels are still named.
    let dsa = "-----BEGIN DSA PRIVATE KEY-----\nAAAA\n-----END DSA PRIVATE KEY-----\n";
    assert!(
        err(&issued.fullchain_pem, dsa)
            .to_string()
            .contains("-----BEGIN DSA PRIVATE KEY-----")
    );
}
