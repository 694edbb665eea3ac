//! Credential chain tests: every source, the precedence, permission refusals, broken
//! sources, and that no text ever carries a secret. Everything lives in temporary folders
//! and an injected [`Environment`].

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::*;

const CONFIG_SECRET: &str = "cfgSECRETvalue0001";
const ENV_SECRET: &str = "envSECRETvalue0002";
const SYSTEMD_SECRET_VALUE: &str = "sysSECRETvalue0003";
const INI_SECRET: &str = "iniSECRETvalue0004";
const CLI_SECRET: &str = "cliSECRETvalue0005";
const TOKEN: &str = "tokenSECRETvalue0006";
const ALL_SECRETS: &[&str] = &[
    CONFIG_SECRET,
    ENV_SECRET,
    SYSTEMD_SECRET_VALUE,
    INI_SECRET,
    CLI_SECRET,
    TOKEN,
];

fn settings(id: Option<&str>, file: Option<&Path>) -> AliyunSettings {
    AliyunSettings {
        access_key_id: id.map(str::to_string),
        access_key_secret_file: file.map(Path::to_path_buf),
        read_requests_per_second: 100,
        max_attempts: 3,
        timeout: Duration::from_secs(10),
        ..AliyunSettings::defaults("https://cdn.aliyuncs.com")
    }
}

fn write(path: &Path, text: &str, mode: u32) -> PathBuf {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    path.to_path_buf()
}

/// A home folder and a systemd credentials folder, each with every source filled in.
struct World {
    dir: TempDir,
}

impl World {
    fn new() -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
    fn creds_dir(&self) -> PathBuf {
        self.dir.path().join("run-credentials")
    }
    fn secret_file(&self, mode: u32) -> PathBuf {
        write(
            &self.dir.path().join("etc/secret"),
            &format!("{CONFIG_SECRET}\n"),
            mode,
        )
    }
    fn systemd(&self, mode: u32) {
        write(
            &self.creds_dir().join(SYSTEMD_ID),
            "LTAIsystemd0003\n",
            mode,
        );
        write(
            &self.creds_dir().join(SYSTEMD_SECRET),
            SYSTEMD_SECRET_VALUE,
            mode,
        );
    }
    fn ini_path(&self) -> PathBuf {
        self.home().join(".alibabacloud/credentials")
    }
    fn ini(&self, text: &str, mode: u32) -> PathBuf {
        write(&self.ini_path(), text, mode)
    }
    fn default_ini(&self) {
        self.ini(
            &format!(
                "# comment\n[default]\ntype = access_key\naccess_key_id = LTAIinifile0004\n\
                 access_key_secret = {INI_SECRET}\n\n[other]\ntype = sts\n\
                 access_key_id = STS.other\naccess_key_secret = \"{INI_SECRET}\"\n\
                 security_token = {TOKEN}\n"
            ),
            0o600,
        );
    }
    fn cli_path(&self) -> PathBuf {
        self.home().join(".aliyun/config.json")
    }
    fn cli(&self, json: &serde_json::Value, mode: u32) -> PathBuf {
        write(&self.cli_path(), &json.to_string(), mode)
    }
    fn default_cli(&self) {
        self.cli(
            &serde_json::json!({
                "current": "main",
                "profiles": [
                    {"name": "default", "mode": "AK", "access_key_id": "LTAIwrong", "access_key_secret": "x"},
                    {"name": "main", "mode": "AK", "access_key_id": "LTAIclicfg0005", "access_key_secret": CLI_SECRET},
                    {"name": "temp", "mode": "StsToken", "access_key_id": "STS.cli", "access_key_secret": CLI_SECRET, "sts_token": TOKEN},
                    {"name": "role", "mode": "EcsRamRole", "ram_role_name": "r"},
                ]
            }),
            0o600,
        );
    }
    fn env(&self) -> Environment {
        Environment::empty().with_home(self.home())
    }
    fn env_with_systemd(&self) -> Environment {
        self.env().with_var(
            ENV_CREDENTIALS_DIRECTORY,
            self.creds_dir().to_str().unwrap(),
        )
    }
}

fn env_keys(env: Environment) -> Environment {
    env.with_var(ENV_ACCESS_KEY_ID, "LTAIenvironment02")
        .with_var(ENV_ACCESS_KEY_SECRET, ENV_SECRET)
}

/// Neither the text nor the `Debug` of `shown` holds any test secret.
fn assert_no_secret(shown: &str) {
    for s in ALL_SECRETS {
        assert!(!shown.contains(s), "secret {s} leaked: {shown}");
    }
}

fn ok(settings: &AliyunSettings, env: &Environment) -> Credentials {
    let creds = load(settings, env).unwrap_or_else(|e| panic!("expected credentials: {e}"));
    assert_no_secret(&format!("{creds:?} {}", creds.source()));
    creds
}

fn err(settings: &AliyunSettings, env: &Environment) -> CredentialsError {
    let e = load(settings, env).expect_err("expected an error");
    assert_no_secret(&format!("{e} {e:?}"));
    e
}

// ---------------------------------------------------------------- each source

#[test]
fn config_source() {
    let w = World::new();
    let file = w.secret_file(0o600);
    let creds = ok(&settings(Some("LTAIconfig00001"), Some(&file)), &w.env());
    assert_eq!(creds.source_kind(), Source::Config);
    assert_eq!(creds.access_key_id(), "LTAIconfig00001");
    assert_eq!(
        creds.secret().expose(),
        CONFIG_SECRET,
        "trailing newline trimmed"
    );
    assert!(creds.security_token().is_none());
    assert!(creds.source().contains("LTAI…001"), "{}", creds.source());
    assert!(creds.source().contains(&file.display().to_string()));
}

#[test]
fn environment_source() {
    let w = World::new();
    let creds = ok(&settings(None, None), &env_keys(w.env()));
    assert_eq!(creds.source_kind(), Source::Environment);
    assert_eq!(creds.access_key_id(), "LTAIenvironment02");
    assert_eq!(creds.secret().expose(), ENV_SECRET);
    assert_eq!(
        creds.source(),
        "environment (ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI…t02)"
    );
    let with_token = env_keys(w.env()).with_var(ENV_SECURITY_TOKEN, TOKEN);
    let creds = ok(&settings(None, None), &with_token);
    assert_eq!(creds.security_token().map(Secret::expose), Some(TOKEN));
    assert!(creds.source().contains(ENV_SECURITY_TOKEN));
}

#[test]
fn systemd_source() {
    let w = World::new();
    w.systemd(0o400);
    let creds = ok(&settings(None, None), &w.env_with_systemd());
    assert_eq!(creds.source_kind(), Source::Systemd);
    assert_eq!(creds.access_key_id(), "LTAIsystemd0003");
    assert_eq!(creds.secret().expose(), SYSTEMD_SECRET_VALUE);
    assert!(creds.security_token().is_none());
    write(&w.creds_dir().join(SYSTEMD_TOKEN), TOKEN, 0o400);
    let creds = ok(&settings(None, None), &w.env_with_systemd());
    assert_eq!(creds.security_token().map(Secret::expose), Some(TOKEN));
}

#[test]
fn systemd_group_access_is_accepted_but_others_refused() {
    let w = World::new();
    w.systemd(0o440);
    ok(&settings(None, None), &w.env_with_systemd());
    w.systemd(0o444);
    let e = err(&settings(None, None), &w.env_with_systemd());
    assert_eq!(e.kind(), "permissions");
}

#[test]
fn credentials_file_source_default_profile() {
    let w = World::new();
    w.default_ini();
    let creds = ok(&settings(None, None), &w.env());
    assert_eq!(creds.source_kind(), Source::CredentialsFile);
    assert_eq!(creds.access_key_id(), "LTAIinifile0004");
    assert_eq!(creds.secret().expose(), INI_SECRET);
    assert!(creds.security_token().is_none());
    assert!(
        creds.source().contains("profile [default]"),
        "{}",
        creds.source()
    );
}

#[test]
fn credentials_file_sts_profile_by_env() {
    let w = World::new();
    w.default_ini();
    let env = w.env().with_var(ENV_PROFILE, "other");
    let creds = ok(&settings(None, None), &env);
    assert_eq!(creds.access_key_id(), "STS.other");
    assert_eq!(creds.secret().expose(), INI_SECRET, "quotes removed");
    assert_eq!(creds.security_token().map(Secret::expose), Some(TOKEN));
    assert!(creds.source().contains("type sts"));
}

#[test]
fn credentials_file_from_env_path() {
    let w = World::new();
    let path = write(
        &w.dir.path().join("elsewhere.ini"),
        &format!(
            "[default]\ntype=access_key\naccess_key_id=LTAIelsewhere04\naccess_key_secret={INI_SECRET}\n"
        ),
        0o600,
    );
    let env = Environment::empty().with_var(ENV_CREDENTIALS_FILE, path.to_str().unwrap());
    let creds = ok(&settings(None, None), &env);
    assert_eq!(creds.access_key_id(), "LTAIelsewhere04");
    assert!(creds.source().contains("elsewhere.ini"));
}

#[test]
fn aliyun_cli_source_current_profile() {
    let w = World::new();
    w.default_cli();
    let creds = ok(&settings(None, None), &w.env());
    assert_eq!(creds.source_kind(), Source::AliyunCli);
    assert_eq!(creds.access_key_id(), "LTAIclicfg0005");
    assert_eq!(creds.secret().expose(), CLI_SECRET);
    assert!(creds.security_token().is_none());
    assert!(creds.source().contains("\"main\""), "{}", creds.source());
}

#[test]
fn aliyun_cli_sts_token_mode() {
    let w = World::new();
    w.default_cli();
    let creds = ok(
        &settings(None, None),
        &w.env().with_var(ENV_PROFILE, "temp"),
    );
    assert_eq!(creds.access_key_id(), "STS.cli");
    assert_eq!(creds.security_token().map(Secret::expose), Some(TOKEN));
    assert!(creds.source().contains("StsToken"));
}

// ---------------------------------------------------------------- precedence

#[test]
fn first_source_found_wins_in_order() {
    let w = World::new();
    let file = w.secret_file(0o600);
    w.systemd(0o400);
    w.default_ini();
    w.default_cli();
    let full_env = env_keys(w.env_with_systemd());
    let cfg = settings(Some("LTAIconfig00001"), Some(&file));
    let none = settings(None, None);

    assert_eq!(ok(&cfg, &full_env).source_kind(), Source::Config);
    assert_eq!(ok(&none, &full_env).source_kind(), Source::Environment);
    assert_eq!(
        ok(&none, &w.env_with_systemd()).source_kind(),
        Source::Systemd
    );
    // The SDKs' order: the aliyun CLI's profile before the credentials file.
    assert_eq!(ok(&none, &w.env()).source_kind(), Source::AliyunCli);
    fs::remove_file(w.cli_path()).unwrap();
    assert_eq!(ok(&none, &w.env()).source_kind(), Source::CredentialsFile);
    fs::remove_file(w.ini_path()).unwrap();
    assert_eq!(err(&none, &w.env()).kind(), "not-found");
}

#[test]
fn nothing_found_lists_every_place_looked() {
    let w = World::new();
    let e = err(&settings(None, None), &w.env());
    let CredentialsError::NotFound { looked } = &e else {
        panic!("expected NotFound, got {e:?}")
    };
    assert_eq!(looked.len(), 7, "{looked:?}");
    let text = e.to_string();
    for place in [
        "access_key_secret_file",
        ENV_ACCESS_KEY_ID,
        ENV_CREDENTIALS_DIRECTORY,
        ENV_OIDC_TOKEN_FILE,
        ".alibabacloud/credentials",
        ".aliyun/config.json",
        "role_name",
        ENV_CREDENTIALS_URI,
    ] {
        assert!(text.contains(place), "{place} missing from: {text}");
    }
    let e = err(&settings(None, None), &Environment::empty());
    assert!(e.to_string().contains("$HOME not set"), "{e}");
}

// ---------------------------------------------------------------- refusals

#[test]
fn open_secret_file_is_refused_with_the_chmod() {
    let w = World::new();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        let file = w.secret_file(mode);
        let e = err(&settings(Some("LTAIconfig00001"), Some(&file)), &w.env());
        assert_eq!(e.kind(), "permissions", "{mode:o}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("chmod 600 {}", file.display())),
            "{text}"
        );
        assert!(text.contains(&format!("{mode:04o}")), "{text}");
    }
}

#[test]
fn open_credentials_files_are_refused() {
    let w = World::new();
    w.default_ini();
    fs::set_permissions(w.ini_path(), fs::Permissions::from_mode(0o644)).unwrap();
    let e = err(&settings(None, None), &w.env());
    assert_eq!(e.kind(), "permissions");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    fs::remove_file(w.ini_path()).unwrap();
    w.default_cli();
    fs::set_permissions(w.cli_path(), fs::Permissions::from_mode(0o640)).unwrap();
    let e = err(&settings(None, None), &w.env());
    assert_eq!(e.kind(), "permissions");
}

#[test]
fn half_configured_sources_are_errors_not_skipped() {
    let w = World::new();
    w.default_ini();
    let e = err(&settings(Some("LTAIconfig00001"), None), &w.env());
    assert_eq!(e.kind(), "incomplete");
    assert!(e.to_string().contains("access_key_secret_file"), "{e}");
    let file = w.secret_file(0o600);
    let e = err(&settings(None, Some(&file)), &w.env());
    assert_eq!(e.kind(), "incomplete");

    let only_id = w.env().with_var(ENV_ACCESS_KEY_ID, "LTAIx");
    let e = err(&settings(None, None), &only_id);
    assert_eq!(e.kind(), "incomplete");
    assert!(e.to_string().contains(ENV_ACCESS_KEY_SECRET), "{e}");
    let only_secret = w.env().with_var(ENV_ACCESS_KEY_SECRET, ENV_SECRET);
    assert_eq!(
        err(&settings(None, None), &only_secret).kind(),
        "incomplete"
    );

    write(&w.creds_dir().join(SYSTEMD_ID), "LTAIsys", 0o400);
    let e = err(&settings(None, None), &w.env_with_systemd());
    assert_eq!(e.kind(), "incomplete");
    assert!(e.to_string().contains("LoadCredential="), "{e}");
}

#[test]
fn empty_env_values_count_as_unset() {
    let w = World::new();
    w.default_ini();
    let env = w
        .env()
        .with_var(ENV_ACCESS_KEY_ID, "")
        .with_var(ENV_ACCESS_KEY_SECRET, "");
    assert_eq!(
        ok(&settings(None, None), &env).source_kind(),
        Source::CredentialsFile
    );
}

#[test]
fn missing_or_empty_secret_file() {
    let w = World::new();
    let missing = w.dir.path().join("nope");
    let e = err(&settings(Some("LTAIa"), Some(&missing)), &w.env());
    assert_eq!(e.kind(), "unreadable");
    assert!(e.to_string().contains("nope"), "{e}");
    let empty = write(&w.dir.path().join("empty"), " \n", 0o600);
    let e = err(&settings(Some("LTAIa"), Some(&empty)), &w.env());
    assert_eq!(e.kind(), "bad-file");
    assert!(e.to_string().contains("empty"), "{e}");
    let dir = w.dir.path().join("adir");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let e = err(&settings(Some("LTAIa"), Some(&dir)), &w.env());
    assert_eq!(e.kind(), "bad-file");
    let big = write(&w.dir.path().join("big"), &"x".repeat(70_000), 0o600);
    assert_eq!(
        err(&settings(Some("LTAIa"), Some(&big)), &w.env()).kind(),
        "bad-file"
    );
}

#[test]
fn explicit_credentials_file_that_is_missing_is_an_error() {
    let w = World::new();
    let env = w
        .env()
        .with_var(ENV_CREDENTIALS_FILE, "/nonexistent/certrotd/credentials");
    let e = err(&settings(None, None), &env);
    assert_eq!(e.kind(), "unreadable");
    assert!(e.to_string().contains("/nonexistent/certrotd/credentials"));
}

#[test]
fn broken_credentials_files() {
    let w = World::new();
    let cases = [
        (
            format!("[default]\ntype = access_key\nthis line is wrong {INI_SECRET}\n"),
            "line 3",
        ),
        (
            "[prod]\ntype = access_key\n".to_string(),
            "profiles there: prod",
        ),
        ("# nothing yet\n".to_string(), "profiles there: none"),
        ("".to_string(), "empty"),
        ("[default]\naccess_key_id = a\n".to_string(), "no `type`"),
        (
            format!(
                "[default]\ntype = rsa_key_pair\nrole_name = r\naccess_key_secret = {INI_SECRET}\n"
            ),
            "rsa_key_pair",
        ),
        (
            format!(
                "[default]\ntype = ram_role_arn\naccess_key_id = a\naccess_key_secret = {INI_SECRET}\n"
            ),
            "has no `role_arn`",
        ),
        (
            "[default]\ntype = access_key\naccess_key_id = a\n".to_string(),
            "access_key_secret",
        ),
        (
            format!("[default]\ntype = sts\naccess_key_id = a\naccess_key_secret = {INI_SECRET}\n"),
            "security_token",
        ),
    ];
    for (text, want) in cases {
        w.ini(&text, 0o600);
        let e = err(&settings(None, None), &w.env());
        assert_eq!(e.kind(), "bad-file", "{text}");
        assert!(e.to_string().contains(want), "{want} not in: {e}");
        assert!(e.to_string().contains(".alibabacloud/credentials"), "{e}");
    }
}

#[test]
fn broken_cli_configs() {
    let w = World::new();
    let cases = [
        (
            serde_json::json!({"current": "gone", "profiles": [{"name": "x", "mode": "AK"}]}),
            "no profile named \"gone\"",
        ),
        (
            serde_json::json!({"current": "r", "profiles": [{"name": "r", "mode": "RamRoleArn",
                "access_key_id": "a", "access_key_secret": CLI_SECRET}]}),
            "RamRoleArn",
        ),
        (
            serde_json::json!({"current": "s", "profiles": [{"name": "s", "mode": "StsToken",
                "access_key_id": "a", "access_key_secret": CLI_SECRET}]}),
            "sts_token",
        ),
        (
            serde_json::json!({"current": "k", "profiles": [{"name": "k", "mode": "AK",
                "access_key_secret": CLI_SECRET}]}),
            "access_key_id",
        ),
    ];
    for (json, want) in cases {
        w.cli(&json, 0o600);
        let e = err(&settings(None, None), &w.env());
        assert_eq!(e.kind(), "bad-file", "{json}");
        assert!(e.to_string().contains(want), "{want} not in: {e}");
    }
    // A syntax error must not quote the file.
    write(
        &w.cli_path(),
        &format!("{{\"profiles\": [{{\"access_key_secret\": \"{CLI_SECRET}\" oops"),
        0o600,
    );
    let e = err(&settings(None, None), &w.env());
    assert!(e.to_string().contains("line 1"), "{e}");
    // A wrong type quoting the value must not leak it either.
    write(
        &w.cli_path(),
        &format!(
            "{{\"current\": \"a\", \"profiles\": [{{\"name\": \"a\", \"mode\": 1, \"access_key_secret\": \"{CLI_SECRET}\"}}], \"x\": {{\"name\": \"{CLI_SECRET}\"}}, \"profiles2\": \"{CLI_SECRET}\"}}"
        ),
        0o600,
    );
    err(&settings(None, None), &w.env());
}

// ---------------------------------------------------------------- secrets never show

#[test]
fn debug_never_shows_secrets() {
    let creds = Credentials::new(
        "LTAIid",
        Secret::from(ENV_SECRET.to_string()),
        Some(Secret::from(TOKEN.to_string())),
        "test",
    );
    assert_no_secret(&format!("{creds:?}"));
    let env = env_keys(Environment::empty()).with_var(ENV_SECURITY_TOKEN, TOKEN);
    assert_no_secret(&format!("{env:?}"));
}

#[test]
fn mask_id_shapes() {
    assert_eq!(mask_id("LTAI5tAbCdEfGhXyz"), "LTAI…Xyz");
    assert_eq!(mask_id("short"), "sh…");
    assert_eq!(mask_id(""), "…");
}

#[test]
fn ini_parser_ignores_comments_and_preamble() {
    let sections = profile::parse_ini("key = before\n; c\n# c\n[a]\nk = v = w\n[ b ]\nk='q'\n")
        .expect("parses");
    let names: Vec<&str> = sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(sections[0].get("k"), Some("v = w"));
    assert_eq!(sections[1].get("k"), Some("q"));
    assert_eq!(sections[1].line, 6);
    assert_eq!(profile::parse_ini("[a]\nno equals\n").err(), Some(2));
}

// ---------------------------------------------------------------- typed profiles (pure)

#[test]
fn ini_profiles_are_typed_including_the_kinds_not_used_yet() {
    let text = "[ak]\ntype = access_key\naccess_key_id = A\naccess_key_secret = S\n\
                [sts]\ntype = sts\naccess_key_id = B\naccess_key_secret = S\nsecurity_token = T\n\
                [ecs]\ntype = ecs_ram_role\nrole_name = web\n\
                [arn]\ntype = ram_role_arn\nrole_arn = acs:ram::1:role/r\nrole_session_name = s\n\
                [oidc]\ntype = oidc_role_arn\nrole_arn = acs:ram::1:role/o\n\
                oidc_provider_arn = acs:ram::1:oidc-provider/p\noidc_token_file_path = /t\n\
                [rsa]\ntype = rsa_key_pair\n";
    let typed = |name| profile::ini_profile(text, name).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        typed("ak"),
        IniProfile::AccessKey { access_key_id, access_key_secret }
            if access_key_id == "A" && access_key_secret.expose() == "S"
    ));
    assert!(matches!(
        typed("sts"),
        IniProfile::Sts { access_key_id, security_token, .. }
            if access_key_id == "B" && security_token.expose() == "T"
    ));
    assert!(matches!(
        typed("ecs"),
        IniProfile::EcsRamRole { role_name: Some(r) } if r == "web"
    ));
    assert!(matches!(
        typed("arn"),
        IniProfile::RamRoleArn { role_arn: Some(a), role_session_name: Some(s), .. }
            if a == "acs:ram::1:role/r" && s == "s"
    ));
    assert!(matches!(
        typed("oidc"),
        IniProfile::OidcRoleArn {
            role_arn: Some(_),
            oidc_provider_arn: Some(p),
            oidc_token_file_path: Some(t),
        } if p == "acs:ram::1:oidc-provider/p" && t == "/t"
    ));
    let other = typed("rsa");
    assert_eq!(other.type_name(), "rsa_key_pair");
    for (name, kind) in [
        ("ecs", "ecs_ram_role"),
        ("arn", "ram_role_arn"),
        ("oidc", "oidc_role_arn"),
    ] {
        assert_eq!(typed(name).type_name(), kind);
    }
}

#[test]
fn unsupported_ini_types_are_named_in_the_error() {
    let w = World::new();
    for kind in ["rsa_key_pair", "bearer", "chainable_ram_role_arn"] {
        w.ini(&format!("[default]\ntype = {kind}\nrole_arn = x\n"), 0o600);
        let e = err(&settings(None, None), &w.env());
        assert_eq!(e.kind(), "bad-file");
        let text = e.to_string();
        assert!(
            text.contains(&format!("type = {kind}, which certrotd does not support")),
            "{text}"
        );
        assert!(
            text.contains("ram_role_arn, ecs_ram_role or oidc_role_arn"),
            "{text}"
        );
    }
}

fn dynamic(settings: &AliyunSettings, env: &Environment) -> Dynamic {
    match resolve(settings, env).unwrap_or_else(|e| panic!("expected a source: {e}")) {
        Resolved::Dynamic(d) => d,
        Resolved::Fixed(c) => panic!("expected temporary credentials, got {c:?}"),
    }
}

#[test]
fn oidc_environment_comes_after_systemd_and_before_the_profiles() {
    let w = World::new();
    w.default_ini();
    w.default_cli();
    let env = w
        .env()
        .with_var(ENV_ROLE_ARN, "acs:ram::123:role/cdn")
        .with_var(ENV_OIDC_PROVIDER_ARN, "acs:ram::123:oidc-provider/ack")
        .with_var(ENV_OIDC_TOKEN_FILE, "/var/run/token");
    let d = dynamic(&settings(None, None), &env);
    let Dynamic::Oidc {
        role_arn,
        token_file,
        ..
    } = &d
    else {
        panic!("expected OIDC")
    };
    assert_eq!(role_arn, "acs:ram::123:role/cdn");
    assert_eq!(token_file, &PathBuf::from("/var/run/token"));
    assert!(
        d.describe().contains("AssumeRoleWithOIDC"),
        "{}",
        d.describe()
    );
    // Static keys in the environment still win.
    let keys = env_keys(env.clone());
    assert_eq!(
        ok(&settings(None, None), &keys).source_kind(),
        Source::Environment
    );
    // Two of three set is an error naming the missing one.
    let half = w
        .env()
        .with_var(ENV_ROLE_ARN, "acs:ram::123:role/cdn")
        .with_var(ENV_OIDC_TOKEN_FILE, "/t");
    let e = err(&settings(None, None), &half);
    assert_eq!(e.kind(), "incomplete");
    assert!(e.to_string().contains(ENV_OIDC_PROVIDER_ARN), "{e}");
}

#[test]
fn ram_role_arn_profile_is_assume_role_with_its_base_key() {
    let w = World::new();
    w.ini(
        &format!(
            "[default]\ntype = access_key\naccess_key_id = LTAIdefault001\naccess_key_secret = {INI_SECRET}\n\
             [deploy]\ntype = ram_role_arn\naccess_key_id = LTAIbasekey0001\n\
             access_key_secret = {INI_SECRET}\nrole_arn = acs:ram::1:role/deployer\n\
             role_session_name = certrotd-cdn\n"
        ),
        0o600,
    );
    let env = w.env().with_var(ENV_PROFILE, "deploy");
    let d = dynamic(&settings(None, None), &env);
    let Dynamic::AssumeRole {
        base,
        role_arn,
        session_name,
        ..
    } = &d
    else {
        panic!("expected AssumeRole")
    };
    assert_eq!(base.access_key_id(), "LTAIbasekey0001");
    assert_eq!(role_arn, "acs:ram::1:role/deployer");
    assert_eq!(session_name.as_deref(), Some("certrotd-cdn"));
    let shown = d.describe();
    assert!(
        shown.contains("[deploy]") && shown.contains("acs:ram::1:role/deployer"),
        "{shown}"
    );
    assert_no_secret(&shown);
    // Without ALIBABA_CLOUD_PROFILE the default profile is used.
    assert_eq!(
        ok(&settings(None, None), &w.env()).access_key_id(),
        "LTAIdefault001"
    );
}

#[test]
fn ecs_ram_role_is_used_only_when_enabled_and_after_the_profiles() {
    let w = World::new();
    let mut s = settings(None, None);
    assert_eq!(err(&s, &w.env()).kind(), "not-found");
    s.access.role_name = Some("cdn-role".to_string());
    let d = dynamic(&s, &w.env());
    let Dynamic::Instance {
        ecs: Some(plan),
        uri: None,
        ..
    } = &d
    else {
        panic!("expected the ECS RAM role")
    };
    assert_eq!(plan.endpoint, crate::config::DEFAULT_METADATA_ENDPOINT);
    assert_eq!(plan.role_name.as_deref(), Some("cdn-role"));
    // With a credentials URI too: both, the metadata service first.
    let env = w
        .env()
        .with_var(ENV_CREDENTIALS_URI, "http://127.0.0.1:9/creds?token=x");
    let d = dynamic(&s, &env);
    assert!(matches!(
        &d,
        Dynamic::Instance {
            ecs: Some(_),
            uri: Some(_),
            ..
        }
    ));
    let shown = d.describe();
    assert!(
        shown.contains("else credentials URI http://127.0.0.1:9/creds"),
        "{shown}"
    );
    assert!(
        !shown.contains("token=x"),
        "the query is not shown: {shown}"
    );
    // A profile comes first.
    w.default_ini();
    assert_eq!(ok(&s, &w.env()).source_kind(), Source::CredentialsFile);
    // An ecs_ram_role profile takes its role name, the endpoint from the settings.
    w.ini("[default]\ntype = ecs_ram_role\nrole_name = web\n", 0o600);
    s.access.metadata_endpoint = Some("http://127.0.0.1:1".to_string());
    let Dynamic::Instance {
        ecs: Some(plan), ..
    } = dynamic(&s, &w.env())
    else {
        panic!("expected the ECS RAM role")
    };
    assert_eq!(plan.endpoint, "http://127.0.0.1:1");
    assert_eq!(plan.role_name.as_deref(), Some("web"));
}

#[tokio::test]
async fn provider_of_fixed_credentials_hands_them_out_unchanged() {
    let w = World::new();
    let p = provider(&settings(None, None), &env_keys(w.env())).unwrap();
    assert_eq!(p.source_kind(), Source::Environment);
    let c = p.get().await.unwrap();
    assert_eq!(c.secret().expose(), ENV_SECRET);
    assert_no_secret(&format!("{p:?}"));
}

#[test]
fn cli_profiles_are_typed_including_the_modes_not_used_yet() {
    let json = serde_json::json!({
        "current": "ak",
        "profiles": [
            {"name": "ak", "mode": "AK", "access_key_id": "A", "access_key_secret": "S",
             "ram_role_arn": 7, "expired_time": 0},
            {"name": "sts", "mode": "StsToken", "access_key_id": "B", "access_key_secret": "S",
             "sts_token": "T"},
            {"name": "ecs", "mode": "EcsRamRole", "ram_role_name": "web"},
            {"name": "arn", "mode": "RamRoleArn", "access_key_id": "C", "access_key_secret": "S",
             "ram_role_arn": "acs:ram::1:role/r", "ram_session_name": "s"},
            {"name": "oidc", "mode": "OIDC", "ram_role_arn": "acs:ram::1:role/o",
             "oidc_provider_arn": "acs:ram::1:oidc-provider/p", "oidc_token_file": "/t"},
            {"name": "uri", "mode": "CredentialsURI", "credentials_uri": "http://127.0.0.1:1/c"},
            {"name": "sso", "mode": "CloudSSO"},
        ]
    })
    .to_string();
    let typed =
        |name: Option<&str>| profile::cli_profile(&json, name).unwrap_or_else(|e| panic!("{e}"));
    let (name, ak) = typed(None);
    assert_eq!(name, "ak", "the file's current profile");
    assert!(matches!(ak, CliProfile::Ak { access_key_id, .. } if access_key_id == "A"));
    assert!(matches!(
        typed(Some("sts")).1,
        CliProfile::StsToken { sts_token, .. } if sts_token.expose() == "T"
    ));
    assert!(matches!(
        typed(Some("ecs")).1,
        CliProfile::EcsRamRole { ram_role_name: Some(r) } if r == "web"
    ));
    assert!(matches!(
        typed(Some("arn")).1,
        CliProfile::RamRoleArn { ram_role_arn: Some(a), ram_session_name: Some(s), .. }
            if a == "acs:ram::1:role/r" && s == "s"
    ));
    assert!(matches!(
        typed(Some("oidc")).1,
        CliProfile::Oidc { ram_role_arn: Some(_), oidc_provider_arn: Some(_), oidc_token_file: Some(t) }
            if t == "/t"
    ));
    assert!(matches!(
        typed(Some("uri")).1,
        CliProfile::CredentialsUri { credentials_uri: Some(u) } if u == "http://127.0.0.1:1/c"
    ));
    assert_eq!(typed(Some("sso")).1.mode(), "CloudSSO");
    for (name, mode) in [
        ("ecs", "EcsRamRole"),
        ("arn", "RamRoleArn"),
        ("oidc", "OIDC"),
        ("uri", "CredentialsURI"),
    ] {
        assert_eq!(typed(Some(name)).1.mode(), mode);
    }
}

#[test]
fn a_fifo_as_a_credential_file_is_refused_without_blocking() {
    use std::os::unix::ffi::OsStrExt as _;
    let w = World::new();
    fs::create_dir_all(w.ini_path().parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(w.ini_path().as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = err(&settings(None, None), &w.env());
    assert_eq!(e.kind(), "bad-file");
    assert!(e.to_string().contains("a FIFO (named pipe)"), "{e}");
}

#[test]
fn a_non_utf8_secret_file_is_refused() {
    let w = World::new();
    let path = w.dir.path().join("latin1");
    fs::write(&path, b"caf\xe9").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let e = err(&settings(Some("LTAIa"), Some(&path)), &w.env());
    assert_eq!(e.kind(), "bad-file");
    assert!(e.to_string().contains("not UTF-8"), "{e}");
}
