#!/usr/bin/env python3
"""Half-open connections against a node, measured (issue 13's target: 20 000 of them at the
default descriptor limit, and the node stays responsive: small put/get p50 within 2x).

Starts a devnet of 4 peers with the given `jewel` binary, measures ROUNDS puts of a 4 KiB
file from peer 1 (three copies: peer 0, the attacked one, always holds one) and gets of it
on peer 0 (through the CLI, as a user does), then opens
N TCP connections to peer 0's listen port that never say a word (from 127.0.0.2 upwards,
1000 per address, in two helper processes so that this machine's descriptor limit is not
the attack's), keeps them open, and measures again. Prints p50/p99 and failures for both.

    python3 scripts/half_open_attack.py target/release/jewel [N] [ROUNDS]
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HOLD = r"""
import socket, sys, time
port, first, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
held, refused = [], 0
for i in range(count):
    s = socket.socket()
    s.settimeout(1)
    s.bind(("127.0.%d.%d" % ((first + i // 1000) // 250, 2 + (first + i // 1000) % 250), 0))
    try:
        s.connect(("127.0.0.1", port))
        held.append(s)
    except OSError:
        refused += 1
print("open", len(held), "refused", refused, flush=True)
sys.stdin.read()
"""


def run(jewel, home, *args):
    t = time.monotonic()
    p = subprocess.run([jewel, "--home", home, *args], capture_output=True, text=True)
    return time.monotonic() - t, p


def rounds(jewel, net, n, tag):
    times, failures = [], []
    for r in range(n):
        f = os.path.join(net, "f-%s-%d" % (tag, r))
        with open(f, "wb") as out:
            out.write(os.urandom(4096))
        dt, p = run(jewel, os.path.join(net, "peer-1"), "put", f, "--scheme", "replicate:3")
        if p.returncode != 0:
            failures.append(p.stderr.strip())
            continue
        times.append(dt)
        o = f + ".out"
        dt, g = run(jewel, os.path.join(net, "peer-0"), "get", p.stdout.strip(), "-o", o)
        if g.returncode != 0:
            failures.append(g.stderr.strip())
        else:
            times.append(dt)
    times.sort()
    return times, failures


def report(label, times, failures):
    p50 = statistics.median(times) * 1e3 if times else float("nan")
    p99 = times[int((len(times) - 1) * 0.99)] * 1e3 if times else float("nan")
    print("%-36s %4d ops  p50 %7.1f ms  p99 %7.1f ms  failed %d" % (label, len(times), p50, p99, len(failures)))
    if failures:
        print("    first failure:", failures[0])
    return p50


def main():
    jewel = os.path.abspath(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    with tempfile.TemporaryDirectory() as net:
        subprocess.run([jewel, "devnet", "up", "--peers", "4", "--dir", net], check=True, capture_output=True)
        try:
            listen = open(os.path.join(net, "peer-0", "node.log")).read()
            port = int(re.search(r"/ip4/127\.0\.0\.1/tcp/(\d+)", listen).group(1))
            base = report("no attack", *rounds(jewel, net, count, "a"))
            helpers = []
            for h in range(2):
                helpers.append(subprocess.Popen(
                    [sys.executable, "-c", HOLD, str(port), str(h * (n // 2) // 1000), str(n // 2)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            for h in helpers:
                print("   helper:", h.stdout.readline().strip())
            t = time.monotonic()
            _, st = run(jewel, os.path.join(net, "peer-0"), "status")
            print("   the attacked node's status answered in %.1f ms (exit %d)" % ((time.monotonic() - t) * 1e3, st.returncode))
            att = report("%d half-open connections" % n, *rounds(jewel, net, count, "b"))
            print("   p50 is %.2fx the unattacked p50 (target <= 2x)" % (att / base))
            for h in helpers:
                h.stdin.close()
                h.wait()
        finally:
            subprocess.run([jewel, "devnet", "down", "--dir", net], capture_output=True)


if __name__ == "__main__":
    main()
