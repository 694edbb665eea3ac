//! The I/O half of the chain: each source looks where it looks (settings, environment
//! variables, files) and hands back its raw [`Material`], or a note of where it looked. A
//! source that is half there is an error here; nothing is parsed here. Secret files are read
//! through [`crate::fsio`]: non-blocking, regular files only, capped, and refused when group
//! or others may read them (checked on the opened descriptor).

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{
    CredentialsError, ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, ENV_CREDENTIALS_DIRECTORY,
    ENV_CREDENTIALS_FILE, ENV_CREDENTIALS_URI, ENV_ECS_METADATA, ENV_OIDC_PROVIDER_ARN,
    ENV_OIDC_TOKEN_FILE, ENV_PROFILE, ENV_ROLE_ARN, ENV_SECURITY_TOKEN, EcsPlan, Environment,
    MAX_FILE, SYSTEMD_ID, SYSTEMD_SECRET, SYSTEMD_TOKEN, Secret,
};
use crate::config::AliyunSettings;
use crate::fsio::{self, FsError};

/// One source's I/O step.
pub(super) type Locate = fn(&AliyunSettings, &Environment) -> Result<Located, CredentialsError>;

/// What a source's I/O step found.
pub(super) enum Located {
    /// Not there; where it looked (for the "no credentials found" list).
    Absent(String),
    Found(Material),
}

/// A file's bytes as read, with what it is (for messages). Zeroized on drop.
pub(super) struct FileBytes {
    pub(crate) path: PathBuf,
    pub(crate) what: &'static str,
    pub(crate) bytes: Zeroizing<Vec<u8>>,
}

/// The raw material of each source, for its pure parse.
pub(super) enum Material {
    Config {
        id: String,
        secret: FileBytes,
    },
    Environment {
        id: String,
        secret: Secret,
        token: Option<Secret>,
    },
    Systemd {
        id: FileBytes,
        secret: FileBytes,
        token: Option<FileBytes>,
    },
    /// An INI credentials file and the profile asked for.
    CredentialsFile {
        file: FileBytes,
        profile: String,
    },
    /// The aliyun CLI's JSON and the profile asked for (`None`: the file's `current`).
    AliyunCli {
        file: FileBytes,
        profile: Option<String>,
    },
    /// OIDC / RRSA from the environment (the token file is read at each fetch).
    Oidc {
        role_arn: String,
        provider_arn: String,
        token_file: PathBuf,
    },
    /// The ECS RAM role (when enabled) and/or a credentials URI.
    Instance {
        ecs: Option<EcsPlan>,
        uri: Option<String>,
    },
}

/// Source 4: `ALIBABA_CLOUD_ROLE_ARN` + `ALIBABA_CLOUD_OIDC_PROVIDER_ARN` +
/// `ALIBABA_CLOUD_OIDC_TOKEN_FILE`: all three, or none.
pub(super) fn oidc(_: &AliyunSettings, env: &Environment) -> Result<Located, CredentialsError> {
    let names = [ENV_ROLE_ARN, ENV_OIDC_PROVIDER_ARN, ENV_OIDC_TOKEN_FILE];
    let values: Vec<Option<&str>> = names.iter().map(|n| env.var(n)).collect();
    match values.as_slice() {
        [Some(role), Some(provider), Some(file)] => Ok(Located::Found(Material::Oidc {
            role_arn: role.to_string(),
            provider_arn: provider.to_string(),
            token_file: PathBuf::from(file),
        })),
        _ if values.iter().all(Option::is_none) => Ok(Located::Absent(format!(
            "OIDC (RRSA): {ENV_ROLE_ARN} + {ENV_OIDC_PROVIDER_ARN} + {ENV_OIDC_TOKEN_FILE} (not set)"
        ))),
        _ => {
            let unset: Vec<&str> = names
                .iter()
                .zip(&values)
                .filter(|(_, v)| v.is_none())
                .map(|(n, _)| *n)
                .collect();
            Err(CredentialsError::Incomplete {
                source_name: "environment (OIDC)".to_string(),
                what: format!(
                    "{} not set while the other OIDC variables are: set all three of \
                     {ENV_ROLE_ARN}, {ENV_OIDC_PROVIDER_ARN}, {ENV_OIDC_TOKEN_FILE}, or none",
                    unset.join(" and ")
                ),
            })
        }
    }
}

/// Sources 7 and 8: the ECS RAM role when enabled (`[aliyun] role_name`,
/// `[aliyun] metadata_endpoint` or `ALIBABA_CLOUD_ECS_METADATA`, the SDKs' role-name
/// variable), then `ALIBABA_CLOUD_CREDENTIALS_URI`.
pub(super) fn instance(
    settings: &AliyunSettings,
    env: &Environment,
) -> Result<Located, CredentialsError> {
    let access = &settings.access;
    let env_role = env.var(ENV_ECS_METADATA).map(str::to_string);
    let enabled =
        access.role_name.is_some() || access.metadata_endpoint.is_some() || env_role.is_some();
    let ecs = enabled.then(|| EcsPlan {
        endpoint: access
            .metadata_endpoint
            .clone()
            .unwrap_or_else(|| crate::config::DEFAULT_METADATA_ENDPOINT.to_string()),
        role_name: access.role_name.clone().or(env_role),
        imds_v1: access.imds_v1,
    });
    let uri = env.var(ENV_CREDENTIALS_URI).map(str::to_string);
    if ecs.is_none() && uri.is_none() {
        return Ok(Located::Absent(format!(
            "ECS RAM role (not enabled: set [aliyun] role_name or metadata_endpoint, or \
             {ENV_ECS_METADATA}, on an ECS instance) and {ENV_CREDENTIALS_URI} (not set)"
        )));
    }
    Ok(Located::Found(Material::Instance { ecs, uri }))
}

/// Source 1: `[aliyun] access_key_id` + `access_key_secret_file`.
pub(super) fn config(
    settings: &AliyunSettings,
    _: &Environment,
) -> Result<Located, CredentialsError> {
    let incomplete = |what: &str| CredentialsError::Incomplete {
        source_name: "config file [aliyun]".to_string(),
        what: what.to_string(),
    };
    match (&settings.access_key_id, &settings.access_key_secret_file) {
        (None, None) => Ok(Located::Absent(
            "config file: [aliyun] access_key_id + access_key_secret_file (not set)".to_string(),
        )),
        (Some(_), None) => Err(incomplete(
            "access_key_id is set but access_key_secret_file is not: set both (the file holds \
             the AccessKey secret, mode 600), or neither",
        )),
        (None, Some(_)) => Err(incomplete(
            "access_key_secret_file is set but access_key_id is not: set both, or neither",
        )),
        (Some(id), Some(path)) => Ok(Located::Found(Material::Config {
            id: id.clone(),
            secret: read(path, "access_key_secret_file", 0o077)?,
        })),
    }
}

/// Source 2: `ALIBABA_CLOUD_ACCESS_KEY_ID` + `ALIBABA_CLOUD_ACCESS_KEY_SECRET` (+ token).
pub(super) fn environment(
    _: &AliyunSettings,
    env: &Environment,
) -> Result<Located, CredentialsError> {
    let incomplete = |set: &str, unset: &str| CredentialsError::Incomplete {
        source_name: "environment".to_string(),
        what: format!("{set} is set but {unset} is not: set both, or neither"),
    };
    match (env.var(ENV_ACCESS_KEY_ID), env.var(ENV_ACCESS_KEY_SECRET)) {
        (None, None) => Ok(Located::Absent(format!(
            "environment: {ENV_ACCESS_KEY_ID} + {ENV_ACCESS_KEY_SECRET} (not set)"
        ))),
        (Some(_), None) => Err(incomplete(ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET)),
        (None, Some(_)) => Err(incomplete(ENV_ACCESS_KEY_SECRET, ENV_ACCESS_KEY_ID)),
        (Some(id), Some(secret)) => Ok(Located::Found(Material::Environment {
            id: id.to_string(),
            secret: Secret::from(secret.to_string()),
            token: env
                .var(ENV_SECURITY_TOKEN)
                .map(|t| Secret::from(t.to_string())),
        })),
    }
}

/// Source 3: `$CREDENTIALS_DIRECTORY/alibaba-cloud-access-key-{id,secret}` (+ token). Others must
/// have no access; group may show the ACL systemd grants the service user.
pub(super) fn systemd(_: &AliyunSettings, env: &Environment) -> Result<Located, CredentialsError> {
    let Some(dir) = env.var(ENV_CREDENTIALS_DIRECTORY).map(PathBuf::from) else {
        return Ok(Located::Absent(format!(
            "systemd credentials: ${ENV_CREDENTIALS_DIRECTORY} (not set)"
        )));
    };
    let (id_path, secret_path) = (dir.join(SYSTEMD_ID), dir.join(SYSTEMD_SECRET));
    match (id_path.exists(), secret_path.exists()) {
        (false, false) => Ok(Located::Absent(format!(
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
            let token_path = dir.join(SYSTEMD_TOKEN);
            Ok(Located::Found(Material::Systemd {
                id: read(&id_path, SYSTEMD_ID, 0o007)?,
                secret: read(&secret_path, SYSTEMD_SECRET, 0o007)?,
                token: match token_path.exists() {
                    true => Some(read(&token_path, SYSTEMD_TOKEN, 0o007)?),
                    false => None,
                },
            }))
        }
    }
}

/// Source 6: `ALIBABA_CLOUD_CREDENTIALS_FILE`, else `~/.alibabacloud/credentials` (INI). The
/// explicitly named file must exist; the default one may be absent.
pub(super) fn credentials_file(
    _: &AliyunSettings,
    env: &Environment,
) -> Result<Located, CredentialsError> {
    let (path, explicit) = match (env.var(ENV_CREDENTIALS_FILE), &env.home) {
        (Some(p), _) => (PathBuf::from(p), true),
        (None, Some(home)) => (home.join(".alibabacloud").join("credentials"), false),
        (None, None) => {
            return Ok(Located::Absent(
                "~/.alibabacloud/credentials ($HOME not set)".to_string(),
            ));
        }
    };
    if !explicit && !path.exists() {
        return Ok(Located::Absent(format!(
            "{} (no such file)",
            path.display()
        )));
    }
    Ok(Located::Found(Material::CredentialsFile {
        file: read(&path, "Alibaba Cloud credentials file", 0o077)?,
        profile: env.var(ENV_PROFILE).unwrap_or("default").to_string(),
    }))
}

/// Source 5: the aliyun CLI's `~/.aliyun/config.json`.
pub(super) fn aliyun_cli(
    _: &AliyunSettings,
    env: &Environment,
) -> Result<Located, CredentialsError> {
    let Some(home) = &env.home else {
        return Ok(Located::Absent(
            "~/.aliyun/config.json ($HOME not set)".to_string(),
        ));
    };
    let path = home.join(".aliyun").join("config.json");
    if !path.exists() {
        return Ok(Located::Absent(format!(
            "{} (no such file)",
            path.display()
        )));
    }
    Ok(Located::Found(Material::AliyunCli {
        file: read(&path, "aliyun CLI configuration", 0o077)?,
        profile: env.var(ENV_PROFILE).map(str::to_string),
    }))
}

/// Reads a small private file: refused when `mode & forbidden` has any bit (checked on the
/// opened descriptor), when not a regular file or larger than [`MAX_FILE`].
fn read(path: &Path, what: &'static str, forbidden: u32) -> Result<FileBytes, CredentialsError> {
    let bytes = fsio::open(path)
        .and_then(|opened| {
            opened.refuse_access(forbidden)?;
            opened.read_secret(MAX_FILE)
        })
        .map_err(|e| file_error(path, what, e))?;
    Ok(FileBytes {
        path: path.to_path_buf(),
        what,
        bytes,
    })
}

/// The credentials error a reader error on a secret file means.
fn file_error(path: &Path, what: &str, e: FsError) -> CredentialsError {
    let path = path.to_path_buf();
    let what = what.to_string();
    let (detail, hint) = match e {
        FsError::Permissions { mode, .. } => {
            return CredentialsError::Permissions { path, what, mode };
        }
        FsError::NotRegular { .. } => {
            let problem = format!("{}; point to the file holding the value", e.reason());
            return CredentialsError::BadFile {
                path,
                what,
                problem,
            };
        }
        FsError::TooLarge { .. } => {
            let problem = "larger than 64 KiB; is this the right file?".to_string();
            return CredentialsError::BadFile {
                path,
                what,
                problem,
            };
        }
        FsError::NotFound { .. } | FsError::Open { .. } => (
            e.reason(),
            "check the path and that certrotd's user may read it",
        ),
        _ => (e.reason(), "check the file"),
    };
    let hint = hint.to_string();
    CredentialsError::Unreadable {
        path,
        what,
        detail,
        hint,
    }
}
