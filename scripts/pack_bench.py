#!/usr/bin/env python3
"""Issue 22's targets that packs serve, measured through the `jewel` binary on a devnet of
real node processes (all on this machine's cores).

    python3 scripts/pack_bench.py target/release/jewel [PEERS] [FILES] [SCHEME] [TREE]

1. `jewel put -r` of FILES files of 4 KiB (random bytes), then again over the unchanged tree.
2. A get of one packed 4 KiB file on another peer, next to a get of a standalone 4 KiB file
   (`jewel put` of one file), p50 of 30 each.
3. `jewel get -r` of the whole tree on another device of the user (after `id recover`).
4. The holders' disk: the bytes their block stores take on disk (du), next to the bytes of
   the blocks they hold.
5. With TREE (say /usr/share/doc): `put -r` of it, and `restic backup` of it to a local
   repository, if restic is installed.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import runner, timed

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/jewel")
PEERS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
FILES = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
SCHEME = sys.argv[4] if len(sys.argv) > 4 else "jewels:3/5"
TREE = sys.argv[5] if len(sys.argv) > 5 else None


jewel = runner(BIN)


def du(path):
    r = subprocess.run(["du", "-sb", path], capture_output=True, text=True)
    return int(r.stdout.split()[0]) if r.returncode == 0 else 0


def main():
    work = tempfile.mkdtemp(prefix="jewel-pack-bench-")
    net = os.path.join(work, "net")
    subprocess.run([BIN, "devnet", "up", "--peers", str(PEERS), "--dir", net], check=True, capture_output=True)
    homes = [os.path.join(net, f"peer-{i}") for i in range(1, PEERS)]
    me, other = homes[0], homes[-1]
    try:
        phrase = json.loads(jewel(me, "id", "init", "--json").stdout)["phrase"]
        src = os.path.join(work, "small")
        for i in range(FILES):
            d = os.path.join(src, f"d{i % 100}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"f{i}.bin"), "wb") as f:
                f.write(os.urandom(4096))
        secs, _ = timed(lambda: jewel(me, "put", "-r", src, "--scheme", SCHEME))
        print(f"put -r of {FILES} files of 4 KiB ({SCHEME}, {PEERS} nodes): {secs:.2f} s = {FILES / secs:.0f} files/s")
        again, _ = timed(lambda: jewel(me, "put", "-r", src, "--scheme", SCHEME))
        print(f"the same again, unchanged: {again:.2f} s")

        # One packed 4 KiB file and one standalone, read on another peer.
        listed = json.loads(jewel(me, "ls", "small/d7", "--json").stdout)["entries"]
        packed = listed[0]["caps"][0]
        alone_path = os.path.join(work, "alone.bin")
        with open(alone_path, "wb") as f:
            f.write(os.urandom(4096))
        alone = jewel(me, "put", alone_path, "--scheme", SCHEME).stdout.strip().splitlines()[-1]
        times = {"packed": [], "standalone": []}
        for i in range(30):
            for kind, cap in (("packed", packed), ("standalone", alone)):
                out = os.path.join(work, f"got-{kind}-{i}")
                secs, _ = timed(lambda: jewel(other, "get", cap, "-o", out))
                times[kind].append(secs * 1000)
        p, s = statistics.median(times["packed"]), statistics.median(times["standalone"])
        print(f"get of one 4 KiB file on another peer, p50 of 30: packed {p:.1f} ms, standalone {s:.1f} ms ({p / s:.2f}x)")

        # The whole tree on another device of the user.
        device = homes[-2]
        jewel(device, "id", "recover", stdin=phrase)
        back = os.path.join(work, "back")
        secs, _ = timed(lambda: jewel(device, "get", "-r", "small", "-o", back))
        same = subprocess.run(["diff", "-r", src, back], capture_output=True).returncode == 0
        print(f"get -r of the {FILES} files on another device: {secs:.2f} s = {FILES / secs:.0f} files/s, identical: {same}")

        every = [os.path.join(net, f"peer-{i}") for i in range(PEERS)]
        disk = sum(du(os.path.join(h, "store")) for h in every)
        held = 0
        for h in every:
            d = json.loads(jewel(h, "dir", "--json").stdout)
            held += sum(b.get("size", 0) for b in d["blocks"])
        print(f"holders' block stores: {disk / 1e6:.1f} MB on disk for {held / 1e6:.1f} MB of blocks ({disk / max(held, 1):.2f}x)")

        if TREE:
            files = sum(len(f) for _, _, f in os.walk(TREE))
            secs, _ = timed(lambda: jewel(me, "put", "-r", TREE, "--as", "tree", "--scheme", SCHEME))
            print(f"put -r of {TREE} ({files} files, {du(TREE) / 1e6:.0f} MB): {secs:.2f} s")
            if shutil.which("restic"):
                repo = os.path.join(work, "restic")
                env = dict(os.environ, RESTIC_PASSWORD="bench")
                subprocess.run(["restic", "init", "-r", repo], env=env, check=True, capture_output=True)
                t, _ = timed(lambda: subprocess.run(["restic", "backup", "-q", "-r", repo, TREE], env=env, check=True, capture_output=True))
                print(f"restic backup of it to a local repository: {t:.2f} s (jewel {secs / t:.2f}x)")
            else:
                print("restic is not installed: no comparison")
    finally:
        subprocess.run([BIN, "devnet", "down", "--dir", net], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
