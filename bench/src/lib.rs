//! Shared by the benchmark binaries: the global allocator chosen by cargo
//! feature (`tracking`, `dhat`, or neither for System).

pub mod sampler;

/// `iters` allocations and frees of a 64-byte box, each freed at once: the
/// event pair the micro and deep-stack benchmarks time, from one real
/// frame (not inlined) below their callers.
#[inline(never)]
pub fn box_pairs(iters: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..iters {
        let b = std::hint::black_box(Box::new([i; 8])); // 64 bytes, freed at once
        acc = acc.wrapping_add(b[3]);
    }
    acc
}

#[cfg(all(feature = "tracking", feature = "dhat"))]
compile_error!("enable at most one of the `tracking` and `dhat` features");

#[cfg(feature = "tracking")]
#[global_allocator]
static ALLOC: lineprof::Tracking = lineprof::Tracking::new();

#[cfg(feature = "dhat")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Which allocator this build uses, for the runner's sanity check.
pub const VARIANT: &str = if cfg!(feature = "tracking") {
    "tracking"
} else if cfg!(feature = "dhat") {
    "dhat"
} else {
    "system"
};

/// Starts dhat's profiler in dhat builds (it must live until main returns);
/// nothing otherwise. dhat writes `dhat-heap.json` in the working directory.
pub fn start_profiler() -> impl Drop {
    struct Guard(#[allow(dead_code)] Option<Box<dyn std::any::Any>>);
    impl Drop for Guard {
        fn drop(&mut self) {}
    }
    #[cfg(feature = "dhat")]
    {
        Guard(Some(Box::new(dhat::Profiler::new_heap())))
    }
    #[cfg(not(feature = "dhat"))]
    {
        Guard(None)
    }
}
