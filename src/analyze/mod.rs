//! The analysis pipeline, one stage a module, data flowing down this list:
//!
//! - [`profile`]: `.lprof` bytes -> [`profile::Profile`] (modules, stacks of
//!   raw addresses, heap events in global order, CPU samples);
//! - [`unwind`]: CPU samples taken in C code get their first frames
//!   unwound from their stack copy with `.eh_frame`; every CPU stack is cut
//!   at its first frame outside the loaded modules;
//! - [`symbolize`]: raw addresses -> logical frames (file, line, function,
//!   inlined frames expanded), using [`classify`] to trim the allocator's
//!   own frames;
//! - [`replay`]: heap events -> figures per stack (allocated, freed, live at
//!   the peak and at exit, CPU), the live blocks kept in [`live_blocks`];
//! - [`lines`] and [`stacks`]: per-stack figures -> per-line figures (self
//!   and total) and per-logical-stack figures;
//! - [`functions`]: per-stack figures -> per-function figures (pstats's
//!   view), call-graph edges, and the `#[lineprof::profile]` line timers
//!   put on lines and functions;
//! - [`per_test`]: for test binaries, the figures under each `#[test]`
//!   function, shared initialisation apart;
//! - [`report`]: runs the stages and holds the result, the [`report::Report`]
//!   every renderer and the run store take.
//!
//! [`fast_events`] is the reader's fast path through events payloads (the
//! format's own decoder takes what it does not).
//!
//! [`classify`] is the one place that decides what a frame is (user code, a
//! dependency, the standard library, C code, lineprof itself) and which
//! frame of a stack a figure is charged to. [`frame_pointers`] checks an
//! executable for the frame pointers the shim's stack walk needs.
//!
//! Stages pass plain data; none imports from a stage below it in this list
//! (`render` and `workflow`, outside this module, come after all of them).

pub mod classify;
pub mod fast_events;
pub mod frame_pointers;
pub mod functions;
pub mod lines;
pub mod live_blocks;
pub mod names;
pub mod per_test;
pub mod profile;
pub mod replay;
pub mod report;
pub mod stacks;
pub mod symbolize;
pub mod symbols;
pub mod unwind;
