#!/usr/bin/env python3
"""lineprof overhead benchmark (issue 3): one command builds every variant,
runs them alternately for several rounds and prints median wall time and
peak RSS against an untracked System build, heaptrack and dhat-rs beside
lineprof, the time of `lineprof report` on the exact profile, and the micro
figure (ns per alloc+free above System at a stack depth of ~10).

    bench/run.py [--rounds 7] [--records 50000] [--valgrind] [--no-build]
                 [--report-records 800000] [--only all|report]

Wall time is measured around the child with a monotonic clock; peak RSS is
the child's ru_maxrss from wait4 (for heaptrack: the largest of its
processes, the program or the interpreter); CPU is user + system time of
the child and its children (for heaptrack it includes the interpreter,
which runs beside the program). Medians, because the machine is shared
and noisy; CPU time is the less noisy figure when other jobs compete for
the cores.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
FP_FLAGS = "-C force-frame-pointers=yes"
SAMPLE = "524288"

# name -> (cargo features, RUSTFLAGS)
BUILDS = {
    "system": ("", FP_FLAGS),
    "system-nofp": ("", ""),
    "tracking": ("tracking", FP_FLAGS),
    "dhat": ("dhat", FP_FLAGS),
}


def binary(build, name):
    return os.path.join(BENCH, "target", build, "release", name)


def build_all():
    for build, (features, rustflags) in BUILDS.items():
        cmd = ["cargo", "build", "--release", "--quiet", "--target-dir",
               os.path.join(BENCH, "target", build)]
        if features:
            cmd += ["--features", features]
        print(f"building {build}: RUSTFLAGS={rustflags!r} {' '.join(cmd[2:])}",
              flush=True)
        env = dict(os.environ, RUSTFLAGS=rustflags)
        subprocess.run(cmd, cwd=BENCH, env=env, check=True)
    print("building lineprof CLI: cargo build --release", flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT,
                   check=True)


def base_env():
    """The caller's environment without any lineprof setting."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("LINEPROF") and k != "BENCH_SAMPLER"}


def run(cmd, env, cwd):
    """Runs `cmd`; returns (wall seconds, peak RSS bytes, CPU seconds, stdout)."""
    out_path = os.path.join(cwd, "stdout.txt")
    with open(out_path, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out,
                                stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    with open(out_path, encoding="utf-8", errors="replace") as f:
        stdout = f.read()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    return wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime, stdout


class Variant:
    def __init__(self, name, build, env=None, wrap=None, profile=None,
                 available=True, why_not=""):
        self.name = name
        self.build = build
        self.env = env or {}
        self.wrap = wrap  # function(tmpdir, exe) -> argv
        self.profile = profile  # name (prefix) of the file the run leaves
        self.available = available
        self.why_not = why_not
        self.walls, self.rss, self.cpus, self.sizes = [], [], [], []
        self.checksum = None

    def argv(self, tmp, exe, args):
        return (self.wrap(tmp, exe) if self.wrap else [exe]) + args


def workload_variants(with_valgrind):
    heaptrack = shutil.which("heaptrack")
    vs = [
        Variant("System", "system"),
        Variant("System, no frame pointers", "system-nofp"),
        # The platform's floor for CPU sampling: the perf event lineprof
        # uses by default, at 1 kHz, signalling the thread as lineprof's
        # does, with an empty handler (bench/src/sampler.rs), in the same
        # process as System and as lineprof exact; and the same event
        # delivering SIGTRAP instead (no inter-processor interrupt).
        Variant("System + bare perf sampler 1 kHz", "system",
                {"BENCH_SAMPLER": "signal:1000"}),
        Variant("System + bare sigtrap sampler 1 kHz", "system",
                {"BENCH_SAMPLER": "sigtrap:1000"}),
        Variant("lineprof exact", "tracking",
                {"LINEPROF_HZ": "0", "LINEPROF_OUT": "{tmp}/exact.lprof"},
                profile="exact.lprof"),
        Variant("lineprof exact + bare perf sampler 1 kHz", "tracking",
                {"LINEPROF_HZ": "0", "BENCH_SAMPLER": "signal:1000",
                 "LINEPROF_OUT": "{tmp}/exact-bare.lprof"},
                profile="exact-bare.lprof"),
        Variant("lineprof exact + cpu 1 kHz", "tracking",
                {"LINEPROF_HZ": "1000", "LINEPROF_OUT": "{tmp}/cpu.lprof"},
                profile="cpu.lprof"),
        Variant("lineprof sampled 512 KiB", "tracking",
                {"LINEPROF_HZ": "0", "LINEPROF_SAMPLE": SAMPLE,
                 "LINEPROF_OUT": "{tmp}/sampled.lprof"},
                profile="sampled.lprof"),
        Variant("lineprof sampled 512 KiB + cpu 1 kHz", "tracking",
                {"LINEPROF_HZ": "1000", "LINEPROF_SAMPLE": SAMPLE,
                 "LINEPROF_OUT": "{tmp}/sampled-cpu.lprof"},
                profile="sampled-cpu.lprof"),
        Variant("lineprof aggregate", "tracking",
                {"LINEPROF_HZ": "0", "LINEPROF_MODE": "aggregate",
                 "LINEPROF_OUT": "{tmp}/aggregate.lprof"},
                profile="aggregate.lprof"),
        Variant("lineprof LINEPROF=off", "tracking", {"LINEPROF": "off"}),
        Variant("dhat-rs", "dhat", profile="dhat-heap.json"),
        Variant("heaptrack", "system",
                wrap=lambda tmp, exe: ["heaptrack", "-o", f"{tmp}/heaptrack", exe],
                profile="heaptrack",
                available=heaptrack is not None,
                why_not="heaptrack not installed (apt-get install -y heaptrack)"),
    ]
    if with_valgrind:
        vs.append(Variant(
            "valgrind --tool=dhat (1 run)", "system",
            wrap=lambda tmp, exe: ["valgrind", "--tool=dhat", "-q",
                                   f"--dhat-out-file={tmp}/vg-dhat.json", exe],
            profile="vg-dhat.json",
            available=shutil.which("valgrind") is not None,
            why_not="valgrind not installed"))
    return vs


def clean(tmp):
    for name in os.listdir(tmp):
        path = os.path.join(tmp, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def dir_size(tmp, prefix):
    """Bytes of the files in `tmp` whose name starts with `prefix`."""
    return sum(os.path.getsize(os.path.join(tmp, n))
               for n in os.listdir(tmp) if n.startswith(prefix))


def mib(n):
    if n < 2**20:
        return f"{n / 2**10:.0f} KiB"
    return f"{n / 2**20:.1f} MiB"


def table(rows, headers):
    widths = [max(len(str(r[i])) for r in rows + [headers])
              for i in range(len(headers))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def bench_workload(args, work):
    variants = workload_variants(args.valgrind)
    tmps = {v.name: os.path.join(work, f"v{i}") for i, v in enumerate(variants)}
    for t in tmps.values():
        os.makedirs(t)
    env0 = base_env()
    for rnd in range(args.rounds):
        for v in variants:
            if not v.available or (v.name.startswith("valgrind") and rnd > 0):
                continue
            tmp = tmps[v.name]
            clean(tmp)
            env = dict(env0, **{k: val.replace("{tmp}", tmp)
                                for k, val in v.env.items()})
            argv = v.argv(tmp, binary(v.build, "workload"), [str(args.records)])
            wall, rss, cpu, out = run(argv, env, tmp)
            v.walls.append(wall)
            v.cpus.append(cpu)
            v.rss.append(rss)
            checksum = out.split("checksum=")[-1].split()[0] if "checksum=" in out else None
            if v.checksum is None:
                v.checksum = checksum
            if v.profile:
                # Left in place until this variant's next run (the last
                # round's exact profile feeds the report timing).
                v.sizes.append(dir_size(tmp, v.profile))
        print(f"round {rnd + 1}/{args.rounds} done", flush=True)

    sums = {v.checksum for v in variants if v.checksum}
    if len(sums) > 1:
        print(f"WARNING: variants computed different checksums: {sums}")
    base = next(v for v in variants if v.name == "System")
    bw, br = statistics.median(base.walls), statistics.median(base.rss)
    bc = statistics.median(base.cpus)
    rows = []
    for v in variants:
        if not v.available:
            rows.append([v.name, "-", "-", "-", "-", "-", "-", "-", v.why_not])
            continue
        w, r, c = (statistics.median(v.walls), statistics.median(v.rss),
                   statistics.median(v.cpus))
        size = mib(statistics.median(v.sizes)) if v.sizes else ""
        rows.append([v.name, f"{w * 1000:.0f} ms", f"{w / bw:.2f}x",
                     mib(r), f"{r / br:.2f}x", f"{c * 1000:.0f} ms", f"{c / bc:.2f}x",
                     size,
                     f"{len(v.walls)} runs, wall {min(v.walls) * 1000:.0f}-{max(v.walls) * 1000:.0f} ms"])
    print()
    print(f"Workload: bench workload {args.records} records, {args.rounds} alternated rounds, medians")
    table(rows, ["variant", "wall", "vs System", "peak RSS", "vs System",
                 "CPU", "vs System", "output", "spread"])

    sampling_cost(variants, bc)

    exact = next(v for v in variants if v.name == "lineprof exact")
    profile = os.path.join(tmps[exact.name], exact.profile)
    lineprof = os.path.join(ROOT, "target", "release", "lineprof")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([lineprof, "report", profile], check=True,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    print()
    print(f"lineprof report on the exact profile ({mib(os.path.getsize(profile))}): "
          f"median of 3 = {statistics.median(times) * 1000:.0f} ms "
          f"(runs: {', '.join(f'{t * 1000:.0f}' for t in times)} ms)")
    return variants


def sampling_cost(variants, system_cpu):
    """CPU sampling at 1 kHz: each row's CPU above its baseline, as the
    median of the per-round differences (the two ran in the same round),
    in % of System's CPU and per sample (1000 per CPU second)."""
    by = {v.name: v for v in variants}
    pairs = [
        ("bare perf sampler on System (the platform)", "System + bare perf sampler 1 kHz", "System"),
        ("bare sigtrap sampler on System", "System + bare sigtrap sampler 1 kHz", "System"),
        ("bare perf sampler on lineprof exact", "lineprof exact + bare perf sampler 1 kHz",
         "lineprof exact"),
        ("lineprof's sampler on exact", "lineprof exact + cpu 1 kHz", "lineprof exact"),
        ("lineprof's sampler on sampled 512 KiB", "lineprof sampled 512 KiB + cpu 1 kHz",
         "lineprof sampled 512 KiB"),
    ]
    rows = []
    for label, name, base in pairs:
        v, b = by[name], by[base]
        d = statistics.median(x - y for x, y in zip(v.cpus, b.cpus))
        samples = statistics.median(v.cpus) * 1000
        rows.append([label, f"{d * 1000:+.0f} ms", f"{d / system_cpu * 100:+.1f}%",
                     f"{d / samples * 1e6:+.0f} us"])
    print()
    print("CPU sampling at 1 kHz: CPU above the same variant without it "
          "(median of per-round differences)")
    table(rows, ["sampler", "CPU", "of System", "per sample"])


def heap_figures(report_json):
    """Totals and every line's self/total figures without CPU (which
    differ from run to run), for comparing a stream and an aggregate run."""
    r = json.loads(report_json)
    strip = lambda f: {k: v for k, v in f.items() if not k.startswith("cpu")}
    lines = {(l["file"], l["line"], l["function"]): (strip(l["self"]), strip(l["total"]))
             for l in r["lines"]}
    lines = {k: v for k, v in lines.items() if any(v[0].values()) or any(v[1].values())}
    return strip(r["totals"]), lines


def bench_aggregate(args, work):
    """LINEPROF_MODE=aggregate at 1x and 4x the workload length beside
    stream runs of the same length: profile sizes, time, and whether the
    figures agree; then `lineprof report` time and memory on the largest
    (4x stream) profile."""
    tmp = os.path.join(work, "aggregate")
    os.makedirs(tmp)
    env0 = base_env()
    lineprof = os.path.join(ROOT, "target", "release", "lineprof")
    exe = binary("tracking", "workload")
    rows, largest = [], None
    for mult in (1, 4):
        records = str(args.records * mult)
        figures = {}
        for mode in ("stream", "aggregate"):
            out = os.path.join(tmp, f"{mode}-{mult}.lprof")
            env = dict(env0, LINEPROF_HZ="0", LINEPROF_MODE=mode, LINEPROF_OUT=out)
            wall, rss, _, _ = run([exe, records], env, tmp)
            rep = subprocess.run([lineprof, "report", out, "--format", "json"],
                                 check=True, capture_output=True, cwd=ROOT).stdout
            figures[mode] = heap_figures(rep)
            size = os.path.getsize(out)
            rows.append([f"{mode}, {records} records", f"{wall * 1000:.0f} ms",
                         mib(rss), mib(size) if size >= 2**20 else f"{size / 1024:.1f} KiB",
                         ""])
            if mode == "stream" and mult == 4:
                largest = out
            elif mode == "aggregate":
                (ts, ls), (ta, la) = figures["stream"], figures["aggregate"]
                differ = sum(1 for k in set(ls) | set(la) if ls.get(k) != la.get(k))
                # The workload's HashMaps have random seeds: two stream runs
                # differ in a few std lines' `total` figures too.
                rows[-1][4] = (f"totals = stream's: {'yes' if ts == ta else 'NO'}; "
                               f"{differ} of {len(la)} lines differ")
    print()
    print("Aggregate mode (LINEPROF_HZ=0), one run each")
    table(rows, ["run", "wall", "peak RSS", "profile", "check"])
    sizes = [os.path.getsize(os.path.join(tmp, f"aggregate-{m}.lprof")) for m in (1, 4)]
    print(f"aggregate profile 4x / 1x: {sizes[1] / sizes[0]:.2f}x")
    walls, rsss = [], []
    for _ in range(3):
        wall, rss, _, _ = run([lineprof, "report", largest], env0, tmp)
        walls.append(wall)
        rsss.append(rss)
    events = heap_events(lineprof, largest)
    w = statistics.median(walls)
    print(f"lineprof report on the largest profile ({mib(os.path.getsize(largest))}, "
          f"{events / 1e6:.1f} M heap events): median of 3 = {w * 1000:.0f} ms, "
          f"{events / w / 1e6:.1f} M events/s, peak RSS {mib(max(rsss))}")


def alternated(rounds, names, run_one):
    """Runs `run_one(name)` -> (wall, cpu, extra) for each name in turn, for
    `rounds` rounds; returns, per name, the medians of wall and CPU and the
    last `extra`, and rows of them against the first name (System)."""
    walls = {n: [] for n in names}
    cpus = {n: [] for n in names}
    extra = {}
    for _ in range(rounds):
        for n in names:
            wall, cpu, extra[n] = run_one(n)
            walls[n].append(wall)
            cpus[n].append(cpu)
    med = {n: (statistics.median(walls[n]), statistics.median(cpus[n])) for n in names}
    w0, c0 = med[names[0]]
    rows = [[n, f"{w * 1000:.0f} ms", f"{w / w0:.2f}x", f"{c * 1000:.0f} ms", f"{c / c0:.2f}x"]
            for n, (w, c) in med.items()]
    return med, extra, rows


def bench_threads(args, work):
    """Many short threads (bench/src/bin/threads.rs: 20,000 threads, two
    at a time, 10 strings each): what lineprof adds per thread started and
    ended (its state, the stack's bounds, the perf event), beside System."""
    tmp = os.path.join(work, "threads")
    os.makedirs(tmp)
    env0 = base_env()
    n = 20_000
    variants = {
        "System": ("system", {}),
        "lineprof exact": ("tracking", {"LINEPROF_HZ": "0", "LINEPROF_OUT": f"{tmp}/t.lprof"}),
        "lineprof exact + cpu 1 kHz": (
            "tracking", {"LINEPROF_HZ": "1000", "LINEPROF_OUT": f"{tmp}/t.lprof"}),
    }

    def run_one(name):
        build, env = variants[name]
        wall, _, cpu, _ = run([binary(build, "threads"), str(n), "10"], dict(env0, **env), tmp)
        clean(tmp)
        return wall, cpu, None

    med, _, rows = alternated(args.rounds, list(variants), run_one)
    c0 = med["System"][1]
    for r in rows:
        r.append(f"{(med[r[0]][1] - c0) / n * 1e6:+.1f} us" if r[0] != "System" else "")
    print()
    print(f"Short threads: {n} threads, two at a time, 10 strings each; "
          f"{args.rounds} alternated rounds, medians")
    table(rows, ["variant", "wall", "vs System", "CPU", "vs System", "CPU per thread"])


SUITE_CRATE = "regex-syntax"
SUITE_THREADS = 2
# The allocator lines of the README's test-only setup.
SUITE_ALLOCATOR = """
#[cfg(test)]
#[global_allocator]
static LINEPROF_BENCH_ALLOC: lineprof::Tracking = lineprof::Tracking::new();
"""


def write_if_changed(path, text):
    """Leaves an unchanged file's time alone, so cargo does not rebuild."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def suite_source():
    """The registry crate's source directory, as cargo fetched it for the
    bench's dev-dependency."""
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--quiet"],
        cwd=BENCH, check=True, capture_output=True).stdout)
    for pkg in meta["packages"]:
        if pkg["name"] == SUITE_CRATE:
            return os.path.dirname(pkg["manifest_path"])
    sys.exit(f"{SUITE_CRATE} not in bench/Cargo.toml's dependencies")


def build_suite():
    """The crate's own unit tests built twice, as a user would set them up:
    untouched (System) and with the README's test-only setup (a
    dev-dependency on lineprof and the allocator under #[cfg(test)]), both
    with frame pointers and line tables. Returns {build: test executable}."""
    src = suite_source()
    exes = {}
    for build in ("system", "tracking"):
        root = os.path.join(BENCH, "target", "suite", build)
        # Named by version: a new pin gets a fresh copy.
        crate = os.path.join(root, os.path.basename(src))
        if not os.path.isdir(crate):
            shutil.copytree(src, crate)
        manifest = open(os.path.join(src, "Cargo.toml"), encoding="utf-8").read()
        # Its own workspace (it lies inside bench/'s), line tables.
        manifest += "\n[workspace]\n\n[profile.release]\ndebug = \"line-tables-only\"\n"
        lib = open(os.path.join(src, "src", "lib.rs"), encoding="utf-8").read()
        if build == "tracking":
            shim = os.path.join(ROOT, "alloc-shim").replace("\\", "/")
            manifest += f"\n[dev-dependencies.lineprof]\npath = \"{shim}\"\n"
            # After the crate's inner attributes.
            lines = lib.split("\n")
            last = max(i for i, l in enumerate(lines) if l.startswith("#!["))
            lines.insert(last + 1, SUITE_ALLOCATOR)
            lib = "\n".join(lines)
        write_if_changed(os.path.join(crate, "Cargo.toml"), manifest)
        write_if_changed(os.path.join(crate, "src", "lib.rs"), lib)
        print(f"building {SUITE_CRATE}'s tests ({build}): cargo test --release --no-run",
              flush=True)
        out = subprocess.run(
            ["cargo", "test", "--release", "--no-run", "--lib", "--quiet",
             "--message-format=json-render-diagnostics",
             "--target-dir", os.path.join(root, "target")],
            cwd=crate, env=dict(os.environ, RUSTFLAGS=FP_FLAGS),
            check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            msg = json.loads(line)
            if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                    and msg["target"]["kind"] == ["lib"]:
                exes[build] = msg["executable"]
    return exes


def bench_suite(args, work):
    """A registry crate's own test suite (regex-syntax's 149 unit tests, on
    libtest's threads): the shape of a real `cargo lineprof test`, many
    threads and deep recursive stacks, beside System and heaptrack."""
    tmp = os.path.join(work, "suite")
    os.makedirs(tmp)
    exes = build_suite()
    env0 = base_env()
    heaptrack = shutil.which("heaptrack")
    variants = {
        "System": ("system", {}, None),
        "lineprof exact": ("tracking", {"LINEPROF_HZ": "0", "LINEPROF_OUT": f"{tmp}/exact.lprof"},
                           "exact.lprof"),
        "lineprof exact + cpu 1 kHz": (
            "tracking", {"LINEPROF_HZ": "1000", "LINEPROF_OUT": f"{tmp}/cpu.lprof"}, "cpu.lprof"),
        "lineprof sampled 512 KiB": (
            "tracking", {"LINEPROF_HZ": "0", "LINEPROF_SAMPLE": SAMPLE,
                         "LINEPROF_OUT": f"{tmp}/sampled.lprof"}, "sampled.lprof"),
    }
    if heaptrack:
        variants["heaptrack"] = ("system", {}, "heaptrack")

    def run_one(name):
        build, env, profile = variants[name]
        argv = [exes[build], "-q", f"--test-threads={SUITE_THREADS}"]
        if name == "heaptrack":
            argv = ["heaptrack", "-o", f"{tmp}/heaptrack"] + argv
        wall, _, cpu, out = run(argv, dict(env0, **env), tmp)
        if "test result: ok" not in out:
            sys.exit(f"{name}: the test suite did not pass:\n{out}")
        size = dir_size(tmp, profile) if profile else 0
        clean(tmp)
        return wall, cpu, size

    _, sizes, rows = alternated(args.rounds, list(variants), run_one)
    for r in rows:
        r.append(mib(sizes[r[0]]) if sizes[r[0]] else "")
    print()
    print(f"Test suite: {SUITE_CRATE}'s own unit tests (cargo test --release --lib, "
          f"{SUITE_THREADS} test threads), {args.rounds} alternated rounds, medians")
    table(rows, ["variant", "wall", "vs System", "CPU", "vs System", "output"])


def bench_report(args, work):
    """`lineprof report` on a big stream profile (--report-records records,
    LINEPROF_HZ=0; 800000 make ~440 MB and ~83 M heap events): wall, CPU
    and peak RSS per view, medians of 3, and heap events per second."""
    tmp = os.path.join(work, "report")
    os.makedirs(tmp)
    env0 = base_env()
    lineprof = os.path.join(ROOT, "target", "release", "lineprof")
    profile = os.path.join(tmp, "big.lprof")
    env = dict(env0, LINEPROF_HZ="0", LINEPROF_OUT=profile)
    run([binary("tracking", "workload"), str(args.report_records)], env, tmp)
    events = heap_events(lineprof, profile)
    rows = []
    for fmt in ("text", "json", "html"):
        walls, cpus, rsss = [], [], []
        for _ in range(3):
            wall, rss, cpu, _ = run([lineprof, "report", profile, "--format", fmt],
                                    env0, tmp)
            walls.append(wall)
            cpus.append(cpu)
            rsss.append(rss)
        w, c = statistics.median(walls), statistics.median(cpus)
        rows.append([fmt, f"{w * 1000:.0f} ms", f"{events / w / 1e6:.1f} M/s",
                     f"{c * 1000:.0f} ms", f"{events / c / 1e6:.1f} M/s",
                     mib(max(rsss)),
                     f"wall {min(walls) * 1000:.0f}-{max(walls) * 1000:.0f} ms"])
    print()
    print(f"lineprof report on a stream profile of {args.report_records} records "
          f"({mib(os.path.getsize(profile))}, {events / 1e6:.1f} M heap events), "
          f"medians of 3")
    table(rows, ["view", "wall", "events/wall", "CPU", "events/CPU", "peak RSS",
                 "spread"])
    os.remove(profile)


def heap_events(lineprof, profile):
    """allocations + frees of a profile's JSON totals."""
    r = json.loads(subprocess.run([lineprof, "report", profile, "--format", "json"],
                                  check=True, capture_output=True, cwd=ROOT).stdout)
    return r["totals"]["allocations"] + r["totals"]["frees"]


def bench_micro(args, work):
    tmp = os.path.join(work, "micro")
    os.makedirs(tmp)
    env0 = base_env()
    exact = {"LINEPROF_HZ": "0", "LINEPROF_OUT": f"{tmp}/micro.lprof"}
    # (name, build, environment, threads)
    cases = [
        ("System", "system", {}, 1),
        ("lineprof exact", "tracking", exact, 1),
        ("lineprof sampled 512 KiB", "tracking",
         dict(exact, LINEPROF_SAMPLE=SAMPLE), 1),
        ("lineprof LINEPROF=off", "tracking", {"LINEPROF": "off"}, 1),
        ("System, 2 threads", "system", {}, 2),
        ("lineprof exact, 2 threads", "tracking", exact, 2),
    ]
    wall_ns = {c[0]: [] for c in cases}
    cpu_ns = {c[0]: [] for c in cases}
    parts = {}  # part name -> [ns per event], from the exact run
    for _ in range(args.rounds):
        for name, build, extra, threads in cases:
            clean(tmp)
            argv = [binary(build, "micro"), str(args.micro_iters), str(threads)]
            if name == "lineprof exact":
                argv.append("parts")
            _, _, cpu, out = run(argv, dict(env0, **extra), tmp)
            wall_ns[name].append(float(out.split("ns_per_alloc_free=")[1].split()[0]))
            cpu_ns[name].append(cpu * 1e9 / args.micro_iters)
            for line in out.splitlines():
                if line.startswith("part="):
                    f = dict(x.split("=", 1) for x in line.split("\t"))
                    if f["ns"] != "-":
                        parts.setdefault(f["part"], []).append(
                            (float(f["ns"]), int(f["frames"])))
    clean(tmp)
    print()
    print(f"Micro: Box::new + drop of 64 bytes under 10 nested calls (17 frames), "
          f"{args.micro_iters} iterations, median of {args.rounds}; CPU is the "
          f"process's user+system time per pair (startup included)")
    rows = []
    for name, _, _, threads in cases:
        base = "System, 2 threads" if threads == 2 else "System"
        w, c = statistics.median(wall_ns[name]), statistics.median(cpu_ns[name])
        bw, bc = statistics.median(wall_ns[base]), statistics.median(cpu_ns[base])
        above = "" if name == base else f"{w - bw:+.1f} ns"
        above_cpu = "" if name == base else f"{c - bc:+.1f} ns"
        rows.append([name, f"{w:.1f} ns", above, f"{c:.1f} ns", above_cpu])
    table(rows, ["variant", "wall/pair", "above System", "CPU/pair", "above System"])
    if parts:
        whole = (statistics.median(wall_ns["lineprof exact"])
                 - statistics.median(wall_ns["System"])) / 2
        print()
        print(f"Per event, each part of the heap-event path timed alone in a loop "
              f"(lineprof::__bench, the exact run's thread, same depth), median of "
              f"{args.rounds}; the parts overlap in the real path, so they need "
              f"not add up to the whole")
        rows = [["whole event (exact, micro above System, per alloc or free)",
                 f"{whole:.1f} ns", ""]]
        for name, runs in parts.items():
            frames = runs[0][1]
            rows.append([name, f"{statistics.median(r[0] for r in runs):.1f} ns",
                         f"{frames}" if frames else ""])
        table(rows, ["part", "ns/event", "frames"])


def bench_deep(args, work):
    """Allocation + free at several stack depths, System against exact."""
    tmp = os.path.join(work, "deep")
    os.makedirs(tmp)
    env0 = base_env()
    exact = {"LINEPROF_HZ": "0", "LINEPROF_OUT": f"{tmp}/deep.lprof"}
    iters = 2_000_000
    depths = [5, 20, 30, 60, 120, 240]
    cases = [("System", "system", {}), ("lineprof exact", "tracking", exact)]
    ns = {(d, c[0]): [] for d in depths for c in cases}
    for _ in range(args.rounds):
        for d in depths:
            for name, build, extra in cases:
                clean(tmp)
                _, _, _, out = run([binary(build, "deep"), str(iters), str(d)],
                                   dict(env0, **extra), tmp)
                ns[(d, name)].append(float(out.split("ns_per_pair=")[1].split()[0]))
    clean(tmp)
    print()
    print(f"Deep stacks: Box::new + drop of 64 bytes under a recursion of real calls "
          f"(main, std's start and the allocator add about 10 frames), {iters} iterations, "
          f"{args.rounds} alternated rounds, medians of wall time per pair")
    rows = []
    for d in depths:
        s_, e = (statistics.median(ns[(d, c[0])]) for c in cases)
        rows.append([f"{d}", f"~{d + 10}", f"{s_:.1f} ns", f"{e:.1f} ns", f"{e - s_:+.1f} ns",
                     f"{(e - s_) / 2 / (d + 10):.2f} ns"])
    table(rows, ["recursion", "frames", "System", "exact", "above System",
                 "per event and frame"])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--records", type=int, default=50000)
    p.add_argument("--micro-iters", type=int, default=5_000_000)
    p.add_argument("--valgrind", action="store_true",
                   help="also one run under valgrind --tool=dhat (slow)")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--report-records", type=int, default=800000,
                   help="records of the big stream profile `lineprof report` is "
                        "timed on (0: skip)")
    p.add_argument("--only", choices=["all", "report", "suite", "deep"], default="all",
                   help="report: only the big-profile report timing; suite: only "
                        "the short threads and the registry crate's test suite; "
                        "deep: only the deep-stack rows")
    args = p.parse_args()
    if not args.no_build:
        build_all()
    work = tempfile.mkdtemp(prefix="lineprof-bench-")
    try:
        print(f"machine: {os.cpu_count()} cores, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        if args.only == "all":
            bench_workload(args, work)
            bench_aggregate(args, work)
            bench_micro(args, work)
        if args.only in ("all", "deep"):
            bench_deep(args, work)
        if args.only in ("all", "suite"):
            bench_threads(args, work)
            bench_suite(args, work)
        if args.only in ("all", "report") and args.report_records > 0:
            bench_report(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
