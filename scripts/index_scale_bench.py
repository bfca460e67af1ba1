#!/usr/bin/env python3
"""Issue 22's index targets at scale, through the `jewel` binary on a devnet of real node
processes (all on this machine's cores).

    python3 scripts/index_scale_bench.py target/release/jewel [PEERS] [FILES]

1. `jewel put -r` of FILES files of 100 bytes (each distinct), then again unchanged.
2. A change of one file (`jewel put FILE --as PATH`), then what its publication stored:
   the bytes of the head the node published (its log's `published the index head` line).
3. `jewel id recover` of the user on a new device: the wall time until it returns with
   the whole index, and `jewel ls -r` there.
4. Each node's resident memory (the user's device, a holder) with that index.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from benchlib import runner, timed

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/jewel")
PEERS = int(sys.argv[2]) if len(sys.argv) > 2 else 30
FILES = int(sys.argv[3]) if len(sys.argv) > 3 else 100000


jewel = runner(BIN)


def rss_mib(home):
    """The resident memory of the node whose home is `home`, in MiB."""
    r = subprocess.run(["pgrep", "-f", f"node --home {home}"], capture_output=True, text=True)
    for p in r.stdout.split():
        try:
            m = re.search(r"VmRSS:\s+(\d+) kB", open(f"/proc/{p}/status").read())
        except OSError:
            continue
        if m:
            return int(m.group(1)) / 1024
    return float("nan")


def main():
    work = tempfile.mkdtemp(prefix="jewel-index-scale-")
    net = os.path.join(work, "net")
    subprocess.run([BIN, "devnet", "up", "--peers", str(PEERS), "--dir", net], check=True, capture_output=True)
    homes = [os.path.join(net, f"peer-{i}") for i in range(1, PEERS)]
    me = homes[0]
    try:
        phrase = jewel(me, "id", "init", "--json").stdout
        phrase = __import__("json").loads(phrase)["phrase"]
        src = os.path.join(work, "tree")
        for i in range(FILES):
            d = os.path.join(src, f"d{i % 1000}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"f{i}.txt"), "w") as f:
                f.write(f"{i:>99}\n")
        secs, _ = timed(lambda: jewel(me, "put", "-r", src))
        print(f"put -r of {FILES} files of 100 bytes ({PEERS} nodes): {secs:.1f} s = {FILES / secs:.0f} files/s")
        again, _ = timed(lambda: jewel(me, "put", "-r", src))
        print(f"the same again, unchanged: {again:.2f} s")
        status = lambda: __import__("json").loads(jewel(me, "status", "--json").stdout)["index"]
        before = status()
        one = os.path.join(work, "one.txt")
        with open(one, "w") as f:
            f.write("changed\n")
        secs, _ = timed(lambda: jewel(me, "put", one, "--as", "tree/d7/f7.txt"))
        after = status()
        print(f"a change of one file: the put took {secs:.2f} s and published {after['last_head_bytes']} bytes "
              f"(a delta: {after['last_head_delta']}); the publication before: {before['last_head_bytes']} bytes "
              f"(a delta: {before['last_head_delta']})")
        new = homes[-1]
        secs, _ = timed(lambda: jewel(new, "id", "recover", stdin=phrase))
        listed, _ = timed(lambda: jewel(new, "ls", "-r", "tree", "--json"))
        n = len(__import__("json").loads(jewel(new, "ls", "-r", "tree", "--json").stdout)["entries"])
        print(f"id recover on a new device: {secs:.2f} s; then ls -r there: {listed:.2f} s, {n} entries")
        print(f"resident memory: the user's device {rss_mib(me):.0f} MiB, the new device {rss_mib(new):.0f} MiB, "
              f"a holder {rss_mib(homes[5]):.0f} MiB")
    finally:
        subprocess.run([BIN, "devnet", "down", "--dir", net], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
