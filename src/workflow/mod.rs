//! The commands around the report: the run store and what is built on it.
//!
//! - [`store`]: `.lineprof/` runs, each a self-contained JSON report with
//!   its git metadata ([`git`]);
//! - [`run`] and [`cargo`]: `lineprof run` and `cargo lineprof`, which run a
//!   program, resolve its profile and store it;
//! - [`show`]: `lineprof report`, which loads a run or a profile and renders
//!   it;
//! - [`history`], [`diff`], [`check`]: reading the store over time, line by
//!   line, and as a CI gate ([`settings`]: whether two runs were measured
//!   alike, which `check` needs before it compares them).

pub mod cargo;
pub mod check;
pub mod diff;
pub mod git;
pub mod history;
pub mod run;
pub mod settings;
pub mod show;
pub mod store;
