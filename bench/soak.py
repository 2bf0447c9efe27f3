"""Soak: clients keep connecting and leaving; does the server's memory stay flat?

    .venv/bin/python bench/soak.py                       # 2 minutes, 500 held, 200 replaced/s
    .venv/bin/python bench/soak.py --minutes 5 --churn 300 --clients 1000

Starts random_stream.py (``--db :memory:``) on 127.0.0.1 pinned to the first CPU,
holds ``--clients`` WebSocket Socket.IO clients from bench/loadgen.py on the second
CPU and replaces ``--churn`` of them a second (half leave cleanly, half vanish with a
TCP reset). Every ``--every`` seconds it prints the server's RSS, CPU and the churn
counts; at the end, a verdict: memory is flat when RSS grew by no more than
``--tolerance-mb`` (or 5%) between the end of the warm-up and the end of the soak.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import run  # noqa: E402  (installs bench/requirements.txt if needed)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--clients", type=int, default=500, help="clients held at any time")
    p.add_argument("--churn", type=float, default=200.0, help="clients replaced per second")
    p.add_argument("--every", type=float, default=10.0, help="seconds between report lines")
    p.add_argument("--warmup", type=float, default=30.0, help="seconds before the RSS baseline")
    p.add_argument("--tolerance-mb", type=float, default=10.0)
    p.add_argument("--mode", default="eventlet", help="server async mode")
    p.add_argument("--target", default="real", choices=["real", "naive"])
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--real-args", default="")
    p.add_argument(
        "--nice", type=int, default=0, help="niceness of server and generator (negative needs root)"
    )
    args = p.parse_args(argv)
    if not 0 < args.minutes <= 30 or not 0 < args.clients <= 10000 or not 0 < args.churn <= 2000:
        p.error(
            "keep it bounded: --minutes in (0, 30], --clients in (0, 10000], --churn in (0, 2000]"
        )
    harness.raise_fd_limit()
    harness.NICE = args.nice
    cpus = harness.available_cpus()
    server_cpus = {cpus[0]} if len(cpus) > 1 else None
    gen_cpus = {cpus[1]} if len(cpus) > 1 else None
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    port = harness.free_port()
    cmd = run.server_command(args.target, args.mode, port, args.interval, args.real_args.split())
    print(f"# bench/soak.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; code {run.code_version()}; "
        f"{run.machine_description()}"
    )
    print(
        f"# {args.target} server ({args.mode}) on CPU {cpus[0]}, churn generator on CPU {cpus[-1]}; "
        f"logs in {workdir}",
        flush=True,
    )
    server = harness.ServerProcess(args.target, cmd, port, server_cpus, workdir / "server.log")
    gen = None
    samples: list[tuple[float, float, int]] = []  # (elapsed s, RSS MB, connections opened so far)
    try:
        server.wait_ready()
        rss_start = server.rss() / 2**20
        gen_cmd = [
            harness.PYTHON,
            str(harness.BENCH / "loadgen.py"),
            "--port",
            str(port),
            "--clients",
            str(args.clients),
            "--churn-rate",
            str(args.churn),
            "--duration",
            str(args.minutes * 60),
            "--report-every",
            str(args.every),
        ]
        import subprocess

        gen = harness.spawn(
            gen_cmd,
            gen_cpus,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        reader = harness.LineReader(gen)
        ramped = reader.read("ramped", 120)
        print(
            f"# server RSS at start {rss_start:.1f} MB; held {ramped['connected']} clients after "
            f"{ramped['ramp_s']:.1f} s ({ramped['failed']} failed)"
        )
        print(
            f"{'t s':>6} {'RSS MB':>8} {'CPU %':>6} {'held':>6} {'opened':>8} {'closed':>8} {'failed':>7} {'gaps':>6}",
            flush=True,
        )
        cpu0, wall0 = server.cpu_seconds(), time.monotonic()
        deadline = time.monotonic() + args.minutes * 60 + 60
        while time.monotonic() < deadline:
            msg = reader.read(("progress", "churn_done"), args.every * 3 + 30)
            rss = server.rss() / 2**20
            cpu1, wall1 = server.cpu_seconds(), time.monotonic()
            cpu_pct = (cpu1 - cpu0) / (wall1 - wall0) * 100
            cpu0, wall0 = cpu1, wall1
            samples.append((msg["elapsed_s"], rss, msg["opened"]))
            print(
                f"{msg['elapsed_s']:>6.0f} {rss:>8.1f} {cpu_pct:>6.0f} {msg['connected']:>6} {msg['opened']:>8} "
                f"{msg['closed']:>8} {msg['failed']:>7} {msg['gaps']:>6}",
                flush=True,
            )
            if msg["event"] == "churn_done":
                if msg["errors"]:
                    print(f"# connect failures: {msg['errors']}")
                break
        harness.stop(gen)
        gen = None
        time.sleep(3)
        print(f"# RSS {server.rss() / 2**20:.1f} MB 3 s after all clients left", flush=True)
    except KeyboardInterrupt:
        print("interrupted: stopping", file=sys.stderr)
        return 130
    finally:
        if gen is not None:
            harness.stop(gen)
        server.stop()
        harness.stop_all()
    return verdict(samples, args)


def verdict(samples: list[tuple[float, float, int]], args) -> int:
    after = [(rss, opened) for t, rss, opened in samples if t >= args.warmup]
    if len(after) < 2:
        print("verdict: too short to tell (need samples after the warm-up)")
        return 1
    (base, opened0), (end, opened1) = after[0], after[-1]
    peak = max(rss for rss, _ in after)
    allowed = max(args.tolerance_mb, 0.05 * base)
    flat = end - base <= allowed
    per_conn = (end - base) * 1024 / max(1, opened1 - opened0)
    print(
        f"verdict: {'FLAT' if flat else 'GROWING'}: RSS {base:.1f} MB after warm-up -> {end:.1f} MB at the end "
        f"(peak {peak:.1f}, {end - base:+.1f} MB over {opened1 - opened0} new connections = "
        f"{per_conn:+.2f} KB each; allowed +{allowed:.1f} MB)"
    )
    return 0 if flat else 2


if __name__ == "__main__":
    sys.exit(main())
