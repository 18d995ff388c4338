#!/usr/bin/env python3
"""What lineprof costs on real programs: the programs of bench/agree/
(their work done by registry crates, set up as the README tells a user),
untracked beside tracked, alternated round by round, medians (issue 13's
held-out overhead check, run here on programs we can see).

    bench/real_overhead.py [--rounds 5] [--only NAME] [--compare-shim DIR]
                           [--no-build]

Each program builds twice with `cargo lineprof run`'s flags (as
bench/cpu_agree.py does): untracked (System) and tracked (`--features
lineprof`). Rows: the untracked build; tracked with the default settings
(CPU sampling at 1 kHz); with `LINEPROF_HZ=0` (heap tracking only); sampled
512 KiB with `LINEPROF_HZ=0`. With `--compare-shim DIR`, a copy of each
program also builds against the lineprof crate in DIR (another checkout's
`alloc-shim/`, e.g. a `git worktree` of an older commit) and runs with the
default settings in the same rounds: the change's effect, side by side.
CPU is user + system time of the process (`wait4`).
"""

import argparse
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import cpu_agree  # noqa: E402  (its build flags and environment)
from run import run, table  # noqa: E402

HOME = os.path.expanduser("~")
CORPUS = os.path.join(HOME, ".cargo", "registry", "src")
# (program, arguments): what BENCHMARKS.md's "CPU time per line against
# perf" uses, with rgrep at three rounds over the registry's sources.
# regex-syntax's sources: the bench's dev-dependency puts them in the
# registry cache (bench/run.py's test-suite rows run that crate's tests).
SYNTAX_SRC = next(iter(sorted(glob.glob(os.path.join(
    CORPUS, "*", "regex-syntax-0.8.12", "src")))), "")
PROGRAMS = [
    ("jsonwork", []),
    ("sortmap", []),
    ("deflate", ["300000"]),
    ("rgrep", [CORPUS, r"fn\s+\w+(<[^>]*>)?\s*\([^)]*&mut\s+\w+", "1", "3"]),
    # syn parsing regex-syntax's 33 files, 3 rounds: a recursive-descent
    # parser, stacks up to ~100 frames deep.
    ("synparse", [SYNTAX_SRC, "3"]),
]


def build_against(project, shim, tmp):
    """The tracked build of a copy of `project` whose lineprof dependency
    is the crate in `shim`."""
    name = os.path.basename(project)
    copy = os.path.join(tmp, "src-" + name)
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("target"))
    toml = os.path.join(copy, "Cargo.toml")
    with open(toml) as f:
        text = f.read()
    text, n = re.subn(r'lineprof = \{ path = "[^"]*"',
                      f'lineprof = {{ path = "{os.path.abspath(shim)}"', text)
    if n != 1:
        sys.exit(f"{toml}: no `lineprof = {{ path = ... }}` dependency to point at {shim}")
    with open(toml, "w") as f:
        f.write(text)
    target = os.path.join(tmp, "target-" + name)
    print(f"building {name} against {shim}", flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", name,
                    "--target-dir", target, "--features", "lineprof"], cwd=copy,
                   env=dict(cpu_agree.base_env(), **cpu_agree.BUILD_ENV), check=True)
    return os.path.join(target, "release", name)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only", choices=[n for n, _ in PROGRAMS])
    p.add_argument("--compare-shim", metavar="DIR")
    p.add_argument("--no-build", action="store_true")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="lineprof-real-")
    try:
        for name, argv in PROGRAMS:
            if args.only and name != args.only:
                continue
            # rgrep and synparse read a directory of sources first.
            if name in ("rgrep", "synparse") and not os.path.isdir(argv[0]):
                print(f"\n{name}: skipped, no {argv[0] or 'regex-syntax-0.8.12 source'} "
                      f"(cargo fetch in bench/ puts it in the registry cache)")
                continue
            project = os.path.join(BENCH, "agree", name)
            if args.no_build:
                exes = {v: os.path.join(project, "target", "cpu-agree", v, "release", name)
                        for v in ("tracked", "untracked")}
            else:
                exes = cpu_agree.build(project, name)
            out = os.path.join(tmp, "out.lprof")
            base = cpu_agree.base_env()
            variants = [
                ("untracked (System)", exes["untracked"], {}),
                ("lineprof exact, default settings (CPU 1 kHz)", exes["tracked"],
                 {"LINEPROF_OUT": out}),
                ("lineprof exact, LINEPROF_HZ=0", exes["tracked"],
                 {"LINEPROF_OUT": out, "LINEPROF_HZ": "0"}),
                ("lineprof sampled 512 KiB, LINEPROF_HZ=0", exes["tracked"],
                 {"LINEPROF_OUT": out, "LINEPROF_HZ": "0", "LINEPROF_SAMPLE": "524288"}),
            ]
            if args.compare_shim:
                other = build_against(project, args.compare_shim, tmp)
                variants.append((f"exact, default settings, shim of {args.compare_shim}",
                                 other, {"LINEPROF_OUT": out}))
            cpu = {v[0]: [] for v in variants}
            wall = {v[0]: [] for v in variants}
            # One untimed run first: the page cache then holds the inputs
            # (rgrep's corpus) for every variant alike.
            run([variants[0][1]] + argv, base, tmp)
            for _ in range(args.rounds):
                for label, exe, env in variants:
                    w, _, c, _ = run([exe] + argv, dict(base, **env), tmp)
                    cpu[label].append(c)
                    wall[label].append(w)
                    if os.path.exists(out):
                        os.remove(out)
            print(f"\n{name} {' '.join(argv)}: {args.rounds} alternated rounds, medians")
            b_cpu = statistics.median(cpu[variants[0][0]])
            b_wall = statistics.median(wall[variants[0][0]])
            rows = []
            for label, _, _ in variants:
                c, w = statistics.median(cpu[label]), statistics.median(wall[label])
                rows.append([label, f"{w * 1000:.0f} ms", f"{w / b_wall:.2f}x",
                             f"{c * 1000:.0f} ms", f"{c / b_cpu:.2f}x"])
            table(rows, ["variant", "wall", "vs System", "CPU", "vs System"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
