//! lineprof's analysis library: everything the `lineprof` and
//! `cargo-lineprof` binaries do, for tools of your own.
//!
//! A profiled program (built with `lineprof::Tracking` as its global
//! allocator) writes a `.lprof` file of raw addresses. This crate reads it,
//! resolves the addresses through the executable's debug info, and turns it
//! into a [`Report`]: per-line and per-stack figures (bytes allocated,
//! freed, live at the heap peak and at exit, allocations, CPU time). The
//! same [`Report`] comes out of a run stored in `.lineprof/`.
//!
//! ```no_run
//! use lineprof_cli::{open_profile, LineKind, SortKey};
//!
//! let mut report = open_profile("lineprof-1234.lprof".as_ref())?;
//! lineprof_cli::analyze::lines::sort_lines(&mut report.lines, SortKey::Allocated);
//! for line in report.lines.iter().filter(|l| l.kind == LineKind::User).take(5) {
//!     println!(
//!         "{}:{} {}: {} bytes in {} allocations",
//!         line.file, line.line, line.function,
//!         line.self_figures.allocated_bytes, line.self_figures.allocations,
//!     );
//! }
//! # Ok::<(), lineprof_cli::Error>(())
//! ```
//!
//! The modules follow the data:
//! - [`analyze`]: read, symbolize, replay, aggregate (the pipeline);
//! - [`render`]: a [`Report`] as text, JSON, HTML, pprof, folded stacks, DHAT;
//! - [`workflow`]: the run store and the commands built on it (run, report,
//!   history, diff, check, `cargo lineprof`);
//! - [`error`] and [`output`]: the one error type (every message names the
//!   file, the problem and the fix) and atomic file output.
//!
//! Stages only import from stages before them in that list.

pub mod analyze;
pub mod error;
pub mod output;
pub mod render;
pub mod workflow;

use std::path::Path;

pub use analyze::lines::{Figures, LineFigures, LineKind, SortKey};
pub use analyze::report::{Report, Totals};
pub use error::{Error, Result};
pub use workflow::store::Store;

/// Reads, symbolizes and aggregates the profile at `path` (the executable
/// it names must still exist and match its build-id).
pub fn open_profile(path: &Path) -> Result<Report> {
    analyze::report::report_from_profile(path)
}

/// Loads a stored run of the store at `store_dir` (a `.lineprof`
/// directory) by id, name or git ref, as `lineprof report RUN` does; the
/// newest run when `run` is `None`.
pub fn open_run(store_dir: &Path, run: Option<&str>) -> Result<Report> {
    let store = Store {
        dir: store_dir.to_path_buf(),
    };
    let runs = store.list()?;
    let cwd = store_dir.parent().unwrap_or(Path::new("."));
    let summary = match run {
        Some(r) => workflow::store::resolve(&runs, r, None, cwd, &store)?,
        None => workflow::store::latest(&runs, &store)?,
    };
    store.load(summary)
}
