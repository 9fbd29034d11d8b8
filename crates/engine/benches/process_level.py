#!/usr/bin/env python3
"""Process-level rounds: `portcullis eval` and `regorus_eval` over the same JSON Lines corpus.

Each round runs every contender once, as a fresh process pinned to one core, in an order
that rotates from round to round; CPU time (user + sys, from the kernel's accounting of
the finished child) is divided by the number of reviews. The ratios are taken per round,
so a machine that drifts during the run (seen: 20% within half an hour) moves both sides
of each ratio together, which hyperfine's one-command-after-another runs do not.

Usage (from the repository root, after
`cargo build --release -p portcullis-cli -p portcullis-engine --examples --bin portcullis`):

    crates/engine/benches/process_level.py CORPUS.jsonl [--rounds N] [--core C]

regorus runs on the system allocator and, when libmimalloc is installed
(`MIMALLOC=/path/libmimalloc.so.2` to name it), on mimalloc through LD_PRELOAD as well,
since `portcullis` links mimalloc.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys

DATA = "crates/engine/benches/data"
BIN = "target/release"


def contenders(mimalloc):
    """(name, argv, extra environment) of each contender."""
    out = [
        ("portcullis eval, full policy", [f"{BIN}/portcullis", "eval", "--policy", f"{DATA}/policy-full.yaml"], {}),
        ("portcullis eval, three checks", [f"{BIN}/portcullis", "eval", "--policy", f"{DATA}/policy-three-checks.yaml"], {}),
        ("regorus_eval, system allocator", [f"{BIN}/examples/regorus_eval", f"{DATA}/three-checks.rego"], {}),
    ]
    if mimalloc:
        out.append(
            ("regorus_eval, mimalloc", [f"{BIN}/examples/regorus_eval", f"{DATA}/three-checks.rego"], {"LD_PRELOAD": mimalloc})
        )
    return out


def cpu_seconds(argv, corpus, core, extra_env):
    """User + sys seconds of one run; exit status 0 or 1 (something blocked) is success."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, **extra_env)
    with open(os.devnull, "wb") as sink:
        status = subprocess.run(["taskset", "-c", str(core), *argv, corpus], stdout=sink, env=env).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if status not in (0, 1):
        sys.exit(f"{' '.join(argv)} exited with status {status}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--core", type=int, default=1)
    args = parser.parse_args()

    with open(args.corpus, "rb") as f:
        reviews = sum(1 for line in f if line.strip())
    if reviews == 0:
        sys.exit(f"{args.corpus}: no reviews")
    mimalloc = os.environ.get("MIMALLOC", "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2")
    mimalloc = mimalloc if os.path.exists(mimalloc) else None
    runs = contenders(mimalloc)

    # One untimed run of each first: the page cache holds the corpus for all of them alike.
    for _, argv, env in runs:
        cpu_seconds(argv, args.corpus, args.core, env)
    times = {name: [] for name, _, _ in runs}
    for r in range(args.rounds):
        order = runs[r % len(runs):] + runs[: r % len(runs)]
        for name, argv, env in order:
            times[name].append(cpu_seconds(argv, args.corpus, args.core, env) / reviews * 1e6)

    print(f"process level: {reviews} reviews, {args.rounds} rounds, core {args.core}; CPU (user + sys) per review")
    for name, _, _ in runs:
        t = times[name]
        print(f"  {name:<34} median {statistics.median(t):7.2f} µs  (rounds {min(t):.2f}..{max(t):.2f})")
    full = statistics.median(times[runs[0][0]])
    print(f"full policy: {full:.2f} µs per review (target <= 10 µs: {'met' if full <= 10 else 'MISSED'})")
    ours = times[runs[1][0]]
    for name, _, _ in runs[2:]:
        ratios = [theirs / mine for theirs, mine in zip(times[name], ours)]
        m = statistics.median(ratios)
        print(
            f"ratio {name} / three checks = {m:.1f}x  (rounds {min(ratios):.1f}x..{max(ratios):.1f}x;"
            f" target >= 10x: {'met' if m >= 10 else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
