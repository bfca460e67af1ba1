"""What the benchmark scripts share: running the `jewel` binary and timing a call."""
import subprocess
import time


def runner(binary):
    """`jewel(home, *args, stdin=None)` for `binary`: its result, or the run ends with its error."""

    def jewel(home, *args, stdin=None):
        r = subprocess.run([binary, "--home", home, *args], input=stdin, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"jewel {' '.join(args)}: {r.stderr.strip()}")
        return r

    return jewel


def timed(f):
    """Seconds `f()` took, and what it returned."""
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out
