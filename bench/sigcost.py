#!/usr/bin/env python3
"""What one CPU sample costs, split into the platform's part and lineprof's
(issue 8). Runs the benchmark workload alternately, many short rounds,
under the bare sampler of bench/src/sampler.rs (an empty handler on the
same perf event lineprof uses, and variants of it) and under lineprof, and
prints median CPU time (user + system of the child, from wait4) with the
cost per sample above each row's baseline.

    bench/sigcost.py [--rounds 11] [--records 100000] [--hz 1000] [--only 1,4]
                     [--compare OTHER/release/workload]

Needs the `system` and `tracking` builds of bench/run.py (run it once, or
build them the same way). Medians, alternated rounds: the machine is shared.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))


def binary(build):
    if "/" in build:
        return build
    return os.path.join(BENCH, "target", build, "release", "workload")


def variants(hz):
    s = f":{hz}"
    # name, build, env, baseline name (None: a baseline itself)
    return [
        ("System", "system", {}, None),
        ("System + perf event, no signal", "system", {"BENCH_SAMPLER": "count" + s}, "System"),
        ("System + perf signal (lineprof's way)", "system", {"BENCH_SAMPLER": "signal" + s}, "System"),
        ("System + perf signal + REFRESH", "system", {"BENCH_SAMPLER": "refresh" + s}, "System"),
        ("System + ... + 2 KiB stack copy", "system", {"BENCH_SAMPLER": "copy" + s}, "System"),
        ("System + cpu-clock + REFRESH", "system", {"BENCH_SAMPLER": "cpuclock" + s}, "System"),
        ("System + task-clock user only", "system", {"BENCH_SAMPLER": "user" + s}, "System"),
        ("System + CPU timer (tick)", "system", {"BENCH_SAMPLER": "timer" + s}, "System"),
        ("System + wall-clock timer", "system", {"BENCH_SAMPLER": "wall" + s}, "System"),
        ("System + perf sigtrap (no IPI)", "system", {"BENCH_SAMPLER": "sigtrap" + s}, "System"),
        ("lineprof exact", "tracking", {"LINEPROF_HZ": "0"}, None),
        ("lineprof exact + bare perf signal", "tracking",
         {"LINEPROF_HZ": "0", "BENCH_SAMPLER": "signal" + s}, "lineprof exact"),
        ("lineprof exact + bare perf signal + REFRESH", "tracking",
         {"LINEPROF_HZ": "0", "BENCH_SAMPLER": "refresh" + s}, "lineprof exact"),
        ("lineprof exact + bare perf sigtrap", "tracking",
         {"LINEPROF_HZ": "0", "BENCH_SAMPLER": "sigtrap" + s}, "lineprof exact"),
        (f"lineprof exact + cpu {hz} Hz (perf)", "tracking",
         {"LINEPROF_HZ": str(hz)}, "lineprof exact"),
        (f"lineprof exact + cpu {hz} Hz (timer)", "tracking",
         {"LINEPROF_HZ": str(hz), "LINEPROF_CPU": "timer"}, "lineprof exact"),
    ]


def run(argv, env, cwd):
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{err}")
    signals = None
    for line in err.splitlines():
        if line.startswith("bench sampler:"):
            signals = int(line.split()[2])
    return wall, usage.ru_utime, usage.ru_stime, signals


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--records", type=int, default=100000)
    ap.add_argument("--hz", type=int, default=1000)
    ap.add_argument("--compare", metavar="EXE",
                    help="another tracking build of the workload (e.g. main's): adds its "
                         "exact and exact + cpu rows")
    ap.add_argument("--only", default="", help="comma-separated row numbers (1-based) to run")
    args = ap.parse_args()
    vs = variants(args.hz)
    if args.compare:
        exe = os.path.abspath(args.compare)
        vs += [
            ("compare: lineprof exact", exe, {"LINEPROF_HZ": "0"}, "lineprof exact"),
            (f"compare: lineprof exact + cpu {args.hz} Hz", exe, {"LINEPROF_HZ": str(args.hz)},
             "compare: lineprof exact"),
        ]
    if args.only:
        keep = {int(i) - 1 for i in args.only.split(",")}
        vs = [v for i, v in enumerate(vs)
              if i in keep or v[3] is None or v[0].startswith("compare")]
    for b in ("system", "tracking") + ((args.compare,) if args.compare else ()):
        if not os.path.exists(binary(b)):
            sys.exit(f"{binary(b)} missing: run bench/run.py once (it builds it)")
    env0 = {k: v for k, v in os.environ.items()
            if not k.startswith("LINEPROF") and k != "BENCH_SAMPLER"}
    res = {v[0]: [] for v in vs}
    with tempfile.TemporaryDirectory(prefix="lineprof-sigcost-") as tmp:
        for r in range(args.rounds):
            for name, build, env, _ in vs:
                e = dict(env0, LINEPROF_OUT=os.path.join(tmp, "p.lprof"), **env)
                res[name].append(run([binary(build), str(args.records)], e, tmp))
                for f in os.listdir(tmp):
                    os.remove(os.path.join(tmp, f))
    print(f"workload {args.records} records, {args.rounds} alternated rounds, medians; "
          f"CPU = user + system of the child; load at the end: {os.getloadavg()[0]:.2f}")
    hdr = ("variant", "wall", "user", "sys", "CPU", "signals", "CPU above base (paired)", "per sample")
    rows = []
    med = {}
    for name, _, _, base in vs:
        runs = res[name]
        wall = statistics.median(x[0] for x in runs)
        user = statistics.median(x[1] for x in runs)
        sys_ = statistics.median(x[2] for x in runs)
        cpu = statistics.median(x[1] + x[2] for x in runs)
        sig = [x[3] for x in runs if x[3] is not None]
        nsig = statistics.median(sig) if sig else None
        med[name] = cpu
        above = per = ""
        if base is not None:
            # Paired: the difference to the baseline's run of the same
            # round, then the median (drift on a shared machine cancels).
            d = statistics.median(
                (x[1] + x[2]) - (b[1] + b[2]) for x, b in zip(runs, res[base]))
            above = f"{d * 1e3:+.0f} ms ({d / med[base] * 100:+.1f}%)"
            # Samples: the handler's count, else what the rate asks for.
            n = nsig if nsig else cpu * args.hz
            # lineprof's timers fire at the kernel tick, not at --hz.
            per = "" if "(timer)" in name else f"{d / n * 1e6:+.1f} us"
        rows.append((name, f"{wall * 1e3:.0f} ms", f"{user * 1e3:.0f} ms", f"{sys_ * 1e3:.0f} ms",
                     f"{cpu * 1e3:.0f} ms", "" if nsig is None else f"{nsig:.0f}", above, per))
    widths = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    fmt = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                              for i, (c, w) in enumerate(zip(r, widths)))
    print(fmt(hdr))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt(r))


if __name__ == "__main__":
    main()
