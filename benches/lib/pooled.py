#!/usr/bin/env python3
"""Pools the hyperfine JSON exports of a bench's alternating rounds and prints the median
of every timed run per command, and their ratio against the target.

usage: pooled.py TARGET COMMAND_NAME BASELINE_NAME ROUND.json...

Why rounds: this VM's speed drifts within minutes (bwrap's median alone went from 2.97 to
4.17 ms in one session), and hyperfine times each command in one block, so a single run
credits the drift to whichever command ran in the slow minutes. Short rounds in alternating
order spread it over both: the benches run 10 timed runs of each command per round (30
rounds for the runner, 20 for the whole command). With 50 per round (6 rounds) twelve runs
of the runner bench with one binary gave ratios from 0.88 to 1.07 over the fourteenth
session; with 10 per round, six runs with one binary gave 0.89 to 0.98 over the fifteenth.
"""
import json
import statistics
import sys

target = float(sys.argv[1])
name, base = sys.argv[2], sys.argv[3]
times = {}
for path in sys.argv[4:]:
    with open(path) as f:
        for result in json.load(f)["results"]:
            times.setdefault(result["command"], []).extend(result["times"])
a, b = statistics.median(times[name]), statistics.median(times[base])
print(
    f"medians over {len(times[name])} runs each in {len(sys.argv) - 4} alternating rounds: "
    f"{name} {a * 1000:.2f} ms, {base} {b * 1000:.2f} ms, "
    f"ratio {a / b:.2f} (target <= {target:g})"
)
