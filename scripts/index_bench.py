#!/usr/bin/env python3
"""Issue 14's targets, measured through the `jewel` binary on a devnet of real processes.

    python3 scripts/index_bench.py target/release/jewel [PEERS] [FILES]

1. Resolving a user's head on another device, cold: on each of PEERS-1 devices that never
   held the user, the wall time of `jewel id recover` (it resolves the user's latest head
   and every device's head in the DHT, fetches the snapshot and merges it), and of
   `jewel name resolve` (one signed record, cold).
2. A change on one online device visible on another: `jewel mv` on device A, then `jewel
   ls` polled on device B every 5 ms until it shows (the poll's own cost included).
3. `jewel put -r` of FILES files of 4 KiB, then again over the unchanged tree.
4. The index's stored bytes per entry (its snapshot's size over its entries).
"""
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/jewel")
PEERS = int(sys.argv[2]) if len(sys.argv) > 2 else 30
FILES = int(sys.argv[3]) if len(sys.argv) > 3 else 10000


def jewel(home, *args, stdin=None, check=True):
    r = subprocess.run([BIN, "--home", home, *args], input=stdin, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"jewel {' '.join(args)}: {r.stderr.strip()}")
    return r


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    work = tempfile.mkdtemp(prefix="jewel-index-bench-")
    live = os.path.join(work, "live")
    try:
        t = time.time()
        subprocess.run([BIN, "devnet", "up", "--peers", str(PEERS), "--dir", live], check=True, capture_output=True)
        print(f"devnet of {PEERS} peers up in {time.time() - t:.1f} s")
        home = lambda i: os.path.join(live, f"peer-{i}")
        made = json.loads(jewel(home(0), "id", "init", "--json").stdout)
        phrase = made["phrase"]
        src = os.path.join(work, "docs")
        os.makedirs(src)
        for i in range(100):
            with open(os.path.join(src, f"note-{i}.txt"), "wb") as f:
                f.write(os.urandom(100))
        jewel(home(0), "put", "-r", src, "--scheme", "replicate:2")
        cap = jewel(home(0), "share", "docs/note-0.txt").stdout.strip()
        name = jewel(home(0), "name", "publish", cap, "--label", "bench").stdout.strip()
        # The head is published a moment after the last change: wait until a device sees it.
        deadline = time.time() + 60
        while True:
            r = jewel(home(PEERS - 1), "name", "resolve", name, check=False)
            if r.returncode == 0 or time.time() > deadline:
                break
            time.sleep(0.2)
        time.sleep(2)  # the head's publication follows the last change by about 0.3 s

        recover, resolve = [], []
        for i in range(1, PEERS):
            t = time.time()
            r = jewel(home(i), "id", "recover", stdin=phrase)
            recover.append(time.time() - t)
            if "your index has 100 files" not in r.stderr:
                print(f"peer {i}: {r.stderr.strip()}")
        for i in range(1, PEERS):
            t = time.time()
            jewel(home(i), "name", "resolve", name)
            resolve.append(time.time() - t)
        print(f"id recover (resolve heads + fetch + merge), cold, {len(recover)} devices: "
              f"p50 {pct(recover, 50):.3f} s, p95 {pct(recover, 95):.3f} s, max {max(recover):.3f} s")
        print(f"name resolve, {len(resolve)} devices: p50 {pct(resolve, 50) * 1000:.1f} ms, "
              f"p95 {pct(resolve, 95) * 1000:.1f} ms")

        seen = []
        for n in range(30):
            a, b = (0, 1) if n % 2 == 0 else (1, 0)
            to = f"moved/{n}.txt"
            jewel(home(a), "mv", f"docs/note-{n}.txt", to)
            t = time.time()
            while True:
                r = jewel(home(b), "ls", to, check=False)
                if r.returncode == 0:
                    break
                if time.time() - t > 30:
                    print("a change never showed")
                    break
                time.sleep(0.005)
            seen.append(time.time() - t)
        print(f"change visible on the other device: p50 {pct(seen, 50) * 1000:.0f} ms, "
              f"p95 {pct(seen, 95) * 1000:.0f} ms, max {max(seen) * 1000:.0f} ms")

        snap = None
        d = json.loads(jewel(home(0), "dir", "--json").stdout)
        for rec in d["files"].values():
            if rec["name"] == ".jewel-index":
                snap = rec["size"]
        entries = len(json.loads(jewel(home(0), "ls", "-r", "--json").stdout)["entries"])
        if snap:
            print(f"index snapshot: {snap} bytes for {entries} entries (+ their history) = {snap / entries:.0f} bytes/entry")

        subprocess.run([BIN, "devnet", "down", "--dir", live], capture_output=True)
        if FILES:
            # A user's two devices on a devnet of 8 (not 30 devices of one user).
            live = os.path.join(work, "live8")
            subprocess.run([BIN, "devnet", "up", "--peers", "8", "--dir", live], check=True, capture_output=True)
            phrase = json.loads(jewel(home(0), "id", "init", "--json").stdout)["phrase"]
            jewel(home(1), "id", "recover", stdin=phrase)
            many = os.path.join(work, "many")
            for i in range(FILES):
                d = os.path.join(many, f"d{i % 100}")
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, f"f{i}.bin"), "wb") as f:
                    f.write(random.randbytes(4096))
            t = time.time()
            r = jewel(home(0), "put", "-r", many, "--scheme", "replicate:2")
            first = time.time() - t
            t = time.time()
            r2 = jewel(home(0), "put", "-r", many, "--scheme", "replicate:2")
            again = time.time() - t
            print(f"put -r of {FILES} files of 4 KiB: {first:.1f} s = {FILES / first:.0f} files/s ({r.stderr.strip()})")
            print(f"again, unchanged: {again:.2f} s ({r2.stderr.strip()})")
            # The other device has every entry (gossip, and the head).
            t = time.time()
            while len(json.loads(jewel(home(1), "ls", "-r", "--json").stdout)["entries"]) < FILES and time.time() - t < 120:
                time.sleep(0.5)
            print(f"the other device lists all {FILES} within {time.time() - t:.1f} s of the put's end")
            d = json.loads(jewel(home(0), "dir", "--json").stdout)
            snaps = [rec["size"] for rec in d["files"].values() if rec["name"] == ".jewel-index"]
            if snaps:
                print(f"index snapshot with {FILES} entries: {max(snaps)} bytes = {max(snaps) / FILES:.0f} bytes/entry")
    finally:
        subprocess.run([BIN, "devnet", "down", "--dir", live], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


main()
