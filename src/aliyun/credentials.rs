//! The Alibaba Cloud credential chain: where certrotd finds its AccessKey.
//!
//! Owns: the order of the sources (first found wins) — certrotd's own first, then the
//! official SDKs' default chain in its order:
//! 1. the config file: `[aliyun] access_key_id` + `access_key_secret_file`;
//! 2. the environment: `ALIBABA_CLOUD_ACCESS_KEY_ID` + `ALIBABA_CLOUD_ACCESS_KEY_SECRET`
//!    (+ optional `ALIBABA_CLOUD_SECURITY_TOKEN`);
//! 3. systemd credentials: `$CREDENTIALS_DIRECTORY/alibaba-cloud-access-key-id` and
//!    `alibaba-cloud-access-key-secret` (+ optional `alibaba-cloud-security-token`), as
//!    `LoadCredential=` provides them;
//! 4. OIDC / RRSA: `ALIBABA_CLOUD_ROLE_ARN` + `ALIBABA_CLOUD_OIDC_PROVIDER_ARN` +
//!    `ALIBABA_CLOUD_OIDC_TOKEN_FILE` → STS `AssumeRoleWithOIDC`;
//! 5. the aliyun CLI's `~/.aliyun/config.json`, profile `ALIBABA_CLOUD_PROFILE` or the file's
//!    `current`, modes `AK`, `StsToken`, `RamRoleArn`, `EcsRamRole`, `OIDC`,
//!    `CredentialsURI`;
//! 6. the Alibaba Cloud credentials file, `~/.alibabacloud/credentials` (or
//!    `ALIBABA_CLOUD_CREDENTIALS_FILE`), INI, profile `ALIBABA_CLOUD_PROFILE` (default
//!    `default`), types `access_key`, `sts`, `ram_role_arn`, `ecs_ram_role`,
//!    `oidc_role_arn`;
//! 7. the ECS RAM role (instance metadata, IMDSv2), when enabled by `[aliyun] role_name`,
//!    `[aliyun] metadata_endpoint` or `ALIBABA_CLOUD_ECS_METADATA` (certrotd sends nothing to
//!    the metadata address unless asked), then 8. `ALIBABA_CLOUD_CREDENTIALS_URI`: of these
//!    two the first that answers is used (a metadata service that is down falls through).
//!
//! A source that is present but broken (half set, unreadable, too open) is an error, never
//! skipped: falling through would silently use another key.
//!
//! Each source is two steps: `locate` (I/O: settings, environment values, file bytes read
//! through [`crate::fsio`]) hands back its raw material, then [`parse`] (pure) turns it into
//! fixed [`Credentials`] or a plan of how to fetch temporary ones ([`Dynamic`]), or says what
//! is wrong; `profile` parses the INI and CLI formats into typed profiles. [`provider`] turns
//! the result into what the client signs with: `provider` (refresh) and `fetch` (STS, the
//! metadata service, a credentials URI) do the network part, never at resolution time.
//!
//! Invariants: secrets live only in [`Secret`] (redacting `Debug`, zeroized on drop) and
//! zeroizing buffers; no error or description carries a secret or a line of a secret file;
//! a secret file readable by group or others is refused with the `chmod 600` to run (systemd
//! credential files: by others, since systemd may grant the service user access through an
//! ACL that shows as group permission). The environment and home folder are injected
//! ([`Environment`]) so tests never touch the real ones.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::config::AliyunSettings;

pub(crate) const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
pub(crate) const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
pub(crate) const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";
pub(crate) const ENV_CREDENTIALS_FILE: &str = "ALIBABA_CLOUD_CREDENTIALS_FILE";
pub(crate) const ENV_PROFILE: &str = "ALIBABA_CLOUD_PROFILE";
pub(crate) const ENV_CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";
pub(crate) const SYSTEMD_ID: &str = "alibaba-cloud-access-key-id";
pub(crate) const SYSTEMD_SECRET: &str = "alibaba-cloud-access-key-secret";
pub(crate) const SYSTEMD_TOKEN: &str = "alibaba-cloud-security-token";
pub(crate) const ENV_ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
pub(crate) const ENV_OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
pub(crate) const ENV_OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";
pub(crate) const ENV_ROLE_SESSION_NAME: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";
pub(crate) const ENV_ECS_METADATA: &str = "ALIBABA_CLOUD_ECS_METADATA";
pub(crate) const ENV_CREDENTIALS_URI: &str = "ALIBABA_CLOUD_CREDENTIALS_URI";
/// The session lifetime asked of STS (its default).
const DURATION_SECS: u32 = 3600;
/// Largest credential file read.
const MAX_FILE: u64 = 64 * 1024;

/// A secret string (AccessKey secret, STS token): `Debug` redacts, zeroized on drop, no
/// `Display`, no `Serialize`.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// The secret text, for the signer only.
    pub(crate) fn expose(&self) -> &str {
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

/// Which source of the chain a key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Built by code (tests, the demo).
    Given,
    Config,
    Environment,
    Systemd,
    CredentialsFile,
    AliyunCli,
    /// STS `AssumeRoleWithOIDC` (environment or a profile).
    Oidc,
    /// STS `AssumeRole` with a profile's base key.
    RamRoleArn,
    /// The ECS instance's RAM role and/or a credentials URI.
    Instance,
}

/// An AccessKey (optionally temporary, with an STS token) and where it came from.
#[derive(Clone, Debug)]
pub struct Credentials {
    access_key_id: String,
    secret: Secret,
    security_token: Option<Secret>,
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "shown by Debug; read by source_kind(), which only tests use"
        )
    )]
    source: Source,
    description: String,
}

impl Credentials {
    /// Credentials given by code; `description` says where they came from (never the
    /// secret).
    pub fn new(
        access_key_id: impl Into<String>,
        secret: Secret,
        security_token: Option<Secret>,
        description: impl Into<String>,
    ) -> Credentials {
        Credentials {
            access_key_id: access_key_id.into(),
            secret,
            security_token,
            source: Source::Given,
            description: description.into(),
        }
    }
    pub(crate) fn access_key_id(&self) -> &str {
        &self.access_key_id
    }
    pub(crate) fn secret(&self) -> &Secret {
        &self.secret
    }
    pub(crate) fn security_token(&self) -> Option<&Secret> {
        self.security_token.as_ref()
    }
    #[cfg(test)]
    pub(crate) fn source_kind(&self) -> Source {
        self.source
    }
    /// Where the key was found, for `certrotd check`, e.g.
    /// `environment (ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI…xyz)`. Never the secret.
    pub(crate) fn source(&self) -> &str {
        &self.description
    }
}

/// What the chain may look at: environment variables and the home folder.
#[derive(Clone, Default)]
pub(crate) struct Environment {
    vars: BTreeMap<String, Zeroizing<String>>,
    home: Option<PathBuf>,
}

impl Environment {
    /// Nothing set, no home folder.
    pub(crate) fn empty() -> Environment {
        Environment::default()
    }

    /// The process's own variables that the chain reads, and `$HOME`.
    pub(crate) fn from_process() -> Environment {
        let names = [
            ENV_ACCESS_KEY_ID,
            ENV_ACCESS_KEY_SECRET,
            ENV_SECURITY_TOKEN,
            ENV_CREDENTIALS_FILE,
            ENV_PROFILE,
            ENV_CREDENTIALS_DIRECTORY,
            ENV_ROLE_ARN,
            ENV_OIDC_PROVIDER_ARN,
            ENV_OIDC_TOKEN_FILE,
            ENV_ROLE_SESSION_NAME,
            ENV_ECS_METADATA,
            ENV_CREDENTIALS_URI,
        ];
        let mut env = Environment::empty();
        for name in names {
            if let Some(Ok(value)) = std::env::var_os(name).map(|v| v.into_string()) {
                env.vars.insert(name.to_string(), Zeroizing::new(value));
            }
        }
        env.home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        env
    }

    #[cfg(test)]
    pub(crate) fn with_var(mut self, name: &str, value: &str) -> Environment {
        self.vars
            .insert(name.to_string(), Zeroizing::new(value.to_string()));
        self
    }

    #[cfg(test)]
    pub(crate) fn with_home(mut self, home: impl Into<PathBuf>) -> Environment {
        self.home = Some(home.into());
        self
    }

    /// A variable's value; empty counts as unset.
    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Environment")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("home", &self.home)
            .finish()
    }
}

/// Why no usable credentials were found. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{source_name}: {what}")]
    Incomplete { source_name: String, what: String },
    #[error("cannot read {} ({what}): {detail}; {hint}", path.display())]
    Unreadable {
        path: PathBuf,
        what: String,
        detail: String,
        hint: String,
    },
    #[error(
        "{} ({what}) is readable by group or others (mode {mode:04o}); a secret must be \
         private: run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        path: PathBuf,
        what: String,
        mode: u32,
    },
    #[error("{} ({what}): {problem}", path.display())]
    BadFile {
        path: PathBuf,
        what: String,
        problem: String,
    },
    #[error(
        "no Alibaba Cloud credentials found; looked, in this order, at:\n{}\nset one of \
         them (e.g. access_key_id and access_key_secret_file in [aliyun] of the config file, \
         or LoadCredential={SYSTEMD_ID}:… and {SYSTEMD_SECRET}:… in the systemd unit)",
        looked.iter().enumerate().map(|(i, l)| format!("  {}. {l}", i + 1)).collect::<Vec<_>>().join("\n")
    )]
    NotFound { looked: Vec<String> },
    /// Fetching temporary credentials failed (STS, the metadata service, a URI).
    #[error("{source_name}: {detail}")]
    Fetch {
        source_name: String,
        detail: String,
        /// Whether a later try may work (network, 5xx, throttling).
        temporary: bool,
    },
    /// The HTTP client for STS or the metadata service cannot be built.
    #[error("{0}")]
    Setup(String),
}

impl CredentialsError {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            CredentialsError::Fetch { .. } => "fetch",
            CredentialsError::Setup(_) => "setup",
            CredentialsError::Incomplete { .. } => "incomplete",
            CredentialsError::Unreadable { .. } => "unreadable",
            CredentialsError::Permissions { .. } => "permissions",
            CredentialsError::BadFile { .. } => "bad-file",
            CredentialsError::NotFound { .. } => "not-found",
        }
    }

    /// Whether trying again later may work (a fetch that failed on the network or a busy
    /// server); every other error needs a change of configuration.
    pub(crate) fn is_temporary(&self) -> bool {
        matches!(
            self,
            CredentialsError::Fetch {
                temporary: true,
                ..
            }
        )
    }
}

mod build;
mod fetch;
mod locate;
mod profile;
mod provider;

pub(crate) use build::provider;
pub use provider::CredentialProvider;

use locate::{FileBytes, Located, Material};
use profile::{CliProfile, IniProfile};

/// The chain, in order; the first source located wins. Each entry is a source's I/O step;
/// [`parse`] is the pure step for what it located. A new source is one more entry here, one
/// more [`Material`] and one more arm in [`parse`].
const CHAIN: [locate::Locate; 7] = [
    locate::config,
    locate::environment,
    locate::systemd,
    locate::oidc,
    locate::aliyun_cli,
    locate::credentials_file,
    locate::instance,
];

/// What a source resolves to: fixed credentials, or how to fetch temporary ones.
pub(crate) enum Resolved {
    Fixed(Credentials),
    Dynamic(Dynamic),
}

/// How to fetch temporary credentials (no I/O done yet). Never holds a secret except a
/// `ram_role_arn` profile's base key.
pub(crate) enum Dynamic {
    Oidc {
        role_arn: String,
        provider_arn: String,
        token_file: PathBuf,
        session_name: Option<String>,
        /// Where it was configured (for `check`).
        origin: String,
    },
    AssumeRole {
        base: Credentials,
        role_arn: String,
        session_name: Option<String>,
        external_id: Option<String>,
        origin: String,
    },
    /// The ECS RAM role and/or a credentials URI (the first that answers).
    Instance {
        ecs: Option<EcsPlan>,
        uri: Option<String>,
        origin: String,
    },
}

/// The metadata service to ask, and the role (`None`: discover it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EcsPlan {
    pub(crate) endpoint: String,
    pub(crate) role_name: Option<String>,
    pub(crate) imds_v1: bool,
}

/// Walks the chain: the first source present wins; a present but broken source is an error.
pub(crate) fn resolve(
    settings: &AliyunSettings,
    env: &Environment,
) -> Result<Resolved, CredentialsError> {
    let mut looked = Vec::with_capacity(CHAIN.len());
    for locate in CHAIN {
        match locate(settings, env)? {
            Located::Absent(note) => looked.push(note),
            Located::Found(material) => return parse(material, settings, env),
        }
    }
    Err(CredentialsError::NotFound { looked })
}

/// The chain's fixed credentials (an error for a source of temporary ones: use
/// [`provider`]).
#[cfg(test)]
pub(crate) fn load(
    settings: &AliyunSettings,
    env: &Environment,
) -> Result<Credentials, CredentialsError> {
    match resolve(settings, env)? {
        Resolved::Fixed(c) => Ok(c),
        Resolved::Dynamic(d) => Err(CredentialsError::Setup(format!(
            "temporary credentials: {}",
            d.describe()
        ))),
    }
}

impl Resolved {
    /// Which source will be used and how (never a secret), for `check`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Resolved::Fixed(c) => c.source().to_string(),
            Resolved::Dynamic(d) => d.describe(),
        }
    }
}

impl Dynamic {
    /// What will be used, for `check` and the log (never a secret).
    pub(crate) fn describe(&self) -> String {
        match self {
            Dynamic::Oidc {
                role_arn,
                token_file,
                origin,
                ..
            } => format!(
                "{origin}: OIDC role {role_arn} (token file {}) via STS AssumeRoleWithOIDC",
                token_file.display()
            ),
            Dynamic::AssumeRole {
                base,
                role_arn,
                origin,
                ..
            } => format!(
                "{origin}: RAM role {role_arn} via STS AssumeRole with AccessKey {}",
                mask_id(base.access_key_id())
            ),
            Dynamic::Instance { ecs, uri, origin } => {
                let mut parts = Vec::new();
                if let Some(e) = ecs {
                    parts.push(match &e.role_name {
                        Some(r) => format!("ECS RAM role {r} via {} (IMDSv2)", e.endpoint),
                        None => format!("ECS RAM role (discovered) via {} (IMDSv2)", e.endpoint),
                    });
                }
                if let Some(u) = uri {
                    parts.push(format!("credentials URI {}", fetch_origin(u)));
                }
                format!("{origin}: {}", parts.join(", else "))
            }
        }
    }
}

/// `scheme://host[:port]/path` of a URI (no query: it may carry a token).
fn fetch_origin(uri: &str) -> String {
    match reqwest::Url::parse(uri) {
        Ok(u) => format!("{}{}", u.origin().ascii_serialization(), u.path()),
        Err(_) => "(not a URL)".to_string(),
    }
}

/// `LTAI…xyz`: enough of an AccessKey ID to recognise it.
pub(crate) fn mask_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() >= 10 {
        let head: String = chars.iter().take(4).collect();
        let tail: String = chars.iter().skip(chars.len() - 3).collect();
        format!("{head}…{tail}")
    } else {
        let head: String = chars.iter().take(2).collect();
        format!("{head}…")
    }
}

/// The pure half of each source: what it located → credentials or a fetch plan, or what is
/// wrong with it.
fn parse(
    material: Material,
    settings: &AliyunSettings,
    env: &Environment,
) -> Result<Resolved, CredentialsError> {
    let fixed = Resolved::Fixed;
    match material {
        Material::Config { id, secret } => {
            let description = format!(
                "config file (access_key_id={}, access_key_secret_file={})",
                mask_id(&id),
                secret.path.display()
            );
            let secret = file_text(&secret)?;
            Ok(fixed(found(&id, secret, None, Source::Config, description)))
        }
        Material::Environment { id, secret, token } => {
            let with_token = match token {
                Some(_) => format!(", with {ENV_SECURITY_TOKEN}"),
                None => String::new(),
            };
            let description = format!(
                "environment ({ENV_ACCESS_KEY_ID}={}{with_token})",
                mask_id(&id)
            );
            Ok(fixed(found(
                &id,
                secret,
                token,
                Source::Environment,
                description,
            )))
        }
        Material::Systemd { id, secret, token } => {
            from_systemd(&id, &secret, token.as_ref()).map(fixed)
        }
        Material::Oidc {
            role_arn,
            provider_arn,
            token_file,
        } => Ok(Resolved::Dynamic(Dynamic::Oidc {
            role_arn,
            provider_arn,
            token_file,
            session_name: env.var(ENV_ROLE_SESSION_NAME).map(str::to_string),
            origin: format!(
                "environment ({ENV_ROLE_ARN}, {ENV_OIDC_PROVIDER_ARN}, {ENV_OIDC_TOKEN_FILE})"
            ),
        })),
        Material::CredentialsFile { file, profile } => from_ini(&file, &profile, settings, env),
        Material::AliyunCli { file, profile } => from_cli(&file, profile.as_deref(), settings, env),
        Material::Instance { ecs, uri } => Ok(Resolved::Dynamic(Dynamic::Instance {
            ecs,
            uri,
            origin: "instance".to_string(),
        })),
    }
}

/// The metadata service plan for a source that names the ECS RAM role (`role`: the
/// profile's, else `[aliyun] role_name`, else discovered).
fn ecs_plan(settings: &AliyunSettings, role: Option<String>) -> EcsPlan {
    EcsPlan {
        endpoint: settings
            .access
            .metadata_endpoint
            .clone()
            .unwrap_or_else(|| crate::config::DEFAULT_METADATA_ENDPOINT.to_string()),
        role_name: role.or_else(|| settings.access.role_name.clone()),
        imds_v1: settings.access.imds_v1,
    }
}

fn from_systemd(
    id: &FileBytes,
    secret: &FileBytes,
    token: Option<&FileBytes>,
) -> Result<Credentials, CredentialsError> {
    let key_id = file_text(id)?;
    let secret = file_text(secret)?;
    let token = token.map(file_text).transpose()?;
    let description = format!(
        "systemd credentials ({}: {})",
        id.path.display(),
        mask_id(key_id.expose())
    );
    Ok(found(
        key_id.expose(),
        secret,
        token,
        Source::Systemd,
        description,
    ))
}

fn from_ini(
    file: &FileBytes,
    profile: &str,
    settings: &AliyunSettings,
    env: &Environment,
) -> Result<Resolved, CredentialsError> {
    let text = file_text(file)?;
    let typed = profile::ini_profile(text.expose(), profile).map_err(|p| bad_file(file, p))?;
    let kind = typed.type_name().to_string();
    let origin = format!("{}, profile [{profile}], type {kind}", file.path.display());
    let missing = |key: &str| {
        bad_file(
            file,
            format!("profile [{profile}] (type = {kind}) has no `{key}`; add it"),
        )
    };
    let (id, secret, token) = match typed {
        IniProfile::AccessKey {
            access_key_id,
            access_key_secret,
        } => (access_key_id, access_key_secret, None),
        IniProfile::Sts {
            access_key_id,
            access_key_secret,
            security_token,
        } => (access_key_id, access_key_secret, Some(security_token)),
        IniProfile::RamRoleArn {
            access_key_id,
            access_key_secret,
            role_arn,
            role_session_name,
            external_id,
        } => {
            let id = access_key_id.ok_or_else(|| missing("access_key_id"))?;
            let secret = access_key_secret.ok_or_else(|| missing("access_key_secret"))?;
            let role_arn = role_arn.ok_or_else(|| missing("role_arn"))?;
            let base_description = format!("{origin} (base key)");
            let base = found(&id, secret, None, Source::CredentialsFile, base_description);
            return Ok(Resolved::Dynamic(Dynamic::AssumeRole {
                base,
                role_arn,
                session_name: role_session_name,
                external_id,
                origin,
            }));
        }
        IniProfile::EcsRamRole { role_name } => {
            return Ok(Resolved::Dynamic(Dynamic::Instance {
                ecs: Some(ecs_plan(settings, role_name)),
                uri: None,
                origin,
            }));
        }
        IniProfile::OidcRoleArn {
            role_arn,
            oidc_provider_arn,
            oidc_token_file_path,
        } => {
            return Ok(Resolved::Dynamic(Dynamic::Oidc {
                role_arn: role_arn.ok_or_else(|| missing("role_arn"))?,
                provider_arn: oidc_provider_arn.ok_or_else(|| missing("oidc_provider_arn"))?,
                token_file: PathBuf::from(
                    oidc_token_file_path.ok_or_else(|| missing("oidc_token_file_path"))?,
                ),
                session_name: env.var(ENV_ROLE_SESSION_NAME).map(str::to_string),
                origin,
            }));
        }
        IniProfile::Other { .. } => {
            let problem = format!(
                "profile [{profile}] has type = {kind}, which certrotd does not support; use \
                 type = access_key, sts, ram_role_arn, ecs_ram_role or oidc_role_arn"
            );
            return Err(bad_file(file, problem));
        }
    };
    let description = format!("{origin} (access_key_id={})", mask_id(&id));
    Ok(Resolved::Fixed(found(
        &id,
        secret,
        token,
        Source::CredentialsFile,
        description,
    )))
}

fn from_cli(
    file: &FileBytes,
    profile: Option<&str>,
    settings: &AliyunSettings,
    env: &Environment,
) -> Result<Resolved, CredentialsError> {
    let text = file_text(file)?;
    let (name, typed) =
        profile::cli_profile(text.expose(), profile).map_err(|p| bad_file(file, p))?;
    let mode = typed.mode().to_string();
    let origin = format!("{}, profile {name:?}, mode {mode}", file.path.display());
    let missing = |key: &str| {
        bad_file(
            file,
            format!(
                "profile {name:?} (mode {mode}) has no {key}; run `aliyun configure --mode {mode}`"
            ),
        )
    };
    let (id, secret, token) = match typed {
        CliProfile::Ak {
            access_key_id,
            access_key_secret,
        } => (access_key_id, access_key_secret, None),
        CliProfile::StsToken {
            access_key_id,
            access_key_secret,
            sts_token,
        } => (access_key_id, access_key_secret, Some(sts_token)),
        CliProfile::RamRoleArn {
            access_key_id,
            access_key_secret,
            ram_role_arn,
            ram_session_name,
        } => {
            let id = access_key_id.ok_or_else(|| missing("access_key_id"))?;
            let secret = access_key_secret.ok_or_else(|| missing("access_key_secret"))?;
            let role_arn = ram_role_arn.ok_or_else(|| missing("ram_role_arn"))?;
            let base = found(
                &id,
                secret,
                None,
                Source::AliyunCli,
                format!("{origin} (base key)"),
            );
            return Ok(Resolved::Dynamic(Dynamic::AssumeRole {
                base,
                role_arn,
                session_name: ram_session_name,
                external_id: None,
                origin,
            }));
        }
        CliProfile::EcsRamRole { ram_role_name } => {
            return Ok(Resolved::Dynamic(Dynamic::Instance {
                ecs: Some(ecs_plan(settings, ram_role_name)),
                uri: None,
                origin,
            }));
        }
        CliProfile::Oidc {
            ram_role_arn,
            oidc_provider_arn,
            oidc_token_file,
        } => {
            return Ok(Resolved::Dynamic(Dynamic::Oidc {
                role_arn: ram_role_arn.ok_or_else(|| missing("ram_role_arn"))?,
                provider_arn: oidc_provider_arn.ok_or_else(|| missing("oidc_provider_arn"))?,
                token_file: PathBuf::from(
                    oidc_token_file.ok_or_else(|| missing("oidc_token_file"))?,
                ),
                session_name: env.var(ENV_ROLE_SESSION_NAME).map(str::to_string),
                origin,
            }));
        }
        CliProfile::CredentialsUri { credentials_uri } => {
            return Ok(Resolved::Dynamic(Dynamic::Instance {
                ecs: None,
                uri: Some(credentials_uri.ok_or_else(|| missing("credentials_uri"))?),
                origin,
            }));
        }
        CliProfile::Other { .. } => {
            let problem = format!(
                "profile {name:?} has mode {mode:?}, which certrotd does not support; use \
                 mode AK, StsToken, RamRoleArn, EcsRamRole, OIDC or CredentialsURI \
                 (`aliyun configure --mode AK`)"
            );
            return Err(bad_file(file, problem));
        }
    };
    let description = format!("{origin} (access_key_id={})", mask_id(&id));
    Ok(Resolved::Fixed(found(
        &id,
        secret,
        token,
        Source::AliyunCli,
        description,
    )))
}

/// A file's value: UTF-8 text, trimmed, not empty.
fn file_text(file: &FileBytes) -> Result<Secret, CredentialsError> {
    let text = std::str::from_utf8(&file.bytes).map_err(|_| bad_file(file, "not UTF-8 text"))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad_file(file, "empty; write the value into it"));
    }
    Ok(Secret::from(trimmed.to_string()))
}

fn bad_file(file: &FileBytes, problem: impl Into<String>) -> CredentialsError {
    CredentialsError::BadFile {
        path: file.path.clone(),
        what: file.what.to_string(),
        problem: problem.into(),
    }
}

fn found(
    id: &str,
    secret: Secret,
    token: Option<Secret>,
    source: Source,
    description: String,
) -> Credentials {
    Credentials {
        access_key_id: id.trim().to_string(),
        secret,
        security_token: token,
        source,
        description,
    }
}

#[cfg(test)]
mod tests;
