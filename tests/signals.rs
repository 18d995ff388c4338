//! A program that uses signals itself (its own SIGPROF and SIGALRM
//! handlers, nanosleep, blocking reads) behaves exactly as without
//! lineprof, while lineprof samples its CPU.

mod common;
use common::*;
use std::process::Command;

#[test]
fn host_signals_behave_as_without_lineprof() {
    let exe = fixture("signals");
    let plain = Command::new(&exe).env("LINEPROF", "off").output().unwrap();
    let p = profile("signals", &[]);
    assert!(plain.status.success());
    assert_eq!(stdout(&p.output), stdout(&plain));
    let expected = "own SIGPROF handler ran: true\n\
                    slept the full time: true\n\
                    alarms: 1\n\
                    pipe read: hello\n\
                    read from /dev/zero: 67108864 bytes, all zero: true\n";
    assert_eq!(stdout(&plain), expected);
    // And lineprof did sample it: the CPU burnt in `burn` is there.
    let r = p.report();
    assert!(r.json["totals"]["cpu_samples"].as_u64().unwrap() > 0);
    // The 64 MiB buffer is exact.
    assert_eq!(
        r.self_at("let mut big = vec![1u8; 64 << 20];")
            .allocated_bytes,
        64 << 20
    );
}
