//! The Alibaba Cloud credential chain: where certrotd finds its AccessKey.
//!
//! Owns: the order of the sources (first found wins) —
//! 1. the config file: `[aliyun] access_key_id` + `access_key_secret_file`;
//! 2. the environment: `ALIBABA_CLOUD_ACCESS_KEY_ID` + `ALIBABA_CLOUD_ACCESS_KEY_SECRET`
//!    (+ optional `ALIBABA_CLOUD_SECURITY_TOKEN`);
//! 3. systemd credentials: `$CREDENTIALS_DIRECTORY/alibaba-cloud-access-key-id` and
//!    `alibaba-cloud-access-key-secret` (+ optional `alibaba-cloud-security-token`), as
//!    `LoadCredential=` provides them;
//! 4. the Alibaba Cloud credentials file, `~/.alibabacloud/credentials` (or
//!    `ALIBABA_CLOUD_CREDENTIALS_FILE`), INI, profile `ALIBABA_CLOUD_PROFILE` (default
//!    `default`), types `access_key` and `sts`;
//! 5. the aliyun CLI's `~/.aliyun/config.json`, profile `ALIBABA_CLOUD_PROFILE` or the file's
//!    `current`, modes `AK` and `StsToken`.
//!
//! A source that is present but broken (half set, unreadable, too open) is an error, never
//! skipped: falling through would silently use another key.
//!
//! Invariants: secrets live only in [`Secret`] (redacting `Debug`, zeroized on drop) and
//! zeroizing buffers; no error or description carries a secret or a line of a secret file;
//! a secret file readable by group or others is refused with the `chmod 600` to run (systemd
//! credential files: by others, since systemd may grant the service user access through an
//! ACL that shows as group permission). The environment and home folder are injected
//! ([`Environment`]) so tests never touch the real ones.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zeroize::{Zeroize, Zeroizing};

use crate::config::AliyunSettings;

pub const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
pub const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
pub const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";
pub const ENV_CREDENTIALS_FILE: &str = "ALIBABA_CLOUD_CREDENTIALS_FILE";
pub const ENV_PROFILE: &str = "ALIBABA_CLOUD_PROFILE";
pub const ENV_CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";
pub const SYSTEMD_ID: &str = "alibaba-cloud-access-key-id";
pub const SYSTEMD_SECRET: &str = "alibaba-cloud-access-key-secret";
pub const SYSTEMD_TOKEN: &str = "alibaba-cloud-security-token";
/// Largest credential file read.
const MAX_FILE: u64 = 64 * 1024;

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

/// Which source of the chain a key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Built by code (tests, the demo).
    Given,
    Config,
    Environment,
    Systemd,
    CredentialsFile,
    AliyunCli,
}

/// An AccessKey (optionally temporary, with an STS token) and where it came from.
#[derive(Clone, Debug)]
pub struct Credentials {
    access_key_id: String,
    secret: Secret,
    security_token: Option<Secret>,
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
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }
    pub fn secret(&self) -> &Secret {
        &self.secret
    }
    pub fn security_token(&self) -> Option<&Secret> {
        self.security_token.as_ref()
    }
    pub fn source_kind(&self) -> Source {
        self.source
    }
    /// Where the key was found, for `certrotd check`, e.g.
    /// `environment (ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI…xyz)`. Never the secret.
    pub fn source(&self) -> &str {
        &self.description
    }
}

/// What the chain may look at: environment variables and the home folder.
#[derive(Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, Zeroizing<String>>,
    home: Option<PathBuf>,
}

impl Environment {
    /// Nothing set, no home folder.
    pub fn empty() -> Environment {
        Environment::default()
    }

    /// The process's own variables that the chain reads, and `$HOME`.
    pub fn from_process() -> Environment {
        let names = [
            ENV_ACCESS_KEY_ID,
            ENV_ACCESS_KEY_SECRET,
            ENV_SECURITY_TOKEN,
            ENV_CREDENTIALS_FILE,
            ENV_PROFILE,
            ENV_CREDENTIALS_DIRECTORY,
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

    pub fn with_var(mut self, name: &str, value: &str) -> Environment {
        self.vars
            .insert(name.to_string(), Zeroizing::new(value.to_string()));
        self
    }

    pub fn with_home(mut self, home: impl Into<PathBuf>) -> Environment {
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
}

impl CredentialsError {
    pub fn kind(&self) -> &'static str {
        match self {
            CredentialsError::Incomplete { .. } => "incomplete",
            CredentialsError::Unreadable { .. } => "unreadable",
            CredentialsError::Permissions { .. } => "permissions",
            CredentialsError::BadFile { .. } => "bad-file",
            CredentialsError::NotFound { .. } => "not-found",
        }
    }
}

/// One source's answer: found, not there (with a note of where it looked), or broken.
type Found = Result<Result<Credentials, String>, CredentialsError>;

/// Walks the chain: the first source present wins; a present but broken source is an error.
pub fn load(settings: &AliyunSettings, env: &Environment) -> Result<Credentials, CredentialsError> {
    let sources: [&dyn Fn() -> Found; 5] = [
        &|| from_config(settings),
        &|| from_env(env),
        &|| from_systemd(env),
        &|| from_credentials_file(env),
        &|| from_aliyun_cli(env),
    ];
    let mut looked = Vec::with_capacity(sources.len());
    for source in sources {
        match source()? {
            Ok(creds) => return Ok(creds),
            Err(note) => looked.push(note),
        }
    }
    Err(CredentialsError::NotFound { looked })
}

/// `LTAI…xyz`: enough of an AccessKey ID to recognise it.
pub fn mask_id(id: &str) -> String {
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

fn from_config(settings: &AliyunSettings) -> Found {
    let source_name = "config file [aliyun]".to_string();
    match (&settings.access_key_id, &settings.access_key_secret_file) {
        (None, None) => Ok(Err(
            "config file: [aliyun] access_key_id + access_key_secret_file (not set)".to_string(),
        )),
        (Some(_), None) => Err(CredentialsError::Incomplete {
            source_name,
            what: "access_key_id is set but access_key_secret_file is not: set both (the file \
                   holds the AccessKey secret, mode 600), or neither"
                .to_string(),
        }),
        (None, Some(_)) => Err(CredentialsError::Incomplete {
            source_name,
            what: "access_key_secret_file is set but access_key_id is not: set both, or neither"
                .to_string(),
        }),
        (Some(id), Some(path)) => {
            let secret = read_secret_file(path, "access_key_secret_file", 0o077)?;
            let description = format!(
                "config file (access_key_id={}, access_key_secret_file={})",
                mask_id(id),
                path.display()
            );
            Ok(Ok(found(id, secret, None, Source::Config, description)))
        }
    }
}

fn from_env(env: &Environment) -> Found {
    let id = env.var(ENV_ACCESS_KEY_ID);
    let secret = env.var(ENV_ACCESS_KEY_SECRET);
    let incomplete = |set: &str, unset: &str| CredentialsError::Incomplete {
        source_name: "environment".to_string(),
        what: format!("{set} is set but {unset} is not: set both, or neither"),
    };
    match (id, secret) {
        (None, None) => Ok(Err(format!(
            "environment: {ENV_ACCESS_KEY_ID} + {ENV_ACCESS_KEY_SECRET} (not set)"
        ))),
        (Some(_), None) => Err(incomplete(ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET)),
        (None, Some(_)) => Err(incomplete(ENV_ACCESS_KEY_SECRET, ENV_ACCESS_KEY_ID)),
        (Some(id), Some(secret)) => {
            let token = env.var(ENV_SECURITY_TOKEN).map(owned_secret);
            let with_token = if token.is_some() {
                format!(", with {ENV_SECURITY_TOKEN}")
            } else {
                String::new()
            };
            let description = format!(
                "environment ({ENV_ACCESS_KEY_ID}={}{with_token})",
                mask_id(id)
            );
            Ok(Ok(found(
                id,
                owned_secret(secret),
                token,
                Source::Environment,
                description,
            )))
        }
    }
}

fn from_systemd(env: &Environment) -> Found {
    let Some(dir) = env.var(ENV_CREDENTIALS_DIRECTORY).map(PathBuf::from) else {
        return Ok(Err(format!(
            "systemd credentials: ${ENV_CREDENTIALS_DIRECTORY} (not set)"
        )));
    };
    let id_path = dir.join(SYSTEMD_ID);
    let secret_path = dir.join(SYSTEMD_SECRET);
    match (id_path.exists(), secret_path.exists()) {
        (false, false) => Ok(Err(format!(
            "systemd credentials: {} and {} (no such files)",
            id_path.display(),
            secret_path.display()
        ))),
        (true, false) | (false, true) => Err(CredentialsError::Incomplete {
            source_name: format!("systemd credentials in {}", dir.display()),
            what: format!(
                "only one of {SYSTEMD_ID} and {SYSTEMD_SECRET} is there: add both \
                 LoadCredential= lines to the unit"
            ),
        }),
        (true, true) => {
            // Others must have no access; group may show the ACL systemd grants the user.
            let id = read_secret_file(&id_path, SYSTEMD_ID, 0o007)?;
            let secret = read_secret_file(&secret_path, SYSTEMD_SECRET, 0o007)?;
            let token_path = dir.join(SYSTEMD_TOKEN);
            let token = if token_path.exists() {
                Some(read_secret_file(&token_path, SYSTEMD_TOKEN, 0o007)?)
            } else {
                None
            };
            let description = format!(
                "systemd credentials ({}: {})",
                id_path.display(),
                mask_id(id.expose())
            );
            Ok(Ok(found(
                id.expose(),
                secret,
                token,
                Source::Systemd,
                description,
            )))
        }
    }
}

fn from_credentials_file(env: &Environment) -> Found {
    let (path, explicit) = match (env.var(ENV_CREDENTIALS_FILE), &env.home) {
        (Some(p), _) => (PathBuf::from(p), true),
        (None, Some(home)) => (home.join(".alibabacloud").join("credentials"), false),
        (None, None) => {
            return Ok(Err(
                "~/.alibabacloud/credentials ($HOME not set)".to_string()
            ));
        }
    };
    if !explicit && !path.exists() {
        return Ok(Err(format!("{} (no such file)", path.display())));
    }
    let what = "Alibaba Cloud credentials file";
    let text = read_secret_file(&path, what, 0o077)?;
    let profile = env.var(ENV_PROFILE).unwrap_or("default");
    let bad = |problem: String| CredentialsError::BadFile {
        path: path.clone(),
        what: what.to_string(),
        problem,
    };
    let sections = parse_ini(text.expose()).map_err(|line| {
        bad(format!(
            "line {line} is neither a [profile] header nor `key = value`; fix the line"
        ))
    })?;
    let Some(section) = sections.iter().find(|s| s.name == profile) else {
        let names: Vec<&str> = sections.iter().map(|s| s.name.as_str()).collect();
        return Err(bad(format!(
            "no profile [{profile}] (profiles there: {}); add it, or set {ENV_PROFILE} to one \
             of them",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    };
    let key = |k: &str| {
        section.get(k).ok_or_else(|| {
            bad(format!(
                "profile [{profile}] has no `{k}` (line {}); add it",
                section.line
            ))
        })
    };
    let kind = key("type")?;
    let token = match kind {
        "access_key" => None,
        "sts" => Some(owned_secret(key("security_token")?)),
        other => {
            return Err(bad(format!(
                "profile [{profile}] has type = {other}, which certrotd does not support; use \
                 type = access_key or type = sts"
            )));
        }
    };
    let id = key("access_key_id")?;
    let secret = owned_secret(key("access_key_secret")?);
    let description = format!(
        "{}, profile [{profile}], type {kind} (access_key_id={})",
        path.display(),
        mask_id(id)
    );
    Ok(Ok(found(
        id,
        secret,
        token,
        Source::CredentialsFile,
        description,
    )))
}

fn from_aliyun_cli(env: &Environment) -> Found {
    let Some(home) = &env.home else {
        return Ok(Err("~/.aliyun/config.json ($HOME not set)".to_string()));
    };
    let path = home.join(".aliyun").join("config.json");
    if !path.exists() {
        return Ok(Err(format!("{} (no such file)", path.display())));
    }
    let what = "aliyun CLI configuration";
    let text = read_secret_file(&path, what, 0o077)?;
    let bad = |problem: String| CredentialsError::BadFile {
        path: path.clone(),
        what: what.to_string(),
        problem,
    };
    // serde_json's message can quote a value: report only where it failed.
    let mut config: CliConfig = serde_json::from_str(text.expose()).map_err(|e| {
        bad(format!(
            "not valid JSON at line {} column {}; run `aliyun configure` again or fix it",
            e.line(),
            e.column()
        ))
    })?;
    let wanted = env
        .var(ENV_PROFILE)
        .map(str::to_string)
        .or_else(|| config.current.clone())
        .unwrap_or_else(|| "default".to_string());
    let Some(profile) = config.profiles.iter_mut().find(|p| p.name == wanted) else {
        return Err(bad(format!(
            "no profile named {wanted:?}; run `aliyun configure --profile {wanted}` or set \
             {ENV_PROFILE}"
        )));
    };
    let token = match profile.mode.as_str() {
        "AK" => None,
        "StsToken" => Some(take_nonempty(&mut profile.sts_token).ok_or_else(|| {
            bad(format!(
                "profile {wanted:?} (mode StsToken) has no sts_token"
            ))
        })?),
        other => {
            return Err(bad(format!(
                "profile {wanted:?} has mode {other:?}, which certrotd does not support; use \
                 mode AK or StsToken (`aliyun configure --mode AK`)"
            )));
        }
    };
    let missing = |k: &str| {
        bad(format!(
            "profile {wanted:?} has no {k}; run `aliyun configure`"
        ))
    };
    let id = std::mem::take(&mut profile.access_key_id);
    if id.is_empty() {
        return Err(missing("access_key_id"));
    }
    let secret = take_nonempty(&mut profile.access_key_secret)
        .ok_or_else(|| missing("access_key_secret"))?;
    let description = format!(
        "{}, profile {wanted:?}, mode {} (access_key_id={})",
        path.display(),
        profile.mode,
        mask_id(&id)
    );
    Ok(Ok(found(
        &id,
        secret,
        token,
        Source::AliyunCli,
        description,
    )))
}

#[derive(serde::Deserialize)]
struct CliConfig {
    #[serde(default)]
    current: Option<String>,
    #[serde(default)]
    profiles: Vec<CliProfile>,
}

#[derive(serde::Deserialize)]
struct CliProfile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    access_key_id: String,
    #[serde(default)]
    access_key_secret: String,
    #[serde(default)]
    sts_token: String,
}

impl Drop for CliProfile {
    fn drop(&mut self) {
        self.access_key_secret.zeroize();
        self.sts_token.zeroize();
    }
}

/// Moves a non-empty string out into a [`Secret`], leaving an empty one.
fn take_nonempty(field: &mut String) -> Option<Secret> {
    let value = std::mem::take(field);
    if value.trim().is_empty() {
        None
    } else {
        Some(Secret::from(value))
    }
}

fn owned_secret(text: &str) -> Secret {
    Secret::from(text.to_string())
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

/// Reads a small private file: refused when `mode & forbidden` has any bit (with the `chmod`
/// to run), when not a regular file, too large, not UTF-8 or empty. Returns the trimmed text.
fn read_secret_file(path: &Path, what: &str, forbidden: u32) -> Result<Secret, CredentialsError> {
    let unreadable = |detail: String, hint: &str| CredentialsError::Unreadable {
        path: path.to_path_buf(),
        what: what.to_string(),
        detail,
        hint: hint.to_string(),
    };
    let bad = |problem: &str| CredentialsError::BadFile {
        path: path.to_path_buf(),
        what: what.to_string(),
        problem: problem.to_string(),
    };
    let file = std::fs::File::open(path).map_err(|e| {
        unreadable(
            e.to_string(),
            "check the path and that certrotd's user may read it",
        )
    })?;
    let meta = file
        .metadata()
        .map_err(|e| unreadable(e.to_string(), "check the file"))?;
    if !meta.is_file() {
        return Err(bad(
            "not a regular file; point to the file holding the value",
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & forbidden != 0 {
        return Err(CredentialsError::Permissions {
            path: path.to_path_buf(),
            what: what.to_string(),
            mode,
        });
    }
    if meta.len() > MAX_FILE {
        return Err(bad("larger than 64 KiB; is this the right file?"));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(
        usize::try_from(meta.len()).unwrap_or(0) + 1,
    ));
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(e.to_string(), "check the file"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not UTF-8 text"))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("empty; write the value into it"));
    }
    Ok(owned_secret(trimmed))
}

/// One `[name]` section of an INI file.
struct IniSection {
    name: String,
    line: usize,
    entries: Vec<(String, Zeroizing<String>)>,
}

impl IniSection {
    /// A key's non-empty value.
    fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Parses INI text: `[name]` headers, `key = value` lines (value unquoted if quoted), `#`
/// and `;` comment lines. Entries before any header are ignored. `Err(line)` names the
/// first line that is neither.
fn parse_ini(text: &str) -> Result<Vec<IniSection>, usize> {
    let mut sections: Vec<IniSection> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push(IniSection {
                name: name.trim().to_string(),
                line: i + 1,
                entries: Vec::new(),
            });
            continue;
        }
        let (key, value) = line.split_once('=').ok_or(i + 1)?;
        let value = value.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        if let Some(section) = sections.last_mut() {
            section
                .entries
                .push((key.trim().to_string(), Zeroizing::new(unquoted.to_string())));
        }
    }
    Ok(sections)
}

#[cfg(test)]
mod tests;
