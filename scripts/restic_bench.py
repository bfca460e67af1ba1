#!/usr/bin/env python3
"""Issue 23's restic target, through the `jewel` binary on a devnet of real node processes
and Debian's restic (all on this machine's cores).

    cd scripts && python3 restic_bench.py ../target/release/jewel [PEERS] [SIZE_MIB] [SCHEME]

A tree of SIZE_MIB MiB (files of 1 to 32 MiB of random bytes, and 1 000 small ones):
`restic backup` and `restic restore` of it through `jewel serve restic`, next to the same
with a repository in a local folder.
"""
import os
import random
import shutil
import subprocess
import sys
import tempfile

from benchlib import timed

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/jewel")
PEERS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
SIZE = (int(sys.argv[3]) if len(sys.argv) > 3 else 1024) << 20
SCHEME = sys.argv[4] if len(sys.argv) > 4 else "jewels:3/5"


def restic(repo, *args, cache):
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=cache)
    r = subprocess.run(["restic", "-q", "-r", repo, *args], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"restic {' '.join(args)}: {r.stderr.strip()}")


def main():
    work = tempfile.mkdtemp(prefix="jewel-restic-bench-")
    net = os.path.join(work, "net")
    subprocess.run([BIN, "devnet", "up", "--peers", str(PEERS), "--dir", net], check=True, capture_output=True)
    me = os.path.join(net, "peer-1")
    srv = None
    try:
        tree = os.path.join(work, "tree")
        os.makedirs(os.path.join(tree, "small"))
        rnd, left, i = random.Random(1), SIZE, 0
        for j in range(1000):
            with open(os.path.join(tree, "small", f"s{j}"), "wb") as f:
                f.write(os.urandom(4096))
        left -= 1000 * 4096
        while left > 0:
            n = min(left, rnd.randrange(1, 33) << 20)
            with open(os.path.join(tree, f"f{i}.bin"), "wb") as f:
                f.write(os.urandom(n))
            left, i = left - n, i + 1
        srv = subprocess.Popen([BIN, "--home", me, "serve", "restic", "--scheme", SCHEME], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        url = srv.stdout.readline().strip()
        rows = []
        for label, repo in (("jewel serve restic", f"rest:{url}repo/"), ("a local folder", os.path.join(work, "local-repo"))):
            cache = os.path.join(work, "restic-cache")
            restic(repo, "init", cache=cache)
            b, _ = timed(lambda: restic(repo, "backup", tree, cache=cache))
            out = os.path.join(work, "restored-" + label.split()[0])
            r, _ = timed(lambda: restic(repo, "restore", "latest", "--target", out, cache=cache))
            same = subprocess.run(["diff", "-rq", tree, os.path.join(out, tree.lstrip("/"))], capture_output=True).returncode == 0
            shutil.rmtree(out, ignore_errors=True)
            rows.append((label, b, r, same))
        for label, b, r, same in rows:
            print(f"{label}: backup of {SIZE >> 20} MiB {b:.2f} s ({SIZE / b / 1e6:.0f} MB/s), restore {r:.2f} s ({SIZE / r / 1e6:.0f} MB/s), exact: {same}")
    finally:
        if srv:
            srv.kill()
        subprocess.run([BIN, "devnet", "down", "--dir", net], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
