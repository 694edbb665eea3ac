//! `certrotd completions SHELL` and `certrotd man --dir DIR`: shell completions and man pages
//! generated from the command line's own clap definition, so they never drift from it.
//!
//! Owns: nothing but the rendering. The clap `Command` comes from `main.rs` (the only place
//! the command line is defined). Completions go to stdout; man pages are written as
//! `certrotd.1` plus one `certrotd-<subcommand>.1` per subcommand into an existing folder.
//! The Debian package (`.ci/build-deb`) and the README's install steps use both.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap_complete::Shell;

use super::{CmdResult, Exit};

/// What can go wrong writing the generated files.
#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("cannot write the man pages to {dir}: {cause}; give an existing folder you can write")]
    Man { dir: PathBuf, cause: io::Error },
    #[error("cannot write the completions to stdout: {0}")]
    Stdout(io::Error),
}

impl DocsError {
    /// Short label for logs and metrics.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "kept for the label set; the error reaches main.rs via anyhow"
        )
    )]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            DocsError::Man { .. } => "docs-man",
            DocsError::Stdout(_) => "docs-stdout",
        }
    }
}

/// Arguments of `certrotd completions`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// The shell to write completions for
    #[arg(value_enum)]
    pub(crate) shell: Shell,
}

/// Arguments of `certrotd man`.
#[derive(clap::Args, Debug, Clone)]
pub struct ManArgs {
    /// Existing folder to write certrotd.1 and certrotd-<command>.1 into
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: PathBuf,
}

/// Writes the completion script for `args.shell` to stdout.
pub fn completions(mut command: clap::Command, args: &CompletionsArgs) -> CmdResult {
    let mut out = Vec::new();
    let name = command.get_name().to_owned();
    clap_complete::generate(args.shell, &mut command, name, &mut out);
    io::stdout()
        .lock()
        .write_all(&out)
        .map_err(DocsError::Stdout)?;
    Ok(Exit::Ok)
}

/// Writes the man pages into `args.dir` and names each file written on stdout.
pub fn man(command: clap::Command, args: &ManArgs) -> CmdResult {
    let written = write_man_pages(command, &args.dir)?;
    let mut stdout = io::stdout().lock();
    for path in written {
        writeln!(stdout, "{}", path.display()).map_err(DocsError::Stdout)?;
    }
    Ok(Exit::Ok)
}

/// Renders the top page and one page per visible subcommand; returns the paths written.
pub(crate) fn write_man_pages(
    command: clap::Command,
    dir: &Path,
) -> Result<Vec<PathBuf>, DocsError> {
    let fail = |cause| DocsError::Man {
        dir: dir.to_owned(),
        cause,
    };
    if !dir.is_dir() {
        return Err(fail(io::Error::new(
            io::ErrorKind::NotFound,
            "not an existing folder",
        )));
    }
    let mut command = command;
    command.build();
    let mut written = Vec::new();
    let top = dir.join(format!("{}.1", command.get_name()));
    render(&command, &top).map_err(fail)?;
    written.push(top);
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("{}-{}", command.get_name(), sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .bin_name(name.replace("-", " "));
        let path = dir.join(format!("{name}.1"));
        render(&page, &path).map_err(fail)?;
        written.push(path);
    }
    Ok(written)
}

fn render(command: &clap::Command, path: &Path) -> io::Result<()> {
    let mut bytes = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut bytes)?;
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> clap::Command {
        clap::Command::new("certrotd")
            .about("keeps certificates in step")
            .subcommand(clap::Command::new("sync").about("one pass"))
            .subcommand(clap::Command::new("secret").hide(true))
    }

    #[test]
    fn one_page_per_visible_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_man_pages(sample(), dir.path()).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["certrotd.1", "certrotd-sync.1"]);
        let sync = std::fs::read_to_string(&written[1]).unwrap();
        assert!(sync.starts_with(".ie"), "roff: {sync}");
        assert!(sync.contains("certrotd\\-sync"), "{sync}");
        assert!(sync.contains("one pass"), "{sync}");
    }

    #[test]
    fn a_missing_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = write_man_pages(sample(), &missing).unwrap_err();
        assert_eq!(err.kind(), "docs-man");
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(!missing.exists());
    }
}
