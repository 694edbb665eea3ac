//! PEM in and out: splitting a chain or key file into DER blocks with a precise reason when
//! that fails, and writing the canonical PEM Alibaba wants (LF, 64-character lines, nothing
//! outside the blocks).
//!
//! Invariant: decoded key blocks go straight into `Zeroizing` buffers; encoded key text is
//! written into a buffer reserved to its final size, so no unzeroized copy is left behind.

use base64::Engine;
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use zeroize::Zeroizing;

use super::invalid::{Invalid, Part};

/// The three plaintext private key encodings a key file may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyEncoding {
    /// `BEGIN RSA PRIVATE KEY`.
    Pkcs1,
    /// `BEGIN PRIVATE KEY`.
    Pkcs8,
    /// `BEGIN EC PRIVATE KEY`.
    Sec1,
}

/// One private key block, decoded.
pub(super) struct RawKey {
    pub(crate) encoding: KeyEncoding,
    pub(crate) der: Zeroizing<Vec<u8>>,
}

/// The DER of every `CERTIFICATE` block of a chain file, in file order (never empty).
pub(super) fn read_chain(bytes: &[u8]) -> Result<Vec<Vec<u8>>, Invalid> {
    precheck(bytes, Part::Chain)?;
    let mut certs = Vec::new();
    let mut has_key = false;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        match section.map_err(|e| pem_error(e, Part::Chain))? {
            (SectionKind::Certificate, der) => certs.push(der),
            (kind, der) => {
                has_key |= key_encoding(kind).is_some();
                drop(Zeroizing::new(der));
            }
        }
    }
    if certs.is_empty() {
        return Err(Invalid::NoCertificate { has_key });
    }
    Ok(certs)
}

/// The single private key block of a key file.
pub(super) fn read_key(bytes: &[u8]) -> Result<RawKey, Invalid> {
    precheck(bytes, Part::Key)?;
    if contains(bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || contains(bytes, b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(Invalid::EncryptedKey);
    }
    let mut keys = Vec::new();
    let mut has_certificate = false;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        let (kind, der) = section.map_err(|e| pem_error(e, Part::Key))?;
        let der = Zeroizing::new(der);
        has_certificate |= kind == SectionKind::Certificate;
        if let Some(encoding) = key_encoding(kind) {
            keys.push(RawKey { encoding, der });
        }
    }
    if keys.len() > 1 {
        return Err(Invalid::SeveralPrivateKeys { count: keys.len() });
    }
    match keys.pop() {
        Some(key) => Ok(key),
        None => Err(other_key_block(bytes).unwrap_or(Invalid::NoPrivateKey { has_certificate })),
    }
}

/// Appends one PEM block (LF line ends, 64-character lines) to `out`.
///
/// `out` should have room for [`encoded_len`] more bytes when it holds secrets, so that it
/// never reallocates (a reallocation would leave an unzeroized copy behind).
pub(super) fn encode(label: &str, der: &[u8], out: &mut String) {
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    let mut line = Zeroizing::new([0u8; 64]);
    for chunk in der.chunks(48) {
        // A 48-byte chunk encodes to exactly 64 characters, so the buffer always fits.
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(chunk, &mut line[..])
            .unwrap_or(0);
        line.iter().take(n).for_each(|&b| out.push(char::from(b)));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

/// The length [`encode`] appends for `der_len` bytes of DER.
pub(super) fn encoded_len(label: &str, der_len: usize) -> usize {
    let b64 = der_len.div_ceil(3) * 4;
    let lines = der_len.div_ceil(48);
    let markers = "-----BEGIN -----\n".len() + "-----END -----\n".len() + 2 * label.len();
    markers + b64 + lines
}

fn precheck(bytes: &[u8], part: Part) -> Result<(), Invalid> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Invalid::Empty { part });
    }
    if is_der(bytes) {
        return Err(Invalid::Der { part });
    }
    if !contains(bytes, b"-----BEGIN ") {
        return Err(Invalid::NotPem { part });
    }
    Ok(())
}

/// One DER SEQUENCE spanning exactly the whole input (what `openssl ... -outform DER` writes).
fn is_der(bytes: &[u8]) -> bool {
    let (len, header) = match bytes {
        [0x30, n, ..] if *n < 0x80 => (usize::from(*n), 2),
        [0x30, 0x81, a, ..] => (usize::from(*a), 3),
        [0x30, 0x82, a, b, ..] => (usize::from(*a) << 8 | usize::from(*b), 4),
        [0x30, 0x83, a, b, c, ..] => (
            usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c),
            5,
        ),
        _ => return false,
    };
    header + len == bytes.len()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn key_encoding(kind: SectionKind) -> Option<KeyEncoding> {
    match kind {
        SectionKind::RsaPrivateKey => Some(KeyEncoding::Pkcs1),
        SectionKind::PrivateKey => Some(KeyEncoding::Pkcs8),
        SectionKind::EcPrivateKey => Some(KeyEncoding::Sec1),
        _ => None,
    }
}

/// A `BEGIN <X> PRIVATE KEY` block of a kind we do not read (DSA, OpenSSH, ...).
/// Reads only the marker lines: the key text itself is never copied.
fn other_key_block(bytes: &[u8]) -> Option<Invalid> {
    bytes.split(|&b| b == b'\n').find_map(|line| {
        let label = line
            .trim_ascii()
            .strip_prefix(b"-----BEGIN ")?
            .strip_suffix(b"-----")?;
        label
            .ends_with(b"PRIVATE KEY")
            .then(|| Invalid::UnsupportedKey {
                what: match known_label(label) {
                    Some(known) => format!("a -----BEGIN {known}----- block"),
                    None => "a PEM block with an unexpected PEM label".to_string(),
                },
            })
    })
}

fn pem_error(e: pem::Error, part: Part) -> Invalid {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => Invalid::TruncatedPem {
            part,
            label: known_label(&end_marker).unwrap_or("").to_string(),
        },
        pem::Error::IllegalSectionStart { .. } => Invalid::MalformedPem {
            part,
            detail: "a -----BEGIN line does not end with five dashes",
        },
        pem::Error::Base64Decode(_) => Invalid::MalformedPem {
            part,
            detail: "a PEM block holds invalid base64 (or unsupported header lines)",
        },
        _ => Invalid::MalformedPem {
            part,
            detail: "the PEM structure is unreadable",
        },
    }
}

/// `label` when it is one of the PEM labels in use (RFC 7468, OpenSSL, OpenSSH), else
/// `None`: a label is text from the file and may hold anything (`BEGIN hunter2 PASSWORD=…`),
/// so only a known one is ever quoted.
pub(super) fn known_label(label: &[u8]) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "CERTIFICATE",
        "TRUSTED CERTIFICATE",
        "X509 CERTIFICATE",
        "CERTIFICATE REQUEST",
        "NEW CERTIFICATE REQUEST",
        "X509 CRL",
        "ATTRIBUTE CERTIFICATE",
        "PKCS7",
        "CMS",
        "PUBLIC KEY",
        "RSA PUBLIC KEY",
        "PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "RSA PRIVATE KEY",
        "EC PRIVATE KEY",
        "DSA PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
        "SSH2 ENCRYPTED PRIVATE KEY",
        "EC PARAMETERS",
        "DH PARAMETERS",
        "X9.42 DH PARAMETERS",
    ];
    KNOWN.iter().copied().find(|k| k.as_bytes() == label)
}
