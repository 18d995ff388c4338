#!/usr/bin/env python3
"""Self CPU per line: does lineprof agree with perf on a real program as well
as perf agrees with itself? (issue 8, acceptance on held-out programs)

    bench/cpu_agree.py PROJECT [--bin NAME] [--hz 4000] [--runs 2]
                       [--tracked-perf] [--no-build] [--show 10]
                       [-- PROGRAM ARGS]

PROJECT is a cargo package (bench/agree/ has four, BENCHMARKS.md) whose `#[global_allocator] static A:
lineprof::Tracking` is behind a cargo feature named `lineprof` (an
optional path dependency on alloc-shim/), so that the same source builds
twice, with the flags `cargo lineprof run` uses (frame pointers, v0
symbol names, line tables):

- tracked: `--features lineprof`, run with `LINEPROF_HZ` (default 4000)
  and the default CPU backend;
- untracked: the System allocator, run under `perf record -e cpu-clock
  --call-graph dwarf` at the same rate (a fixed period).

perf's samples are charged to lines by lineprof's rule (the innermost frame
outside the standard library, C code and lineprof) by `examples/perf_lines.rs`
(the code of tests/cpu_vs_perf.rs); lineprof's are read from `lineprof report
--format json --focus all`: per line (file, line number), self CPU time as a
share of the program's CPU time (lineprof's own recording cost is in no line
and not in the total: SPEC.md, "Figures per line").

Printed, for lineprof-vs-perf (mean over every pair of runs), perf-vs-perf
and lineprof-vs-lineprof: how many of the top 10 lines are shared, and the
summed share difference (points) over the union of the two top-10 lists; then
lineprof's unattributed and unrecovered fractions and the share of samples
whose stack does not reach a thread's entry (a broken stack). With
`--tracked-perf`, perf also records the tracked build with `LINEPROF=off`
(lineprof passes every call through): where that differs from the untracked
build, the binary itself runs differently (code and heap addresses), which
no attribution can change. The programs
run one after another, never side by side. Every run takes about as long as
the program under perf (dwarf stacks) or lineprof.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
LINEPROF = os.path.join(ROOT, "target", "release", "lineprof")
PERF_LINES = os.path.join(ROOT, "target", "release", "examples", "perf_lines")

# What `cargo lineprof run --release` builds with (src/workflow/cargo.rs).
BUILD_ENV = {
    "RUSTFLAGS": "-C force-frame-pointers=yes -C symbol-mangling-version=v0",
    "CARGO_PROFILE_RELEASE_DEBUG": "limited",
    "CARGO_PROFILE_RELEASE_STRIP": "none",
}

# Outermost frames of a whole stack: the main thread's start (lineprof's
# stacks end at the runtime's entry) and a spawned thread's.
ROOTS = ("std::rt::lang_start_internal", "main", "_start", "__libc_start_main",
         "__libc_start_call_main", "clone3", "clone", "start_thread")


def base_env():
    return {k: v for k, v in os.environ.items()
            if not k.startswith("LINEPROF") and k not in BUILD_ENV}


def package_name(project):
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=project, check=True, capture_output=True, text=True)
    return json.loads(meta.stdout)["packages"][0]["name"]


def build(project, bin_name):
    env = dict(base_env(), **BUILD_ENV)
    exes = {}
    for variant, features in (("tracked", ["--features", "lineprof"]),
                              ("untracked", [])):
        target = os.path.join(project, "target", "cpu-agree", variant)
        cmd = ["cargo", "build", "--release", "--quiet", "--bin", bin_name,
               "--target-dir", target] + features
        print(f"building {variant}: {' '.join(cmd[2:])}", flush=True)
        subprocess.run(cmd, cwd=project, env=env, check=True)
        exes[variant] = os.path.join(target, "release", bin_name)
    return exes


def build_tools():
    print("building lineprof and examples/perf_lines (cargo build --release)",
          flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin",
                    "lineprof", "--example", "perf_lines"], cwd=ROOT,
                   check=True)


def perf_run(exe, args, project, hz, tmp, n, env=None):
    data = os.path.join(tmp, f"perf{n}.data")
    cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-c",
           str(1_000_000_000 // hz), "--call-graph", "dwarf", "-o", data,
           "--", exe] + args
    subprocess.run(cmd, cwd=project, env=dict(base_env(), **(env or {})),
                   check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run([PERF_LINES, exe, project, data], check=True,
                         capture_output=True, text=True)
    os.remove(data)
    got = json.loads(out.stdout)
    total = got["samples"]
    shares = {(l["file"], l["line"]): l["samples"] / total
              for l in got["lines"]}
    names = {(l["file"], l["line"]): l["function"] for l in got["lines"]}
    return {"shares": shares, "names": names, "samples": total,
            "unattributed": got["unattributed"] / total}


def lineprof_run(exe, args, project, hz, tmp, n):
    profile = os.path.join(tmp, f"lineprof{n}.lprof")
    env = dict(base_env(), LINEPROF_HZ=str(hz), LINEPROF_OUT=profile)
    subprocess.run([exe] + args, cwd=project, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    out = subprocess.run([LINEPROF, "report", profile, "--format", "json",
                          "--focus", "all"], cwd=project, check=True,
                         capture_output=True, text=True)
    report = json.loads(out.stdout)
    collapsed = subprocess.run([LINEPROF, "report", profile, "--format",
                                "collapsed", "--sort", "cpu"], cwd=project,
                               check=True, capture_output=True,
                               text=True).stdout
    os.remove(profile)
    t = report["totals"]
    total = t["cpu_time_ns"]
    shares, names = {}, {}
    for l in report["lines"]:
        ns = l["self"]["cpu_time_ns"]
        if ns:
            key = (l["file"], l["line"])
            shares[key] = shares.get(key, 0) + ns / total
            names.setdefault(key, l["function"])
    broken, roots, stacked = 0, {}, 0
    for row in collapsed.splitlines():
        stack, _, count = row.rpartition(" ")
        if not count.isdigit():
            continue
        stacked += int(count)
        outer = stack.split(";")[0].split(" (")[0]
        if not any(outer == r or outer.startswith(r + " ") for r in ROOTS) \
                and not outer.endswith("thread_start"):
            broken += int(count)
            roots[outer] = roots.get(outer, 0) + int(count)
    samples = t["cpu_samples"]
    return {"shares": shares, "names": names, "samples": samples,
            "unattributed": t["unattributed_cpu_time_ns"] / max(total, 1),
            "unrecovered": t.get("unrecovered_cpu_samples", 0) / max(samples, 1),
            "broken": broken / max(stacked, 1), "broken_roots": roots,
            "profiler": t["profiler_cpu_time_ns"]
            / max(total + t["profiler_cpu_time_ns"], 1),
            "warnings": report.get("warnings", []) + report.get("notes", [])}


def top(shares, n=10):
    return [k for k, _ in sorted(shares.items(),
                                 key=lambda kv: (-kv[1], kv[0]))[:n]]


def compare(a, b):
    """(top-10 lines in common, summed share difference over their union)"""
    ta, tb = top(a), top(b)
    union = set(ta) | set(tb)
    diff = sum(abs(a.get(k, 0) - b.get(k, 0)) for k in union) * 100
    return len(set(ta) & set(tb)), diff


def mean_pairs(xs, ys, same=False):
    pairs = [compare(x["shares"], y["shares"])
             for i, x in enumerate(xs) for j, y in enumerate(ys)
             if not same or i < j]
    return (statistics.mean(p[0] for p in pairs),
            statistics.mean(p[1] for p in pairs))


def short(key):
    file, line = key
    if "/registry/src/" in file:
        file = file.split("/registry/src/", 1)[1].split("/", 1)[1]
    elif file.startswith("/"):
        file = "…/" + "/".join(file.split("/")[-3:])
    return f"{file}:{line}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("project")
    p.add_argument("--bin")
    p.add_argument("--hz", type=int, default=4000)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--show", type=int, default=10)
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--tracked-perf", action="store_true",
                   help="also run perf on the tracked build with LINEPROF=off "
                   "(pass-through): what the tracked binary itself changes")
    p.add_argument("args", nargs="*")
    o = p.parse_args()
    project = os.path.abspath(o.project)
    bin_name = o.bin or package_name(project)
    if o.no_build:
        exes = {v: os.path.join(project, "target", "cpu-agree", v, "release",
                                bin_name) for v in ("tracked", "untracked")}
    else:
        build_tools()
        exes = build(project, bin_name)
    perf, ours, off = [], [], []
    with tempfile.TemporaryDirectory(prefix="cpu-agree-") as tmp:
        # Alternated, so that a change in the machine's load hits both.
        for n in range(o.runs):
            perf.append(perf_run(exes["untracked"], o.args, project, o.hz, tmp, n))
            ours.append(lineprof_run(exes["tracked"], o.args, project, o.hz, tmp, n))
            if o.tracked_perf:
                off.append(perf_run(exes["tracked"], o.args, project, o.hz, tmp,
                                    n, env={"LINEPROF": "off"}))
    lp = mean_pairs(ours, perf)
    pp = mean_pairs(perf, perf, same=True)
    ll = mean_pairs(ours, ours, same=True)
    extra = []
    if off:
        extra = [("lineprof vs perf (tracked, LINEPROF=off)", mean_pairs(ours, off)),
                 ("perf (tracked, off) vs perf", mean_pairs(off, perf))]
    print(f"\n{bin_name} {' '.join(o.args)}: {o.hz} Hz, {o.runs} runs each; "
          f"samples: perf {[r['samples'] for r in perf]}, "
          f"lineprof {[r['samples'] for r in ours]}")
    print(f"{'':24}top-10 shared  summed difference")
    for label, (shared, diff) in [("lineprof vs perf", lp), ("perf vs perf", pp),
                                  ("lineprof vs lineprof", ll)] + extra:
        print(f"  {label:22}{shared:6.1f}/10  {diff:8.1f} points")
    m = statistics.mean
    print(f"  lineprof: unattributed {m(r['unattributed'] for r in ours):.2%}, "
          f"unrecovered {m(r['unrecovered'] for r in ours):.2%}, "
          f"stack not reaching a thread's entry {m(r['broken'] for r in ours):.2%}, "
          f"own cost {m(r['profiler'] for r in ours):.1%} of all samples")
    print(f"  perf: unattributed {m(r['unattributed'] for r in perf):.2%}")
    roots = {}
    for r in ours:
        for k, v in r["broken_roots"].items():
            roots[k] = roots.get(k, 0) + v
    if roots:
        worst = sorted(roots.items(), key=lambda kv: -kv[1])[:5]
        print("  outermost frames of broken stacks: "
              + ", ".join(f"{k} ({v})" for k, v in worst))
    for w in sorted({w for r in ours for w in r["warnings"]}):
        print(f"  lineprof says: {w}")

    def avg(runs, key):
        return m(r["shares"].get(key, 0) for r in runs)

    keys = {k for r in perf + ours for k in top(r["shares"], o.show)}
    rows = sorted(keys, key=lambda k: -(avg(perf, k) + avg(ours, k)))[:o.show + 5]
    head = f"{'lineprof':>8} {'perf':>6}" + (f" {'tracked':>7}" if off else "")
    print(f"\n  {head}  line" + ("  (tracked: perf on the tracked build, "
                                "LINEPROF=off)" if off else ""))
    for k in rows:
        name = next((r["names"][k] for r in ours if k in r["names"]),
                    next((r["names"][k] for r in perf if k in r["names"]), ""))
        tracked = f" {avg(off, k):7.1%}" if off else ""
        print(f"  {avg(ours, k):8.1%} {avg(perf, k):6.1%}{tracked}  {short(k)}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
