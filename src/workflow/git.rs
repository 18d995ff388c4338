//! Git metadata for stored runs, through the `git` command rather than a
//! library: it honours the user's configuration (worktrees, safe.directory,
//! alternates) and costs no dependency. Every function answers `None` when
//! `git` is missing or the directory is not a repository; a run is stored
//! either way.

use std::path::Path;
use std::process::Command;

use crate::analyze::report::GitInfo;

/// Runs `git ARGS` in `dir`; its trimmed stdout if it succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Commit, dirty flag and branch of the repository containing `dir`, or
/// `None` if it is not in one (or has no commit yet).
pub fn info(dir: &Path) -> Option<GitInfo> {
    let commit = git(dir, &["rev-parse", "--verify", "--quiet", "HEAD"])?;
    // Untracked files do not count: the store itself, profiles and build
    // output are untracked, and they do not change what was built.
    let dirty =
        git(dir, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    // `symbolic-ref` fails on a detached HEAD (CI checkouts): no branch.
    let branch = git(dir, &["symbolic-ref", "--short", "--quiet", "HEAD"]);
    Some(GitInfo {
        commit: Some(commit),
        dirty,
        branch,
    })
}

/// The commit `reference` (a branch, tag, `HEAD~2`, a hash) names, or `None`
/// if it names none.
pub fn resolve_ref(dir: &Path, reference: &str) -> Option<String> {
    if reference.starts_with('-') {
        return None; // never let an argument become a git option
    }
    git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{reference}^{{commit}}"),
        ],
    )
}

pub use crate::render::short_commit as short;
