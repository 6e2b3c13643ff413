//! Gives the binary the git commit it was built from, for `--version`, as the compile-time
//! variable `VAULT_REDIRECT_GIT_COMMIT`.
//!
//! Where the commit comes from, first that answers: the same variable in the build's
//! environment (scripts/release.sh sets it, with `-dirty` when the tree has changes; a build
//! from a source tarball can set it by hand), then `git rev-parse` in the source tree, then
//! `unknown` (no git, or not a checkout). It never fails the build: a missing commit is a
//! poorer `--version`, not a reason to ship nothing.

use std::path::Path;
use std::process::Command;

const VAR: &str = "VAULT_REDIRECT_GIT_COMMIT";

fn main() {
    println!("cargo:rerun-if-env-changed={VAR}");
    let commit = match std::env::var(VAR) {
        Ok(given) if !given.trim().is_empty() => given.trim().to_string(),
        _ => from_git().unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env={VAR}={commit}");
}

/// The checkout's HEAD, abbreviated, and the files whose change means HEAD moved.
fn from_git() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // Rerun when HEAD moves: HEAD itself (a checkout), the branch it names (a commit), and
    // packed-refs (a branch packed by gc). Only existing files: Cargo reruns a build script
    // on every build when a listed path is missing, and that would rebuild the poller too.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            if Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    Some(commit)
}

/// One line of git's output, or `None` when git is missing or answers with an error.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!line.is_empty()).then_some(line)
}
