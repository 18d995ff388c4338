//! A program that closes every descriptor and opens its own files on the
//! numbers it frees (as daemons do) never gets profile bytes in its files,
//! and its profile is still complete.

mod common;
use common::*;

#[test]
fn closing_all_descriptors_neither_corrupts_host_files_nor_loses_the_profile() {
    let dir = TempDir::new("close-fds");
    let own = dir.path().join("own.txt");
    let p = profile("close_fds", &[own.to_str().unwrap()]);
    assert_eq!(std::fs::read(&own).unwrap(), b"the program's own data\n");
    assert_eq!(stdout(&p.output), "the program's own data\n");
    let r = p.report();
    assert_eq!(
        r.self_at("1000 x 100 bytes before"),
        allocs(1000, 100_000).frees(0, 0).peak(100_000)
    );
    assert_eq!(
        r.self_at("300,000 x 64 bytes after").allocated_bytes,
        300_000 * 64
    );
    assert_eq!(r.json["warnings"], serde_json::json!([]));
}
