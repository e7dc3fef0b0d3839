#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turns the BENCH lines of tests/bench/run.sh into the table of median
ratios (make bench), optionally written to Documentation/performance.rst;
with --smoke, only checks that every case ran and moved data."""

import argparse
import statistics
import sys
import time

# (case, measured system value over plain value, label, goal)
ROWS = [
    ("tracked", "rand", "tracked, no snapshot / plain, 4k random writes", 0.97),
    ("persist", "rand", "tracked with a CBT store / plain, 4k random writes", 0.95),
    ("marks", "rand", "first writes after an attach (marks) / plain, 4k random", 0.90),
    ("first", "strided", "first writes / plain, 4k strided (one per chunk)", 0.90),
    ("repeat", "rand", "repeat writes / plain, 4k random", 0.95),
    ("fresh", "rand", "fresh snapshot, 4k random writes / plain", 0.75),
    ("read", "read", "image sequential read 1M / plain read", 0.90),
]
SYSTEMS = ["blksnap", "dm"]
# Cases that dm-snapshot has no counterpart of.
TRACKING_ONLY = ("tracked", "persist", "marks")


def parse(path):
    res = {}
    for line in open(path, errors="replace"):
        f = line.split()
        if len(f) == 5 and f[0] == "BENCH":
            res[(f[1], f[2], int(f[3]))] = float(f[4])
    return res


def profiles(path):
    """The PROFILE lines: case -> the lines of perf's report."""
    out = {}
    for line in open(path, errors="replace"):
        if line.startswith("PROFILE "):
            _, case, rest = line.rstrip("\n").split(" ", 2)
            out.setdefault(case, []).append(rest.strip())
    return out


def ratios(res, case, system, base):
    out = []
    for (c, s, t), v in sorted(res.items()):
        if c == case and s == system:
            p = res.get((base, "plain", t))
            if p:
                out.append(v / p)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rst")
    ap.add_argument("--machine", default="")
    ap.add_argument("--settings", default="")
    a = ap.parse_args()
    res = parse(a.log)
    if a.smoke:
        want = [(c, "blksnap") for c, _, _, _ in ROWS]
        want += [(c, "dm") for c, _, _, _ in ROWS if c not in TRACKING_ONLY]
        want += [("rand", "plain"), ("strided", "plain"), ("read", "plain")]
        want += [("take", "big"), ("take", "small")]
        missing = [f"{c}/{s}" for c, s in want if not res.get((c, s, 1))]
        if missing:
            print("bench smoke run: no data for " + ", ".join(missing))
            return 1
        print(f"bench smoke run: all {len(want)} cases moved data")
        return 0

    lines = []
    lines.append(f"{'ratio (higher is better)':52} {'blksnap':>9} {'dm-snapshot':>12} {'goal':>6}  verdict")
    table = []
    met = True
    for case, base, label, goal in ROWS:
        cells = []
        for s in SYSTEMS:
            r = ratios(res, case, s, base)
            cells.append(r)
        b, d = cells
        mb = statistics.median(b) if b else None
        md = statistics.median(d) if d else None
        ok = mb is not None and mb >= goal
        if case == "read" and md is not None and mb is not None:
            ok = ok and mb >= md
        met = met and ok
        fmt = lambda m: "—" if m is None else f"{m:.2f}"
        verdict = "met" if ok else f"gap {goal - (mb or 0):.2f}" if (mb or 0) < goal else "below dm"
        lines.append(f"{label:52} {fmt(mb):>9} {fmt(md):>12} {goal:>6.2f}  {verdict}")
        table.append((label, b, d, mb, md, goal, verdict))
    big = [v for (c, s, t), v in sorted(res.items()) if c == "take" and s == "big"]
    small = [v for (c, s, t), v in sorted(res.items()) if c == "take" and s == "small"]
    tr = [x / y for x, y in zip(big, small) if y]
    mt = statistics.median(tr) if tr else None
    take_ok = mt is not None and mt <= 2.0
    met = met and take_ok
    lines.append(
        f"{'CREATE+TAKE 1 TiB / 1 GiB (at most 2)':52} {('—' if mt is None else f'{mt:.2f}'):>9} {'':>12} {2.0:>6.2f}  {'met' if take_ok else 'not met'}"
    )
    print("\n".join(lines))
    print("per-trial values:")
    for label, b, d, *_ in table:
        print(f"  {label}: blksnap {', '.join(f'{x:.2f}' for x in b)}; dm {', '.join(f'{x:.2f}' for x in d) or '—'}")
    print(f"  CREATE+TAKE ms: 1 TiB {', '.join(f'{x / 1e6:.1f}' for x in big)}; 1 GiB {', '.join(f'{x / 1e6:.1f}' for x in small)}")
    for part in ("create", "takeonly"):
        for size in ("big", "small"):
            xs = [v for (c, s, t), v in sorted(res.items()) if c == part and s == size]
            print(f"    {part} {size}: {', '.join(f'{x / 1e6:.2f}' for x in xs)} ms")
    print("every goal met" if met else "not every goal met: see the gaps above and Documentation/performance.rst")

    prof = profiles(a.log)
    for case, lines in prof.items():
        print(f"profile of {case} (perf, cpu-clock, whole VM):")
        for l in lines[:15]:
            print("  " + l)
    if a.rst:
        write_rst(a, table, big, small, mt, take_ok, res, prof)
    return 0


def write_rst(a, table, big, small, mt, take_ok, res, prof):
    def f(xs):
        return ", ".join(f"{x:.2f}" for x in xs) or "—"

    out = []
    out.append(".. SPDX-License-Identifier: GPL-2.0")
    out.append("")
    out.append("===========")
    out.append("Performance")
    out.append("===========")
    out.append("")
    out.append("Generated by ``make bench`` (``scripts/bench.sh``, ``tests/bench/``); rerun it")
    out.append("to regenerate this page. The part below the table is written by hand")
    out.append("and kept in ``tests/bench/notes.rst``.")
    out.append("")
    out.append(f"- Run on {time.strftime('%Y-%m-%d')}: {a.machine}.")
    out.append(f"- {a.settings}.")
    out.append("- Kernel: the patched 6.12 in its ``bench`` flavour (``base.config`` +")
    out.append("  ``bench.config``: no KASAN, lockdep or kmemleak).")
    out.append("- dm-snapshot: ``snapshot-origin`` + ``snapshot`` (non-persistent, 256 KiB")
    out.append("  chunks) on the same disks, in the same VM, in every trial.")
    out.append("- Ratios are against the plain disk in the same trial; the table shows")
    out.append("  the median over the trials, and each trial's ratio follows. Timing")
    out.append("  noise here is about ±20 % per single run: only medians count.")
    out.append("")
    out.append(".. list-table::")
    out.append("   :header-rows: 1")
    out.append("")
    out.append("   * - ratio (higher is better)")
    out.append("     - blksnap")
    out.append("     - dm-snapshot")
    out.append("     - goal")
    out.append("     - blksnap trials")
    out.append("     - dm trials")
    for label, b, d, mb, md, goal, verdict in table:
        out.append(f"   * - {label}")
        out.append(f"     - {'—' if mb is None else f'{mb:.2f}'} ({verdict})")
        out.append(f"     - {'—' if md is None else f'{md:.2f}'}")
        out.append(f"     - ≥ {goal:.2f}")
        out.append(f"     - {f(b)}")
        out.append(f"     - {f(d)}")
    out.append("")
    ms = lambda xs: ", ".join(f"{x / 1e6:.1f}" for x in xs)
    out.append(f"CREATE+TAKE (CREATE starts tracking; 64 MiB of storage appended):")
    out.append(f"1 TiB disk {ms(big)} ms, 1 GiB disk {ms(small)} ms; median ratio")
    out.append(f"{'—' if mt is None else f'{mt:.2f}'} (goal: at most 2, {'met' if take_ok else 'not met'}).")
    out.append("")
    titles = {"fresh": "fresh-snapshot 4k random writes", "read": "image sequential read 1M"}
    for case, lines in prof.items():
        out.append(f"Where the time goes in the {titles.get(case, case)} (``perf record -a -g")
        out.append("-e cpu-clock`` over one run, the whole VM; top symbols by self time):")
        out.append("")
        out.append("::")
        out.append("")
        out += ["    " + l for l in lines[:20]]
        out.append("")
    raw = ["Raw values (IOPS for writes, KiB/s for reads):", ""]
    for (c, s, t), v in sorted(res.items()):
        if c not in ("take", "create", "takeonly"):
            raw.append(f"- {c} / {s} / trial {t}: {v:.0f}")
    out += raw
    out.append("")
    try:
        notes = open("tests/bench/notes.rst").read()
        out.append(notes.rstrip())
        out.append("")
    except OSError:
        pass
    open(a.rst, "w").write("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
