//! The one error type of the CLI. Every variant renders as a single line that
//! names the file, says what is wrong with it and how to fix it; `main` prints
//! it after `error: ` and exits with code 2 (usage or input error).

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum Error {
    /// A file named on the command line (or recorded in a profile) is absent.
    MissingFile { path: PathBuf },
    /// Reading or writing a file failed for another reason.
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    /// The file is empty or not a lineprof profile.
    NotAProfile { path: PathBuf, detail: String },
    /// A chunk in the middle of the profile is damaged.
    Corrupt { path: PathBuf, detail: String },
    /// The profile was written by a newer lineprof.
    NewerVersion { path: PathBuf, version: u32 },
    /// Two processes wrote into one profile: (offset, pid) of each `Meta`.
    MixedWriters {
        path: PathBuf,
        first: (u64, String),
        other: (u64, String),
    },
    /// No profile could be found for the request.
    NoProfile { detail: String },
    /// The executable recorded in the profile is gone.
    BinaryMissing { binary: PathBuf, profile: PathBuf },
    /// The executable was rebuilt after the profile was written.
    BuildIdMismatch {
        binary: PathBuf,
        now: String,
        recorded: String,
    },
    /// The executable has no DWARF line tables.
    NoDebugInfo { binary: PathBuf },
    /// The executable could not be parsed as an object file.
    BadBinary { binary: PathBuf, detail: String },
    /// A command-line value is invalid (bad regex, ...).
    Usage { detail: String },
    /// A stored run was written by a newer lineprof.
    NewerStore {
        path: PathBuf,
        schema: u64,
        /// The newest schema this lineprof reads.
        supported: u32,
    },
    /// A stored run cannot be parsed.
    BadStoredRun { path: PathBuf, detail: String },
    /// A run argument names no stored run; `detail` says what was tried.
    UnknownRun { detail: String },
    /// The profiled program could not be started.
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// The program ran but wrote no profile.
    NoProfileWritten { program: String },
}

impl Error {
    pub fn io(path: &Path, action: &'static str, source: std::io::Error) -> Error {
        if source.kind() == std::io::ErrorKind::NotFound {
            return Error::MissingFile {
                path: path.to_path_buf(),
            };
        }
        Error::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }

    /// The process exit code for this error: always 2 (usage or input error);
    /// exit code 1 is reserved for `check` failures.
    pub fn exit_code(&self) -> i32 {
        2
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MissingFile { path } => write!(
                f,
                "{}: no such file; check the path (profiles are written as lineprof-<pid>.lprof in the program's working directory)",
                path.display()
            ),
            Error::Io {
                path,
                action,
                source,
            } => write!(f, "{}: cannot {action}: {source}", path.display()),
            Error::NotAProfile { path, detail } => write!(
                f,
                "{}: {detail}; pass a .lprof file written by a program using lineprof::Tracking",
                path.display()
            ),
            Error::Corrupt { path, detail } => write!(
                f,
                "{}: {detail}; the profile is damaged, re-run the program to get a new one",
                path.display()
            ),
            Error::MixedWriters { path, first, other } => write!(
                f,
                "{}: two processes wrote into this profile (the metadata at byte {} is pid {}'s, the one at byte {} pid {}'s), so its figures belong to neither; give each process its own LINEPROF_OUT and run again (this lineprof writes a second writer's profile to the path with .<pid> appended)",
                path.display(),
                first.0,
                first.1,
                other.0,
                other.1
            ),
            Error::NewerVersion { path, version } => write!(
                f,
                "{}: profile format version {version} is newer than this lineprof understands (version {}); upgrade the lineprof CLI",
                path.display(),
                lineprof::format::VERSION
            ),
            Error::NoProfile { detail } => write!(f, "{detail}"),
            Error::BinaryMissing { binary, profile } => write!(
                f,
                "{}: the executable that wrote profile {} is gone; rebuild it at that path and re-run the program to get a new profile",
                binary.display(),
                profile.display()
            ),
            Error::BuildIdMismatch {
                binary,
                now,
                recorded,
            } => write!(
                f,
                "`{}` was rebuilt after the profile was written (build-id {now}, profile has {recorded}); re-run the program to get a new profile",
                binary.display()
            ),
            Error::NoDebugInfo { binary } => write!(
                f,
                "{}: no DWARF line tables, so lines cannot be resolved; add `[profile.release] debug = \"line-tables-only\"` to Cargo.toml (and do not strip the binary), rebuild and re-run",
                binary.display()
            ),
            Error::BadBinary { binary, detail } => write!(
                f,
                "{}: cannot read the executable: {detail}; rebuild it and re-run the program",
                binary.display()
            ),
            Error::Usage { detail } => write!(f, "{detail}"),
            Error::NewerStore {
                path,
                schema,
                supported,
            } => write!(
                f,
                "{}: stored run has schema {schema}, newer than this lineprof understands (schema {supported}); upgrade the lineprof CLI",
                path.display(),
            ),
            Error::BadStoredRun { path, detail } => write!(
                f,
                "{}: not a readable stored run ({detail}); delete the file or re-run the program",
                path.display()
            ),
            Error::UnknownRun { detail } => write!(f, "{detail}"),
            Error::Spawn { program, source } => write!(
                f,
                "{program}: cannot start the program: {source}; check the command (after `--`) and that the file exists and is executable"
            ),
            Error::NoProfileWritten { program } => write!(
                f,
                "{program}: no profile was written: add `#[global_allocator] static A: lineprof::Tracking = lineprof::Tracking::new();` to the program (and make sure LINEPROF=off is not set)"
            ),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
