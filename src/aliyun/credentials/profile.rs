//! The pure parse of the two profile formats: the Alibaba Cloud INI credentials file and
//! the aliyun CLI's `config.json`. Each gives a typed profile — the kinds certrotd uses
//! (AccessKey, STS token) and the kinds it does not use yet (ECS RAM role, RAM role ARN,
//! OIDC role ARN, credentials URI), so that a caller can name them — or a problem text that
//! never quotes a value of the file.

use zeroize::{Zeroize, Zeroizing};

use super::Secret;

/// One `[name]` section of an INI file.
pub(super) struct IniSection {
    pub(crate) name: String,
    /// 1-based line of the header.
    pub(crate) line: usize,
    entries: Vec<(String, Zeroizing<String>)>,
}

impl IniSection {
    /// A key's non-empty value (the last one wins).
    pub(super) fn get(&self, key: &str) -> Option<&str> {
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
pub(super) fn parse_ini(text: &str) -> Result<Vec<IniSection>, usize> {
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

/// An INI profile, by its `type`.
pub(super) enum IniProfile {
    AccessKey {
        access_key_id: String,
        access_key_secret: Secret,
    },
    Sts {
        access_key_id: String,
        access_key_secret: Secret,
        security_token: Secret,
    },
    EcsRamRole {
        role_name: Option<String>,
    },
    RamRoleArn {
        access_key_id: Option<String>,
        access_key_secret: Option<Secret>,
        role_arn: Option<String>,
        role_session_name: Option<String>,
        external_id: Option<String>,
    },
    OidcRoleArn {
        role_arn: Option<String>,
        oidc_provider_arn: Option<String>,
        oidc_token_file_path: Option<String>,
    },
    /// Any other `type` (e.g. `rsa_key_pair`, `bearer`).
    Other {
        type_name: String,
    },
}

impl IniProfile {
    /// The `type` value it was read from.
    pub(super) fn type_name(&self) -> &str {
        match self {
            IniProfile::AccessKey { .. } => "access_key",
            IniProfile::Sts { .. } => "sts",
            IniProfile::EcsRamRole { .. } => "ecs_ram_role",
            IniProfile::RamRoleArn { .. } => "ram_role_arn",
            IniProfile::OidcRoleArn { .. } => "oidc_role_arn",
            IniProfile::Other { type_name } => type_name,
        }
    }
}

/// Profile `[name]` of INI `text`, typed; `Err` is the problem (without values).
pub(super) fn ini_profile(text: &str, name: &str) -> Result<IniProfile, String> {
    let sections = parse_ini(text).map_err(|line| {
        format!("line {line} is neither a [profile] header nor `key = value`; fix the line")
    })?;
    let Some(section) = sections.iter().find(|s| s.name == name) else {
        let names: Vec<&str> = sections.iter().map(|s| s.name.as_str()).collect();
        let names = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        };
        return Err(format!(
            "no profile [{name}] (profiles there: {names}); add it, or set {} to one of them",
            super::ENV_PROFILE
        ));
    };
    typed_ini(section)
}

fn typed_ini(section: &IniSection) -> Result<IniProfile, String> {
    let required = |k: &str| {
        section.get(k).ok_or_else(|| {
            let (name, line) = (&section.name, section.line);
            format!("profile [{name}] has no `{k}` (line {line}); add it")
        })
    };
    let optional = |k: &str| section.get(k).map(str::to_string);
    let secret = |k: &str| required(k).map(|v| Secret::from(v.to_string()));
    Ok(match required("type")? {
        "access_key" => IniProfile::AccessKey {
            access_key_id: required("access_key_id")?.to_string(),
            access_key_secret: secret("access_key_secret")?,
        },
        "sts" => {
            let security_token = secret("security_token")?;
            IniProfile::Sts {
                access_key_id: required("access_key_id")?.to_string(),
                access_key_secret: secret("access_key_secret")?,
                security_token,
            }
        }
        "ecs_ram_role" => IniProfile::EcsRamRole {
            role_name: optional("role_name"),
        },
        "ram_role_arn" => IniProfile::RamRoleArn {
            access_key_id: optional("access_key_id"),
            access_key_secret: section
                .get("access_key_secret")
                .map(|v| Secret::from(v.to_string())),
            role_arn: optional("role_arn"),
            role_session_name: optional("role_session_name"),
            external_id: optional("external_id"),
        },
        "oidc_role_arn" => IniProfile::OidcRoleArn {
            role_arn: optional("role_arn"),
            oidc_provider_arn: optional("oidc_provider_arn"),
            oidc_token_file_path: optional("oidc_token_file_path"),
        },
        other => IniProfile::Other {
            type_name: other.to_string(),
        },
    })
}

// ------------------------------------------------------------------------ aliyun CLI

#[derive(serde::Deserialize)]
struct CliConfig {
    #[serde(default)]
    current: Option<String>,
    #[serde(default)]
    profiles: Vec<RawCliProfile>,
}

/// A profile as the CLI writes it. The fields certrotd reads for the modes it does not use
/// yet are lenient (anything but a string reads as empty), so that they never make a file
/// that parsed before fail now.
#[derive(serde::Deserialize)]
struct RawCliProfile {
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
    #[serde(default, deserialize_with = "lenient")]
    ram_role_name: String,
    #[serde(default, deserialize_with = "lenient")]
    ram_role_arn: String,
    #[serde(default, deserialize_with = "lenient")]
    ram_session_name: String,
    #[serde(default, deserialize_with = "lenient")]
    oidc_provider_arn: String,
    #[serde(default, deserialize_with = "lenient")]
    oidc_token_file: String,
    #[serde(default, deserialize_with = "lenient")]
    credentials_uri: String,
}

impl Drop for RawCliProfile {
    fn drop(&mut self) {
        self.access_key_secret.zeroize();
        self.sts_token.zeroize();
    }
}

/// A string, or empty for any other JSON value.
fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let value: serde_json::Value = serde::Deserialize::deserialize(d)?;
    Ok(match value {
        serde_json::Value::String(s) => s,
        _ => String::new(),
    })
}

/// A CLI profile, by its `mode`.
pub(super) enum CliProfile {
    Ak {
        access_key_id: String,
        access_key_secret: Secret,
    },
    StsToken {
        access_key_id: String,
        access_key_secret: Secret,
        sts_token: Secret,
    },
    EcsRamRole {
        ram_role_name: Option<String>,
    },
    RamRoleArn {
        access_key_id: Option<String>,
        access_key_secret: Option<Secret>,
        ram_role_arn: Option<String>,
        ram_session_name: Option<String>,
    },
    Oidc {
        ram_role_arn: Option<String>,
        oidc_provider_arn: Option<String>,
        oidc_token_file: Option<String>,
    },
    CredentialsUri {
        credentials_uri: Option<String>,
    },
    /// Any other mode (e.g. `RsaKeyPair`, `ChainableRamRoleArn`, `CloudSSO`).
    Other {
        mode: String,
    },
}

impl CliProfile {
    /// The `mode` value it was read from.
    pub(super) fn mode(&self) -> &str {
        match self {
            CliProfile::Ak { .. } => "AK",
            CliProfile::StsToken { .. } => "StsToken",
            CliProfile::EcsRamRole { .. } => "EcsRamRole",
            CliProfile::RamRoleArn { .. } => "RamRoleArn",
            CliProfile::Oidc { .. } => "OIDC",
            CliProfile::CredentialsUri { .. } => "CredentialsURI",
            CliProfile::Other { mode } => mode,
        }
    }
}

/// The profile `wanted` (else the file's `current`, else `default`) of CLI JSON `text`,
/// typed, with the name it was found under; `Err` is the problem (without values).
pub(super) fn cli_profile(
    text: &str,
    wanted: Option<&str>,
) -> Result<(String, CliProfile), String> {
    // serde_json's message can quote a value: report only where it failed.
    let mut config: CliConfig = serde_json::from_str(text).map_err(|e| {
        format!(
            "not valid JSON at line {} column {}; run `aliyun configure` again or fix it",
            e.line(),
            e.column()
        )
    })?;
    let wanted = wanted
        .map(str::to_string)
        .or_else(|| config.current.clone())
        .unwrap_or_else(|| "default".to_string());
    let Some(raw) = config.profiles.iter_mut().find(|p| p.name == wanted) else {
        return Err(format!(
            "no profile named {wanted:?}; run `aliyun configure --profile {wanted}` or set {}",
            super::ENV_PROFILE
        ));
    };
    let profile = typed_cli(raw, &wanted)?;
    Ok((wanted, profile))
}

fn typed_cli(raw: &mut RawCliProfile, name: &str) -> Result<CliProfile, String> {
    let optional = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(match raw.mode.as_str() {
        "AK" => {
            let (access_key_id, access_key_secret) = key_pair(raw, name)?;
            CliProfile::Ak {
                access_key_id,
                access_key_secret,
            }
        }
        "StsToken" => {
            let sts_token = take_nonempty(&mut raw.sts_token)
                .ok_or_else(|| format!("profile {name:?} (mode StsToken) has no sts_token"))?;
            let (access_key_id, access_key_secret) = key_pair(raw, name)?;
            CliProfile::StsToken {
                access_key_id,
                access_key_secret,
                sts_token,
            }
        }
        "EcsRamRole" => CliProfile::EcsRamRole {
            ram_role_name: optional(&raw.ram_role_name),
        },
        "RamRoleArn" => CliProfile::RamRoleArn {
            access_key_id: optional(&raw.access_key_id),
            access_key_secret: take_nonempty(&mut raw.access_key_secret),
            ram_role_arn: optional(&raw.ram_role_arn),
            ram_session_name: optional(&raw.ram_session_name),
        },
        "OIDC" => CliProfile::Oidc {
            ram_role_arn: optional(&raw.ram_role_arn),
            oidc_provider_arn: optional(&raw.oidc_provider_arn),
            oidc_token_file: optional(&raw.oidc_token_file),
        },
        "CredentialsURI" => CliProfile::CredentialsUri {
            credentials_uri: optional(&raw.credentials_uri),
        },
        other => CliProfile::Other {
            mode: other.to_string(),
        },
    })
}

/// The AccessKey ID and secret of a profile, moved out of it.
fn key_pair(raw: &mut RawCliProfile, name: &str) -> Result<(String, Secret), String> {
    let missing = |k: &str| format!("profile {name:?} has no {k}; run `aliyun configure`");
    let id = std::mem::take(&mut raw.access_key_id);
    if id.is_empty() {
        return Err(missing("access_key_id"));
    }
    let secret =
        take_nonempty(&mut raw.access_key_secret).ok_or_else(|| missing("access_key_secret"))?;
    Ok((id, secret))
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
