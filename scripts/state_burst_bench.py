#!/usr/bin/env python3
"""Issue 21's group-commit target, measured through the `jewel` binary on a devnet.

    python3 scripts/state_burst_bench.py target/release/jewel [PEERS] [FILES]

`jewel put -r` of FILES files of 1 KiB (a burst of FILES index changes) on peer 0, while a
second thread asks peer 0 `jewel status --json` back to back. Reports the state commits
the burst cost (the node's `state_commits` before and after) per 10 ms of the put's wall
time, and the `status` latencies (p50, p99, max) during it (each one a whole CLI process:
start, one HTTP call, print).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/jewel")
PEERS = int(sys.argv[2]) if len(sys.argv) > 2 else 6
FILES = int(sys.argv[3]) if len(sys.argv) > 3 else 1000


def jewel(home, *args):
    r = subprocess.run([BIN, "--home", home, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"jewel {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    work = tempfile.mkdtemp(prefix="jewel-burst-bench-")
    live = os.path.join(work, "live")
    try:
        subprocess.run([BIN, "devnet", "up", "--peers", str(PEERS), "--dir", live], check=True, capture_output=True)
        home = os.path.join(live, "peer-0")
        src = os.path.join(work, "tree")
        for i in range(FILES):
            d = os.path.join(src, f"d{i % 20}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"f{i}.txt"), "wb") as f:
                f.write(os.urandom(1024))
        commits = lambda: json.loads(jewel(home, "status", "--json"))["state_commits"]
        before = commits()
        done = threading.Event()
        lat = []

        def poll():
            while not done.is_set():
                t = time.perf_counter()
                jewel(home, "status", "--json")
                lat.append(time.perf_counter() - t)

        poller = threading.Thread(target=poll)
        poller.start()
        t = time.perf_counter()
        jewel(home, "put", "-r", src, "--scheme", "replicate:2")
        wall = time.perf_counter() - t
        done.set()
        poller.join()
        made = commits() - before
        ms = [x * 1000 for x in lat]
        print(f"put -r of {FILES} files of 1 KiB on {PEERS} peers: {wall:.1f} s, {FILES / wall:.0f} files/s")
        print(f"state commits: {made} ({made / (wall * 100):.2f} per 10 ms of wall time; {FILES / max(made, 1):.1f} changes per commit)")
        print(f"status during the burst: {len(ms)} calls, p50 {pct(ms, 50):.1f} ms, p99 {pct(ms, 99):.1f} ms, max {max(ms):.1f} ms")
    finally:
        subprocess.run([BIN, "devnet", "down", "--dir", live], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
