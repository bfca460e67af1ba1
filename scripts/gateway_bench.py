#!/usr/bin/env python3
"""Issue 23's gateway targets, through the `jewel` binary on a devnet of real node processes
(all on this machine's cores).

    cd scripts && python3 gateway_bench.py ../target/release/jewel [PEERS] [SIZE_MIB] [SCHEME] [SEGMENT]

1. `jewel get` of a file of SIZE_MIB MiB, then the same file read whole through
   `jewel serve gateway` (sequential throughput, and its share of the get's).
2. Time to the first byte of 64 KiB ranges in the middle of the file (each at a fresh
   offset, so no segment is cached yet): p50 and max of 20.
3. Random 256 KiB ranges (fresh offsets) on one kept-alive connection, as a player reads:
   their throughput, next to the sequential one.

SEGMENT (say 512KiB) puts the file with that segment size (`jewel put --segment-size`).
"""
import http.client
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import runner, timed

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/jewel")
PEERS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
SIZE = (int(sys.argv[3]) if len(sys.argv) > 3 else 1024) << 20
SCHEME = sys.argv[4] if len(sys.argv) > 4 else "jewels:3/5"
SEGMENT = sys.argv[5] if len(sys.argv) > 5 else None
jewel = runner(BIN)


def fetch(host, port, path, rng=None, conn=None):
    """(seconds to the first body byte, seconds in all, bytes) of one GET (on `conn`, kept
    open as a browser keeps it, if given)."""
    c = conn or http.client.HTTPConnection(host, port)
    headers = {"Range": f"bytes={rng[0]}-{rng[1] - 1}"} if rng else {}
    t = time.perf_counter()
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    first = r.read(1)
    ttfb = time.perf_counter() - t
    n = len(first)
    while True:
        b = r.read(1 << 20)
        if not b:
            break
        n += len(b)
    total = time.perf_counter() - t
    if conn is None:
        c.close()
    return ttfb, total, n


def main():
    work = tempfile.mkdtemp(prefix="jewel-gateway-bench-")
    net = os.path.join(work, "net")
    subprocess.run([BIN, "devnet", "up", "--peers", str(PEERS), "--dir", net], check=True, capture_output=True)
    me = os.path.join(net, "peer-1")
    gw = None
    try:
        src = os.path.join(work, "big.bin")
        with open(src, "wb") as f:
            for _ in range(SIZE >> 20):
                f.write(os.urandom(1 << 20))
        extra = ["--segment-size", SEGMENT] if SEGMENT else []
        cap = jewel(me, "put", src, "--scheme", SCHEME, *extra).stdout.strip()
        os.remove(src)
        out = os.path.join(work, "got.bin")
        got, _ = timed(lambda: jewel(me, "get", cap, "-o", out))
        os.remove(out)
        print(f"jewel get of {SIZE >> 20} MiB ({SCHEME}, segments {SEGMENT or '4MiB'}, {PEERS} nodes): {got:.2f} s = {SIZE / got / 1e6:.0f} MB/s")
        gw = subprocess.Popen([BIN, "--home", me, "serve", "gateway"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        url = gw.stdout.readline().strip()
        host, port = url.split("@", 1)[1].rstrip("/").split(":")
        port = int(port)
        path = f"/jewel/{cap}"
        _, seq, n = fetch(host, port, path)
        assert n == SIZE, n
        print(f"gateway, the whole file: {seq:.2f} s = {SIZE / seq / 1e6:.0f} MB/s ({got / seq * 100:.0f}% of jewel get)")
        rnd = random.Random(1)
        firsts = []
        for _ in range(20):
            at = SIZE // 4 + rnd.randrange(SIZE // 2)
            ttfb, _, _ = fetch(host, port, path, (at, at + (64 << 10)))
            firsts.append(ttfb * 1000)
        print(f"time to first byte of a 64 KiB range in the middle: p50 {statistics.median(firsts):.1f} ms, max {max(firsts):.1f} ms")
        reads, conn = 50, http.client.HTTPConnection(host, port)
        t0 = time.perf_counter()
        for _ in range(reads):
            at = rnd.randrange(SIZE - (256 << 10))
            fetch(host, port, path, (at, at + (256 << 10)), conn)
        secs = time.perf_counter() - t0
        rate = reads * (256 << 10) / secs
        print(f"random 256 KiB ranges: {reads} in {secs:.2f} s = {rate / 1e6:.0f} MB/s ({rate / (SIZE / seq) * 100:.0f}% of sequential)")
    finally:
        if gw:
            gw.kill()
        subprocess.run([BIN, "devnet", "down", "--dir", net], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
