//! The Alibaba Cloud credential chain (SKELETON types; the chain comes next).

use std::fmt;

use zeroize::Zeroizing;

/// A secret string (AccessKey secret, STS token): `Debug` redacts, zeroized on drop, no
/// `Display`, no `Serialize`.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(text: Zeroizing<String>) -> Secret {
        Secret(text)
    }
    /// The secret text, for the signer only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret(Zeroizing::new(text))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An AccessKey (optionally temporary, with an STS token) and where it came from.
#[derive(Clone, Debug)]
pub struct Credentials {
    access_key_id: String,
    secret: Secret,
    security_token: Option<Secret>,
    source: String,
}

impl Credentials {
    /// `source` says where the key was found, for `certrotd check` (never the secret).
    pub fn new(
        access_key_id: impl Into<String>,
        secret: Secret,
        security_token: Option<Secret>,
        source: impl Into<String>,
    ) -> Credentials {
        Credentials {
            access_key_id: access_key_id.into(),
            secret,
            security_token,
            source: source.into(),
        }
    }
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }
    pub fn secret(&self) -> &Secret {
        &self.secret
    }
    pub fn security_token(&self) -> Option<&Secret> {
        self.security_token.as_ref()
    }
    /// Where the key was found, e.g. `environment (ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI…xyz)`.
    pub fn source(&self) -> &str {
        &self.source
    }
}
