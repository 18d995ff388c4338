//! The shim builds with the lowest libc it declares, and with 0.2.158 (what
//! users' lock files pin, e.g. ripgrep 14.1.1's): a copy of the crate is
//! checked with `cargo update -p libc --precise`. Skips, saying why, where
//! the registry cannot be reached.
use std::path::Path;
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn builds_with_the_declared_libc_floor_and_0_2_158() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    let floor = manifest
        .lines()
        .find_map(|l| l.strip_prefix("libc = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("libc = \"0.2.N\" in alloc-shim/Cargo.toml");
    assert!(
        floor.matches('.').count() == 2,
        "declare a full version: {floor}"
    );
    let work = std::env::temp_dir().join(format!("lineprof-libc-floor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    copy_dir(&crate_dir.join("src"), &work.join("src"));
    // Alone, not as a member of the repository's workspace.
    std::fs::write(
        work.join("Cargo.toml"),
        format!("{manifest}\n[workspace]\n"),
    )
    .unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = crate_dir.join("../target/libc-floor");
    for version in [floor, "0.2.158"] {
        let pin = Command::new(&cargo)
            .args(["update", "--quiet", "-p", "libc", "--precise", version])
            .current_dir(&work)
            .output()
            .unwrap();
        if !pin.status.success() {
            eprintln!(
                "skipped: cannot pin libc {version} (registry unreachable?): {}",
                String::from_utf8_lossy(&pin.stderr)
            );
            let _ = std::fs::remove_dir_all(&work);
            return;
        }
        let check = Command::new(&cargo)
            .args(["check", "--quiet", "--lib", "--target-dir"])
            .arg(&target)
            .current_dir(&work)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "the shim does not build with libc {version}:\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}
