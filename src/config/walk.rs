//! The hand-written walk over toml's spanned tree: one function per section, typed getters
//! that record a located problem instead of stopping, and the schema's defaults.
//!
//! Pure: the files the configuration names were read before ([`named_files`] says which,
//! [`super::files::gather`] reads them); the walk only looks their bytes and facts up.

use std::collections::BTreeMap;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

mod access;
mod cas;
mod ops;

use super::files::{Files, Named};
use super::{
    AliyunSettings, Api, CdnSettings, Diagnostic, Settings, Signature, StateSettings,
    WatchSettings, dcdn, domain, endpoint,
};

type Span = Range<usize>;

/// Collects problems and warnings while walking one file.
pub(super) struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    base: &'a Path,
    files: &'a Files,
    problems: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(file: &'a Path, text: &'a str, base: &'a Path, files: &'a Files) -> Ctx<'a> {
        Ctx {
            file,
            text,
            base,
            files,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(super) fn finish(self) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
        (self.problems, self.warnings)
    }

    fn diagnostic(&self, span: &Span, key: Option<&str>, message: String) -> Diagnostic {
        let (line, col) = line_col(self.text, span.start);
        Diagnostic {
            file: self.file.to_path_buf(),
            line,
            col,
            key: key.map(str::to_string),
            message,
        }
    }

    pub(super) fn problem(&mut self, span: &Span, key: &str, message: String) {
        let d = self.diagnostic(span, Some(key), message);
        self.problems.push(d);
    }

    pub(super) fn warn(&mut self, span: &Span, key: &str, message: String) {
        let d = self.diagnostic(span, Some(key), message);
        self.warnings.push(d);
    }

    /// A problem located in another file (the domains file).
    pub(super) fn problem_in(
        &mut self,
        file: &Path,
        line: usize,
        col: usize,
        key: &str,
        message: String,
    ) {
        self.problems.push(Diagnostic {
            file: file.to_path_buf(),
            line,
            col,
            key: Some(key.to_string()),
            message,
        });
    }

    /// Resolves a configured path against the configuration file's folder.
    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        self.base.join(path)
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// One `[section]` of the file (absent sections read as empty).
pub(super) struct Section<'t, 'i> {
    name: &'static str,
    table: Option<&'t DeTable<'i>>,
}

const ROOT_KEYS: &[&str] = &[
    "aliyun", "watch", "state", "cdn", "dcdn", "cas", "metrics", "notify",
];
const ALIYUN_KEYS: &[&str] = &[
    "endpoint",
    "region",
    "access_key_id",
    "access_key_secret_file",
    "requests_per_second",
    "read_requests_per_second",
    "max_domains_per_call",
    "api",
    "per_domain_requests_per_second",
    "max_attempts",
    "timeout_secs",
    "verify",
    "signature",
    "store",
    // access::KEYS
    "ca_file",
    "sts_endpoint",
    "metadata_endpoint",
    "role_name",
    "imds_v1",
];
const WATCH_KEYS: &[&str] = &["paths", "debounce_ms", "rescan_secs"];
const STATE_KEYS: &[&str] = &["dir"];
const CDN_KEYS: &[&str] = &["domains", "domains_file"];

/// The files `text` names, resolved against `base`, as the walk will look them up (a
/// string value at the key; anything else is the walk's problem, and names no file).
pub(super) fn named_files(text: &str, base: &Path) -> Named {
    let (root, _) = DeTable::parse_recoverable(text);
    let string = |section: &str, key: &str| match root.get_ref().get(section)?.get_ref() {
        DeValue::Table(t) => match t.get(key)?.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    };
    let domains = ["cdn", "dcdn"]
        .into_iter()
        .filter_map(|section| string(section, "domains_file").map(|p| base.join(p)));
    let ca_file = string("aliyun", "ca_file").map(|p| base.join(p));
    // An empty secret path is a problem of its own, and names no file.
    let secret = string("aliyun", "access_key_secret_file")
        .filter(|p| !p.is_empty())
        .map(|p| base.join(p));
    Named {
        read: domains.chain(ca_file).collect(),
        inspect: secret.into_iter().collect(),
    }
}

/// Walks the whole document; `None` when a problem was recorded.
pub(super) fn settings(ctx: &mut Ctx<'_>) -> Option<Settings> {
    let (root, errors) = DeTable::parse_recoverable(ctx.text);
    for err in &errors {
        let span = err.span().unwrap_or(0..0);
        let message = format!(
            "TOML syntax error: {}; fix the syntax",
            err.message().trim_end()
        );
        let d = ctx.diagnostic(&span, None, message);
        ctx.problems.push(d);
    }
    let syntax_lines: Vec<usize> = ctx.problems.iter().map(|p| p.line).collect();
    let settings = walk_root(ctx, root.get_ref());
    // A value recovered from a syntax error is a guess: keep only the syntax error.
    let (syntax, semantic): (Vec<_>, Vec<_>) = std::mem::take(&mut ctx.problems)
        .into_iter()
        .partition(|p| p.key.is_none());
    ctx.problems = syntax;
    let file = ctx.file;
    let guessed = |p: &Diagnostic| p.file == file && syntax_lines.contains(&p.line);
    ctx.problems
        .extend(semantic.into_iter().filter(|p| !guessed(p)));
    settings
}

fn walk_root(ctx: &mut Ctx<'_>, root: &DeTable<'_>) -> Option<Settings> {
    unknown_keys(ctx, root, None, ROOT_KEYS);
    let sections = [
        section(ctx, root, "aliyun", ALIYUN_KEYS),
        section(ctx, root, "watch", WATCH_KEYS),
        section(ctx, root, "state", STATE_KEYS),
        section(ctx, root, "cdn", CDN_KEYS),
        section(ctx, root, "dcdn", dcdn::KEYS),
        section(ctx, root, "cas", cas::CAS_KEYS),
        section(ctx, root, "metrics", ops::METRICS_KEYS),
        section(ctx, root, "notify", ops::NOTIFY_KEYS),
    ];
    let [
        s_aliyun,
        s_watch,
        s_state,
        s_cdn,
        s_dcdn,
        s_cas,
        s_metrics,
        s_notify,
    ] = &sections;
    let aliyun = aliyun(ctx, s_aliyun);
    let watch = watch(ctx, s_watch);
    let state = state(ctx, s_state);
    let cdn = managed(ctx, s_cdn);
    let dcdn = dcdn::dcdn(ctx, s_dcdn, cdn.as_ref());
    let cdn = cdn.map(|m| CdnSettings {
        domains: m.domains.into_keys().collect(),
        domains_file: m.domains_file,
    });
    let cas = cas::cas(ctx, s_aliyun, s_cas);
    let metrics = ops::metrics(ctx, s_metrics);
    let notify = ops::notify(ctx, s_notify);
    Some(Settings {
        path: ctx.file.to_path_buf(),
        aliyun: aliyun?,
        watch: watch?,
        state: state?,
        cdn: cdn?,
        dcdn: dcdn?,
        cas: cas?,
        metrics: metrics?,
        notify: notify?,
    })
}

fn section<'t, 'i>(
    ctx: &mut Ctx<'_>,
    root: &'t DeTable<'i>,
    name: &'static str,
    keys: &[&str],
) -> Section<'t, 'i> {
    let table = match root.get(name) {
        None => None,
        Some(value) => match value.get_ref() {
            DeValue::Table(table) => {
                unknown_keys(ctx, table, Some(name), keys);
                Some(table)
            }
            other => {
                let message = format!(
                    "`{name}` must be a table (a `[{name}]` section), found {}",
                    other.type_str()
                );
                ctx.problem(&value.span(), name, message);
                None
            }
        },
    };
    Section { name, table }
}

fn unknown_keys(ctx: &mut Ctx<'_>, table: &DeTable<'_>, section: Option<&str>, known: &[&str]) {
    for (key, _) in table.iter() {
        let name = key.get_ref().as_ref();
        if known.contains(&name) {
            continue;
        }
        let dotted = dotted(section, name);
        let hint = match closest(name, known) {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("remove it; known keys here: {}", known.join(", ")),
        };
        let where_ = match section {
            Some(s) => format!("in [{s}]"),
            None => "at the top level".to_string(),
        };
        ctx.problem(
            &key.span(),
            &dotted,
            format!("unknown key `{dotted}` {where_}; {hint}"),
        );
    }
}

fn dotted(section: Option<&str>, key: &str) -> String {
    match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    }
}

/// The known key nearest to a misspelt one (edit distance at most 2).
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(usize::MAX - 1);
            let left = row.get(j).copied().unwrap_or(usize::MAX - 1);
            let value = (diag + usize::from(ca != *cb)).min(above + 1).min(left + 1);
            diag = above;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = value;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

impl<'t, 'i> Section<'t, 'i> {
    pub(super) fn value(&self, key: &str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.table.and_then(|t| t.get(key))
    }

    fn key(&self, key: &str) -> String {
        dotted(Some(self.name), key)
    }

    fn wrong_type(&self, ctx: &mut Ctx<'_>, key: &str, value: &Spanned<DeValue<'_>>, want: &str) {
        let dotted = self.key(key);
        let message = format!(
            "`{dotted}` must be {want}, found {}",
            value.get_ref().type_str()
        );
        ctx.problem(&value.span(), &dotted, message);
    }

    pub(super) fn string(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<Spanned<String>> {
        let value = self.value(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(Spanned::new(value.span(), s.to_string())),
            _ => {
                self.wrong_type(ctx, key, value, "a string");
                None
            }
        }
    }

    fn boolean(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<bool> {
        let value = self.value(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(ctx, key, value, "true or false");
                None
            }
        }
    }

    /// An integer within `range`; `Err(())` when present but wrong (problem recorded).
    fn integer(
        &self,
        ctx: &mut Ctx<'_>,
        key: &str,
        range: RangeInclusive<i64>,
        unit: &str,
    ) -> Result<Option<i64>, ()> {
        let Some(value) = self.value(key) else {
            return Ok(None);
        };
        let DeValue::Integer(int) = value.get_ref() else {
            self.wrong_type(ctx, key, value, "an integer");
            return Err(());
        };
        let parsed = i64::from_str_radix(int.as_str(), int.radix())
            .ok()
            .filter(|n| range.contains(n));
        match parsed {
            Some(n) => Ok(Some(n)),
            None => {
                let dotted = self.key(key);
                let message = format!(
                    "`{dotted}` = {int} is out of range; use {} to {}{unit}",
                    range.start(),
                    range.end()
                );
                ctx.problem(&value.span(), &dotted, message);
                Err(())
            }
        }
    }

    pub(super) fn strings(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<Vec<Spanned<String>>> {
        let value = self.value(key)?;
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(ctx, key, value, "an array of strings");
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Spanned::new(item.span(), s.to_string())),
                other => {
                    let dotted = self.key(key);
                    let message = format!(
                        "`{dotted}[{i}]` must be a string, found {}",
                        other.type_str()
                    );
                    ctx.problem(&item.span(), &dotted, message);
                }
            }
        }
        Some(out)
    }
}

/// `Some(value or default)` unless the value was present and wrong.
fn int_or<T: TryFrom<i64>>(r: Result<Option<i64>, ()>, default: T) -> Option<T> {
    match r {
        Ok(None) => Some(default),
        Ok(Some(n)) => T::try_from(n).ok(),
        Err(()) => None,
    }
}

fn aliyun(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<AliyunSettings> {
    let endpoint = match s.string(ctx, "endpoint") {
        None if s.value("endpoint").is_some() => None,
        None => Some(endpoint::DEFAULT.to_string()),
        Some(raw) => match endpoint::check(raw.get_ref()) {
            Ok(e) => Some(e),
            Err(why) => {
                let message = format!("`aliyun.endpoint` = {:?}: {why}", raw.get_ref());
                ctx.problem(&raw.span(), "aliyun.endpoint", message);
                None
            }
        },
    };
    let region = region(ctx, s);
    let access_key_id = access_key_id(ctx, s);
    let secret_file = secret_file(ctx, s);
    let rps = s.integer(ctx, "requests_per_second", 1..=100, " calls per second");
    if let Ok(Some(n)) = rps
        && n > 10
        && let Some(v) = s.value("requests_per_second")
    {
        let message = format!(
            "`aliyun.requests_per_second` = {n} is above Alibaba's documented quota of 10 \
             write calls per second; expect Throttling errors and retries unless your \
             account has a higher quota"
        );
        ctx.warn(&v.span(), "aliyun.requests_per_second", message);
    }
    let read_rps = s.integer(
        ctx,
        "read_requests_per_second",
        1..=100,
        " calls per second",
    );
    let per_call = s.integer(ctx, "max_domains_per_call", 1..=50, " domains");
    let api = api(ctx, s);
    let per_domain_rps = per_domain_rate(ctx, s);
    let attempts = s.integer(ctx, "max_attempts", 1..=100, " attempts");
    let timeout = s.integer(ctx, "timeout_secs", 1..=3600, " seconds");
    let verify = match s.value("verify") {
        None => Some(true),
        Some(_) => s.boolean(ctx, "verify"),
    };
    let signature = signature(ctx, s);
    let access = access::access(ctx, s);
    let d = AliyunSettings::defaults(endpoint::DEFAULT);
    Some(AliyunSettings {
        endpoint: endpoint?,
        region: region?,
        access_key_id: access_key_id?,
        access_key_secret_file: secret_file?,
        requests_per_second: int_or(rps, d.requests_per_second)?,
        read_requests_per_second: int_or(read_rps, d.read_requests_per_second)?,
        max_domains_per_call: int_or(per_call, d.max_domains_per_call)?,
        api: api?,
        per_domain_requests_per_second: int_or(per_domain_rps, d.per_domain_requests_per_second)?,
        max_attempts: int_or(attempts, d.max_attempts)?,
        timeout: Duration::from_secs(int_or(timeout, d.timeout.as_secs())?),
        verify: verify?,
        signature: signature?,
        access: access?,
    })
}

/// `aliyun.signature`: `"v1"` (default) or `"v3"`.
fn signature(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<Signature> {
    let options = [("v1", Signature::V1), ("v3", Signature::V3)];
    let explain = "is not a signature version; use \"v1\" (HMAC-SHA1, the default) or \"v3\" \
                   (ACS3-HMAC-SHA256)";
    choice(ctx, s, "signature", Signature::default(), &options, explain)
}

/// `api`: `"batch"` (the default) or `"per-domain"`.
fn api(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<Api> {
    let options = [("batch", Api::Batch), ("per-domain", Api::PerDomain)];
    let explain = "is not a known API; use \"batch\" (BatchSetCdnDomainServerCertificate) or \
                   \"per-domain\" (SetCdnDomainSSLCertificate)";
    choice(ctx, s, "api", Api::Batch, &options, explain)
}

/// An `[aliyun]` string setting with a fixed set of values: `default` when absent, `None`
/// (and a located problem: `` `aliyun.KEY` = "x" `` + `explain`) for another value or type.
fn choice<T: Copy>(
    ctx: &mut Ctx<'_>,
    s: &Section<'_, '_>,
    key: &str,
    default: T,
    options: &[(&str, T)],
    explain: &str,
) -> Option<T> {
    match s.string(ctx, key) {
        None if s.value(key).is_some() => None,
        None => Some(default),
        Some(raw) => {
            let found = options
                .iter()
                .find(|(name, _)| *name == raw.get_ref().as_str());
            if found.is_none() {
                let message = format!("`aliyun.{key}` = {:?} {explain}", raw.get_ref());
                ctx.problem(&raw.span(), &format!("aliyun.{key}"), message);
            }
            found.map(|(_, v)| *v)
        }
    }
}

/// `per_domain_requests_per_second`: 1..=100, with a warning above Alibaba's quota of 30.
fn per_domain_rate(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Result<Option<i64>, ()> {
    let key = "per_domain_requests_per_second";
    let rate = s.integer(ctx, key, 1..=100, " calls per second");
    if let Ok(Some(n)) = rate
        && n > 30
        && let Some(v) = s.value(key)
    {
        let message = format!(
            "`aliyun.{key}` = {n} is above Alibaba's documented quota of 30 \
             SetCdnDomainSSLCertificate calls per second; expect Throttling errors and \
             retries unless your account has a higher quota"
        );
        ctx.warn(&v.span(), "aliyun.per_domain_requests_per_second", message);
    }
    rate
}

fn region(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<Option<String>> {
    match s.string(ctx, "region") {
        None if s.value("region").is_some() => None,
        None => Some(Some("cn-hangzhou".to_string())),
        Some(r) if r.get_ref().is_empty() => Some(None),
        Some(r) => {
            let ok = r
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if ok {
                Some(Some(r.into_inner()))
            } else {
                let message = format!(
                    "`aliyun.region` = {:?} is not a region id; use lowercase letters, digits \
                     and `-` (e.g. \"cn-hangzhou\"), or \"\" to send no Region",
                    r.get_ref()
                );
                ctx.problem(&r.span(), "aliyun.region", message);
                None
            }
        }
    }
}

fn access_key_id(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<Option<String>> {
    match s.string(ctx, "access_key_id") {
        None if s.value("access_key_id").is_some() => None,
        None => Some(None),
        Some(id) => {
            let text = id.get_ref();
            if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric()) {
                Some(Some(id.into_inner()))
            } else {
                let message = "`aliyun.access_key_id` must be an AccessKey ID (letters and \
                               digits, e.g. \"LTAI...\"); remove the key to use the credential \
                               chain instead"
                    .to_string();
                ctx.problem(&id.span(), "aliyun.access_key_id", message);
                None
            }
        }
    }
}

fn secret_file(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<Option<PathBuf>> {
    const KEY: &str = "aliyun.access_key_secret_file";
    match s.string(ctx, "access_key_secret_file") {
        None if s.value("access_key_secret_file").is_some() => None,
        None => Some(None),
        Some(raw) if raw.get_ref().is_empty() => {
            let message = format!("`{KEY}` is empty; name the file or remove the key");
            ctx.problem(&raw.span(), KEY, message);
            None
        }
        Some(raw) => {
            let path = ctx.resolve(raw.get_ref());
            match secret_file_problem(ctx.files, &path) {
                None => Some(Some(path)),
                Some(why) => {
                    let message = format!("`{KEY}` = {}: {why}", path.display());
                    ctx.problem(&raw.span(), KEY, message);
                    None
                }
            }
        }
    }
}

/// Why the AccessKey secret file cannot be used (its facts only; never its content).
fn secret_file_problem(files: &Files, path: &Path) -> Option<String> {
    match files.facts(path) {
        None => Some(NOT_GATHERED.to_string()),
        Some(Err(e)) => Some(format!(
            "cannot be inspected ({e}); create it with the AccessKey secret on one line, \
             mode 0600"
        )),
        Some(Ok(facts)) if !facts.regular => {
            Some("is not a regular file; name the file holding the AccessKey secret".into())
        }
        Some(Ok(facts)) if facts.mode & 0o077 != 0 => Some(format!(
            "is readable or writable by group or others (mode {:04o}); run `chmod 600 {}`",
            facts.mode,
            path.display()
        )),
        Some(Ok(_)) => None,
    }
}

/// A named file that the I/O step did not gather (a caller of the pure validation that
/// left it out).
const NOT_GATHERED: &str = "was not read before validation; load the configuration with \
                            `config::load` (which reads every file it names)";

fn duration_ms(r: Result<Option<i64>, ()>, default: u64) -> Option<Duration> {
    int_or(r, default).map(Duration::from_millis)
}

fn watch(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<WatchSettings> {
    let paths = match s.strings(ctx, "paths") {
        None if s.value("paths").is_some() => None,
        None => Some(vec![PathBuf::from("/etc/letsencrypt/live")]),
        Some(list) => watch_paths(ctx, s, list),
    };
    let debounce = s.integer(ctx, "debounce_ms", 1..=3_600_000, " milliseconds");
    let rescan = s.integer(ctx, "rescan_secs", 1..=604_800, " seconds");
    Some(WatchSettings {
        paths: paths?,
        debounce: duration_ms(debounce, 2000)?,
        rescan: Duration::from_secs(int_or(rescan, 3600)?),
    })
}

fn watch_paths(
    ctx: &mut Ctx<'_>,
    s: &Section<'_, '_>,
    list: Vec<Spanned<String>>,
) -> Option<Vec<PathBuf>> {
    if list.is_empty() {
        if let Some(v) = s.value("paths") {
            let message = "`watch.paths` is empty; list at least one folder of certificates \
                           (e.g. \"/etc/letsencrypt/live\")"
                .to_string();
            ctx.problem(&v.span(), "watch.paths", message);
        }
        return None;
    }
    let mut out: Vec<PathBuf> = Vec::new();
    let mut ok = true;
    for p in list {
        if p.get_ref().is_empty() {
            let message = "`watch.paths` has an empty path; remove it".to_string();
            ctx.problem(&p.span(), "watch.paths", message);
            ok = false;
            continue;
        }
        let path = ctx.resolve(p.get_ref());
        if !out.contains(&path) {
            out.push(path);
        }
    }
    ok.then_some(out)
}

fn state(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<StateSettings> {
    match s.string(ctx, "dir") {
        None if s.value("dir").is_some() => None,
        None => Some(StateSettings {
            dir: PathBuf::from("/var/lib/certrotd"),
        }),
        Some(d) if d.get_ref().is_empty() => {
            let message = "`state.dir` is empty; name a folder certrotd may write".to_string();
            ctx.problem(&d.span(), "state.dir", message);
            None
        }
        Some(d) => Some(StateSettings {
            dir: ctx.resolve(d.get_ref()),
        }),
    }
}

/// Where a managed domain was listed: a span of the configuration file, or a line and
/// column of a `domains_file`.
#[derive(Clone, Debug)]
pub(super) enum Listed {
    Inline(Span),
    File(PathBuf, usize, usize),
}

/// A product section's managed domains (`domains` and `domains_file`), each with where it
/// was first listed.
pub(super) struct Managed {
    pub(super) domains: BTreeMap<String, Listed>,
    pub(super) domains_file: Option<PathBuf>,
}

impl Ctx<'_> {
    /// A problem at where `listed` says.
    pub(super) fn problem_at(&mut self, listed: &Listed, key: &str, message: String) {
        match listed {
            Listed::Inline(span) => self.problem(span, key, message),
            Listed::File(path, line, col) => self.problem_in(path, *line, *col, key, message),
        }
    }
}

/// `domains` and `domains_file` of the section `s` (`[cdn]` or `[dcdn]`): lowercased,
/// deduplicated; a warning when the section manages none (only for `[cdn]`, which every
/// configuration has; an absent `[dcdn]` manages nothing and says nothing).
pub(super) fn managed(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<Managed> {
    let name = s.name;
    let mut domains = BTreeMap::new();
    let mut ok = true;
    if let Some(list) = s.strings(ctx, "domains") {
        for d in list {
            match domain::normalize_domain(d.get_ref()) {
                Ok(n) => {
                    domains.entry(n).or_insert(Listed::Inline(d.span()));
                }
                Err(why) => {
                    let message = format!("`{name}.domains` entry {:?}: {why}", d.get_ref());
                    ctx.problem(&d.span(), &format!("{name}.domains"), message);
                    ok = false;
                }
            }
        }
    } else if s.value("domains").is_some() {
        ok = false;
    }
    let domains_file = match s.string(ctx, "domains_file") {
        None => {
            ok &= s.value("domains_file").is_none();
            None
        }
        Some(raw) => {
            let path = ctx.resolve(raw.get_ref());
            ok &= domains_file(ctx, name, &raw.span(), &path, &mut domains);
            Some(path)
        }
    };
    if ok && domains.is_empty() && name == "cdn" {
        let span = s.value("domains").map_or(0..0, |v| v.span());
        let message = "no managed CDN domains: list them in `cdn.domains` or \
                       `cdn.domains_file`; certrotd will only check certificates"
            .to_string();
        ctx.warn(&span, "cdn.domains", message);
    }
    ok.then_some(Managed {
        domains,
        domains_file,
    })
}

/// Adds the domains of `path` (one per line, `#` comments); `false` on any problem.
fn domains_file(
    ctx: &mut Ctx<'_>,
    section: &str,
    span: &Span,
    path: &Path,
    domains: &mut BTreeMap<String, Listed>,
) -> bool {
    let key = format!("{section}.domains_file");
    let key = key.as_str();
    let Some(read) = ctx.files.contents(path) else {
        let message = format!("`{key}` = {}: {NOT_GATHERED}", path.display());
        ctx.problem(span, key, message);
        return false;
    };
    let text = match read.as_ref().map(|bytes| std::str::from_utf8(bytes)) {
        Ok(Ok(text)) => text,
        Ok(Err(_)) => {
            let message = format!(
                "`{key}` = {}: not UTF-8 text; save it as UTF-8",
                path.display()
            );
            ctx.problem(span, key, message);
            return false;
        }
        Err(e) => {
            let message = format!(
                "`{key}` = {}: cannot read it ({}); create it (one domain per line, `#` \
                 comments) or remove the key",
                path.display(),
                e.reason()
            );
            ctx.problem(span, key, message);
            return false;
        }
    };
    let mut ok = true;
    for (i, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("");
        let entry = content.trim();
        if entry.is_empty() {
            continue;
        }
        match domain::normalize_domain(entry) {
            Ok(name) => {
                let col = content.len() - content.trim_start().len() + 1;
                domains
                    .entry(name)
                    .or_insert_with(|| Listed::File(path.to_path_buf(), i + 1, col));
            }
            Err(why) => {
                let col = content.len() - content.trim_start().len() + 1;
                let message = format!("domain {entry:?}: {why}");
                ctx.problem_in(path, i + 1, col, key, message);
                ok = false;
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        let offset = text
            .find('=')
            .map(|_| text.rfind('=').unwrap_or(0))
            .unwrap_or(0);
        assert_eq!(line_col(text, offset), (2, 4));
        assert_eq!(line_col(text, 10_000), (3, 1));
    }

    #[test]
    fn closest_suggests_near_misses_only() {
        assert_eq!(closest("endpiont", ALIYUN_KEYS), Some("endpoint"));
        assert_eq!(closest("verifyy", ALIYUN_KEYS), Some("verify"));
        assert_eq!(closest("colour", ALIYUN_KEYS), None);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
