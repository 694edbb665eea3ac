//! `certrotd check`: validates the configuration and every lineage, with no network.
//!
//! Prints a table of lineages (path, layout, key type, names, not-after, VALID/INVALID),
//! then which lineage will serve each managed domain, then warnings (renewal overdue,
//! lineages covering no managed domain). Exit 0 when the configuration is good, every
//! lineage valid and every managed domain covered; 1 otherwise; 78 for a bad configuration.
//! The report is built by a pure function of (settings, lineages, `now`) for testing.
//! Everything in it that comes from outside (paths, lineage ids, certificate names, error
//! texts) has its control and bidi characters escaped: one table row is one line.
//!
//! `--online` adds one read-only look at the account (`online`): exit 1 also when a managed
//! domain does not exist in its product or the account cannot be read.

use std::io::Write;
use std::path::Path;

use time::OffsetDateTime;

use super::text::{NotCovered, days_left, short_names, table, ymd};
use super::{CmdResult, Exit};
use crate::aliyun::credentials::{self, Environment};
use crate::cert::{self, Candidate, CoverIndex, DomainSet, Match};
use crate::config::{self, Diagnostic, Product, Settings};
use crate::fsio;
use crate::source::{Lineage, Scanner};
use crate::untrusted;

mod online;

/// `check`'s flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CheckArgs {
    /// Print JSON (lineages, domains, credentials, warnings, exit code) instead of text
    #[arg(long)]
    pub(crate) json: bool,
    /// Also look at the account (read-only): obtain the credentials the chain names (an STS
    /// exchange, the instance metadata service, a credentials URI); each managed domain
    /// exists in its product, is online, has HTTPS on or off; unmanaged domains a local
    /// certificate covers (text only: not with --json)
    #[arg(long, conflicts_with = "json")]
    pub(crate) online: bool,
}

/// Runs `check` on the configuration file at `config`.
pub fn run(config: &Path, args: &CheckArgs) -> CmdResult {
    let loaded = match config::load(config) {
        Ok(loaded) => loaded,
        Err(e) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "certrotd: {e}");
            return Ok(Exit::Config);
        }
    };
    let env = Environment::from_process();
    let mut credentials = credentials::resolve(&loaded.settings.aliyun, &env)
        .map(|r| r.describe())
        .map_err(|e| e.to_string());
    if args.online
        && let Ok(source) = &credentials
    {
        credentials = try_online(&loaded.settings.aliyun, &env)
            .map(|got| format!("{source}\n  online: {got}"));
    }
    let lineages = Scanner::new().scan(&loaded.settings.watch.paths);
    let chain_names = chain_names(&lineages);
    let now = OffsetDateTime::now_utc();
    let inputs = Inputs {
        settings: &loaded.settings,
        config_warnings: &loaded.warnings,
        credentials: credentials.as_deref().map_err(String::as_str),
        lineages: &lineages,
        chain_names: &chain_names,
    };
    let (mut text, mut exit) = report(&inputs, now);
    if args.online {
        let (more, ok) = online::run(&loaded.settings, &lineages, now);
        text.push_str(&more);
        if !ok {
            exit = Exit::Problems;
        }
    }
    if args.json {
        let mut json = serde_json::to_string_pretty(&json_report(&inputs, now, exit))?;
        json.push('\n');
        text = json;
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(exit)
}

/// `--online`: obtains the credentials (one exchange for temporary ones); what was obtained
/// (the masked AccessKey ID and, for temporary ones, when they expire) or why not.
fn try_online(
    settings: &crate::config::AliyunSettings,
    env: &Environment,
) -> Result<String, String> {
    let provider = credentials::provider(settings, env).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let creds = runtime
        .block_on(provider.get())
        .map_err(|e| format!("online: {e}"))?;
    Ok(format!(
        "obtained AccessKey {}{}",
        credentials::mask_id(creds.access_key_id()),
        if creds.security_token().is_some() {
            " with a security token"
        } else {
            ""
        }
    ))
}

/// What the report is made of (all gathered before; no I/O in [`report`]).
pub(crate) struct Inputs<'a> {
    pub(crate) settings: &'a Settings,
    pub(crate) config_warnings: &'a [Diagnostic],
    /// Where the AccessKey will come from, or why none is usable (never the secret).
    pub(crate) credentials: Result<&'a str, &'a str>,
    pub(crate) lineages: &'a [Lineage],
    /// For invalid lineages whose chain alone parses (e.g. the key is unreadable): the
    /// leaf's names, by lineage id.
    pub(crate) chain_names: &'a std::collections::HashMap<String, Vec<String>>,
}

/// The leaf names of each invalid lineage whose chain file alone is readable and parses.
fn chain_names(lineages: &[Lineage]) -> std::collections::HashMap<String, Vec<String>> {
    lineages
        .iter()
        .filter(|l| l.result.is_err())
        .filter_map(|l| {
            let bytes = fsio::read(&l.chain_path, crate::source::MAX_FILE_BYTES).ok()?;
            Some((l.id.clone(), cert::leaf_names(&bytes)?))
        })
        .collect()
}

/// The whole report and the exit code, from the inputs alone. Credentials problems are
/// warnings: `check` judges the configuration and the certificates.
pub(crate) fn report(inputs: &Inputs<'_>, now: OffsetDateTime) -> (String, Exit) {
    let Inputs {
        settings,
        config_warnings,
        lineages,
        ..
    } = *inputs;
    let mut out = format!(
        "Configuration {}: OK ({} watch path{}, {} managed domain{})\n",
        untrusted::escape(&settings.path.display().to_string()),
        settings.watch.paths.len(),
        plural(settings.watch.paths.len()),
        settings.managed().len(),
        plural(settings.managed().len()),
    );
    // Our own multi-line texts keep their line breaks; each line is escaped.
    let mut warnings: Vec<String> = config_warnings
        .iter()
        .map(|w| escape_lines(&w.to_string()))
        .collect();
    match inputs.credentials {
        Ok(source) => out.push_str(&format!("Credentials: {}\n", escape_lines(source))),
        Err(problem) => {
            out.push_str("Credentials: none usable (see the warning below)\n");
            warnings.push(format!("credentials: {}", escape_lines(problem)));
        }
    }

    out.push_str(&format!(
        "Signature: {}\n",
        match settings.aliyun.signature {
            crate::config::Signature::V1 =>
                "v1 (HMAC-SHA1; [aliyun] signature = \"v3\" for ACS3-HMAC-SHA256)",
            crate::config::Signature::V3 => "v3 (ACS3-HMAC-SHA256)",
        }
    ));

    // A watch path that does not exist is not a lineage: listed on its own.
    let (missing, lineages): (Vec<&Lineage>, Vec<&Lineage>) = lineages
        .iter()
        .partition(|l| matches!(&l.result, Err(e) if e.kind() == "watch-path-missing"));
    let lineages: Vec<Lineage> = lineages.into_iter().cloned().collect();
    let lineages = lineages.as_slice();
    if !missing.is_empty() {
        out.push_str(&format!("\nMissing watch paths ({}):\n", missing.len()));
        for l in &missing {
            if let Err(e) = &l.result {
                out.push_str(&format!("  {}\n", untrusted::escape(&e.to_string())));
            }
        }
    }
    let (table, invalid) = lineage_table(lineages, inputs.chain_names, now);
    out.push_str(&format!("\nLineages ({}):\n", lineages.len()));
    if lineages.is_empty() {
        let paths: Vec<String> = settings
            .watch
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let paths = paths.join(", ");
        out.push_str(&format!(
            "  none found under {}\n",
            untrusted::escape(&paths)
        ));
    } else {
        out.push_str(&table);
    }

    let managed = settings.managed();
    let (table, uncovered) = domain_table(&managed, lineages, now);
    if !managed.is_empty() {
        out.push_str(&format!("\nManaged domains ({}):\n", managed.len()));
        out.push_str(&table);
    }

    warnings.extend(
        lineage_warnings(&settings.all_domains(), lineages, now)
            .iter()
            .map(|w| untrusted::escape(w).into_owned()),
    );
    if !warnings.is_empty() {
        out.push('\n');
        for w in &warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
    }

    out.push('\n');
    let exit = if invalid == 0 && uncovered == 0 && missing.is_empty() {
        out.push_str(&format!(
            "OK: {} valid lineage{}, every managed domain covered.\n",
            lineages.len(),
            plural(lineages.len())
        ));
        Exit::Ok
    } else {
        let missing = match missing.len() {
            0 => String::new(),
            n => format!(", {n} missing watch path{}", plural(n)),
        };
        out.push_str(&format!(
            "PROBLEMS: {invalid} invalid lineage{}, {uncovered} managed domain{} without a \
             valid certificate{missing}.\n",
            plural(invalid),
            plural(uncovered)
        ));
        Exit::Problems
    };
    (out, exit)
}

/// `check --json`: the same findings as the text report, as data.
#[derive(serde::Serialize)]
pub(crate) struct JsonCheck {
    config: String,
    /// Where credentials come from (`ok`), or why none is usable (one line).
    credentials: Result<String, String>,
    missing_watch_paths: Vec<String>,
    lineages: Vec<JsonLineage>,
    domains: Vec<JsonDomain>,
    exit_code: u8,
}

#[derive(serde::Serialize)]
struct JsonLineage {
    lineage: String,
    layout: String,
    names: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    not_after: Option<OffsetDateTime>,
    valid: bool,
    /// Why not, when not valid.
    problem: Option<String>,
}

#[derive(serde::Serialize)]
struct JsonDomain {
    domain: String,
    /// `cdn` or `dcdn`.
    product: &'static str,
    /// The lineage that will serve it, if one covers it.
    served_by: Option<String>,
    /// Why none does.
    problem: Option<String>,
}

/// The lineages whose certificate is valid at `now`, with it.
fn valid_at(lineages: &[Lineage], now: OffsetDateTime) -> Vec<(&Lineage, &cert::Certificate)> {
    lineages
        .iter()
        .filter_map(|l| l.valid_at(now).ok().map(|c| (l, c.as_ref())))
        .collect()
}

/// What the best-lineage rule sees of `valid`, in its order (a pick indexes `valid`).
fn candidates<'a>(valid: &[(&'a Lineage, &'a cert::Certificate)]) -> Vec<Candidate<'a>> {
    valid
        .iter()
        .map(|(l, c)| Candidate {
            id: &l.id,
            names: &c.names,
            not_after: c.not_after,
        })
        .collect()
}

pub(crate) fn json_report(inputs: &Inputs<'_>, now: OffsetDateTime, exit: Exit) -> JsonCheck {
    let missing = |l: &&Lineage| matches!(&l.result, Err(e) if e.kind() == "watch-path-missing");
    let lineages = inputs.lineages;
    let valid = valid_at(lineages, now);
    let candidates = candidates(&valid);
    // The same choice as the text report's "SERVED BY".
    let cover = CoverIndex::new(&candidates);
    let why = std::cell::OnceCell::new();
    let domains = inputs
        .settings
        .managed()
        .into_iter()
        .map(|(d, product)| {
            let served = cover
                .best(&d)
                .and_then(|(i, _)| valid.get(i))
                .map(|(l, _)| l);
            JsonDomain {
                problem: served
                    .is_none()
                    .then(|| why.get_or_init(|| NotCovered::new(lineages)).why(&d)),
                domain: d,
                product: product.label(),
                served_by: served.map(|l| l.id.clone()),
            }
        })
        .collect();
    JsonCheck {
        config: inputs.settings.path.display().to_string(),
        credentials: inputs
            .credentials
            .map(str::to_string)
            .map_err(untrusted::one_line),
        missing_watch_paths: lineages
            .iter()
            .filter(missing)
            .map(|l| l.id.clone())
            .collect(),
        lineages: lineages
            .iter()
            .filter(|l| !missing(l))
            .map(|l| {
                let cert = l.result.as_ref().ok();
                let problem = l.valid_at(now).err().map(|e| e.to_string());
                JsonLineage {
                    lineage: l.id.clone(),
                    layout: l.layout.to_string(),
                    names: cert.map(|c| c.names.clone()).unwrap_or_default(),
                    not_after: cert.map(|c| c.not_after),
                    valid: problem.is_none(),
                    problem,
                }
            })
            .collect(),
        domains,
        exit_code: exit.code(),
    }
}

/// `text` with each line escaped ([`untrusted::escape`]), its line breaks kept.
fn escape_lines(text: &str) -> String {
    text.split('\n')
        .map(untrusted::escape)
        .collect::<Vec<_>>()
        .join("\n")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The lineage table and the number of invalid lineages.
fn lineage_table(
    lineages: &[Lineage],
    chain_names: &std::collections::HashMap<String, Vec<String>>,
    now: OffsetDateTime,
) -> (String, usize) {
    let mut rows = Vec::new();
    let mut invalid = 0;
    for l in lineages {
        let (key, names, not_after) = match &l.result {
            Ok(cert) => (
                cert.key_type.to_string(),
                short_names(&cert.names),
                ymd(cert.not_after),
            ),
            Err(_) => (
                "-".into(),
                chain_names
                    .get(&l.id)
                    .map_or_else(|| "-".into(), |n| short_names(n)),
                "-".into(),
            ),
        };
        let status = match l.valid_at(now) {
            Ok(cert) => format!("VALID: {}", days_left(cert.not_after, now)),
            Err(e) => {
                invalid += 1;
                format!("INVALID: {e}")
            }
        };
        rows.push(vec![
            l.id.clone(),
            l.layout.to_string(),
            key,
            names,
            not_after,
            status,
        ]);
    }
    let header = ["LINEAGE", "LAYOUT", "KEY", "NAMES", "NOT AFTER", "STATUS"];
    (table(&header, &rows), invalid)
}

/// Which lineage serves each domain, and the number of uncovered domains.
fn domain_table(
    domains: &[(String, Product)],
    lineages: &[Lineage],
    now: OffsetDateTime,
) -> (String, usize) {
    let valid = valid_at(lineages, now);
    let candidates = candidates(&valid);
    let cover = CoverIndex::new(&candidates);
    // Built at the first uncovered domain (usually never).
    let not_covered = std::cell::OnceCell::new();
    let mut rows = Vec::new();
    let mut uncovered = 0;
    for (domain, product) in domains {
        let best = cover
            .best(domain)
            .and_then(|(i, how)| valid.get(i).map(|v| (v, how)));
        let served = match best {
            Some(((l, c), how)) => {
                let how = match how {
                    Match::Exact => "exact name",
                    Match::Wildcard => "wildcard",
                };
                format!("{} ({how}, {})", l.id, days_left(c.not_after, now))
            }
            None => {
                uncovered += 1;
                not_covered
                    .get_or_init(|| NotCovered::new(lineages))
                    .why(domain)
            }
        };
        rows.push(vec![domain.clone(), product.label().to_string(), served]);
    }
    (table(&["DOMAIN", "PRODUCT", "SERVED BY"], &rows), uncovered)
}

/// Renewal overdue, and valid lineages that cover no managed domain.
fn lineage_warnings(domains: &[String], lineages: &[Lineage], now: OffsetDateTime) -> Vec<String> {
    let managed = DomainSet::new(domains.iter().map(String::as_str));
    let mut out = Vec::new();
    for l in lineages {
        let Ok(cert) = l.valid_at(now) else { continue };
        if cert::renewal_overdue(cert, now) {
            out.push(format!(
                "{}: less than 1/3 of its lifetime left (expires {}, {}); the ACME client \
                 renews at that point, so a renewal has probably failed: check its log \
                 (e.g. `certbot renew`)",
                l.id,
                ymd(cert.not_after),
                days_left(cert.not_after, now)
            ));
        }
        let useful = managed.any_covered_by(&cert.names);
        if !domains.is_empty() && !useful {
            out.push(format!(
                "{}: its names ({}) cover no managed domain; add the domain to [cdn] domains, \
                 or move the lineage out of the watch path",
                l.id,
                short_names(&cert.names)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
