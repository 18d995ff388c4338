//! Hostile files for the reader (issue 11): paths that name devices. Every
//! refusal exits 2 with a message naming the file, and never hangs.
mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, run_profiled, stderr, TempDir};

/// `lineprof report <path>`, killed (and failed) after 60 s.
fn report_bounded(path: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lineprof"))
        .args(["report", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("lineprof report {} hangs", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn assert_refused(o: &Output, named: &Path) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(named.to_str().unwrap()), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn an_executable_path_naming_a_device_is_refused() {
    for device in ["/dev/zero", "/dev/urandom"] {
        let dir = TempDir::new("devexe");
        let exe = dir.path().join("app");
        std::fs::copy(fixture("plain"), &exe).unwrap();
        let profile = dir.path().join("app.lprof");
        assert!(run_profiled(&exe, &[], &profile).status.success());
        // The recorded executable now reads as the device.
        std::fs::remove_file(&exe).unwrap();
        std::os::unix::fs::symlink(device, &exe).unwrap();
        assert_refused(&report_bounded(&profile), &exe);
    }
}

#[test]
fn a_profile_path_naming_a_device_is_refused() {
    let p = Path::new("/dev/zero");
    assert_refused(&report_bounded(p), p);
}
