"""Benchmark the stream server against a naive Flask-SocketIO reference.

One command (from the repository root, with the project's virtualenv)::

    .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --clients 1000,2000,5000,10000 --duration 25 --modes eventlet,gevent

For each client count N, async mode and target (``real`` = random_stream.py with
``--db :memory:``, ``naive`` = bench/naive_app.py) it starts the server on a free
127.0.0.1 port pinned to the first CPU, opens N WebSocket Socket.IO clients from
bench/loadgen.py pinned to the second CPU, measures for ``--duration`` seconds and
prints a table, then the ratio real/naive for each figure. Every server and
generator it started is stopped at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REQUIREMENTS = BENCH / "requirements.txt"


def ensure_requirements() -> None:
    """Install bench/requirements.txt into this interpreter if anything is missing."""
    try:
        import orjson  # noqa: F401
        import psutil  # noqa: F401

        if sys.platform != "win32":
            import uvloop  # noqa: F401
    except ImportError as exc:
        if sys.prefix == sys.base_prefix:  # not a virtualenv: leave the system's Python alone
            sys.exit(
                f"bench: {exc.name} is missing. Run with the project's virtualenv "
                f"(.venv/bin/python bench/run.py), which installs it, or: pip install -r {REQUIREMENTS}"
            )
        print(
            f"installing {REQUIREMENTS.relative_to(BENCH.parent)} into {sys.prefix}",
            file=sys.stderr,
        )
        subprocess.check_call(
            [sys.executable, "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)]
        )


ensure_requirements()
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402

SERVER_SETTLE = 2.0  # seconds after /healthz before the 0-client RSS sample
CLIENT_SETTLE = 2.0  # seconds after the ramp before the N-client RSS sample and the window


def percentile(sorted_values, q: float) -> float:
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def period_stats(times_by_seq: dict[int, float], interval: float) -> dict:
    """Mean period, drift and p99 jitter of a per-seq time series (ts or arrival)."""
    seqs = sorted(times_by_seq)
    if len(seqs) < 2:
        return {"period_ms": math.nan, "drift_pct": math.nan, "jitter_p99_ms": math.nan}
    t = [times_by_seq[s] for s in seqs]
    span_ticks = seqs[-1] - seqs[0]
    period = (t[-1] - t[0]) / span_ticks
    jitter = sorted(
        abs((t[i + 1] - t[i]) / (seqs[i + 1] - seqs[i]) - interval) for i in range(len(seqs) - 1)
    )
    return {
        "period_ms": period * 1e3,
        "drift_pct": (period - interval) / interval * 100,
        "jitter_p99_ms": percentile(jitter, 99) * 1e3,
    }


REAL_ROOT = harness.ROOT  # where random_stream.py is taken from; --ref points it at an export


def export_ref(ref: str) -> Path:
    """Export commit ``ref`` to a temporary folder (git archive: the repository is not touched)."""
    dest = Path(tempfile.mkdtemp(prefix=f"bench-code-{ref.replace('/', '_')}-"))
    archive = subprocess.run(
        ["git", "archive", ref], cwd=harness.ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def server_command(
    target: str, mode: str, port: int, interval: float, extra: list[str]
) -> list[str]:
    common = [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--interval",
        str(interval),
        "--async-mode",
        mode,
    ]
    if target == "naive":
        return [harness.PYTHON, str(BENCH / "naive_app.py"), *common]
    return [
        harness.PYTHON,
        str(REAL_ROOT / "random_stream.py"),
        *common,
        "--db",
        ":memory:",
        "--max-connections",
        "20000",
        *extra,
    ]


def run_one(target: str, mode: str, clients: int, args, workdir: Path) -> dict:
    """Start one server, load it with ``clients`` clients, return the figures."""
    cpus = harness.available_cpus()
    server_cpus = {cpus[0]} if len(cpus) > 1 else None
    gen_cpus = {cpus[1]} if len(cpus) > 1 else None
    port = harness.free_port()
    tag = f"{target}-{mode}-{clients}"
    server = harness.ServerProcess(
        tag,
        server_command(target, mode, port, args.interval, args.real_args.split()),
        port,
        server_cpus,
        workdir / f"{tag}.log",
    )
    gens: list[harness.GeneratorProcess] = []
    try:
        server.wait_ready(args.ready_timeout)
        time.sleep(SERVER_SETTLE)
        rss0 = server.rss()
        procs = max(1, min(args.procs, clients))
        gen_args = ["--batch", str(args.batch), "--connect-timeout", str(args.connect_timeout)]
        for i in range(procs):
            share = clients // procs + (1 if i < clients % procs else 0)
            gens.append(
                harness.GeneratorProcess(
                    port, share, gen_cpus, workdir / f"{tag}-{i}.f64", gen_args
                )
            )
        ramp_timeout = args.connect_timeout * (clients / args.batch + 2) + 60
        ramped = [g.read("ramped", ramp_timeout) for g in gens]
        time.sleep(CLIENT_SETTLE)
        rss_idle = server.rss()
        window_start = time.time() + 0.05
        window_end = window_start + args.duration
        profiler = None
        if args.profile:
            # py-spy samples the server from the generator's CPU for the whole window.
            profiler = harness.spawn(
                [
                    str(Path(harness.PYTHON).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(server.proc.pid),
                    "--duration",
                    str(int(args.duration)),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(Path(args.profile) / f"{tag}.txt"),
                ],
                gen_cpus,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        server_cpu = min(server_cpus) if server_cpus else 0
        busy0 = harness.cpu_busy_seconds(server_cpu)
        cpu0, gcpu0 = server.cpu_seconds(), sum(g.cpu_seconds() for g in gens)
        wall0 = time.monotonic()
        for g in gens:
            g.start(window_start, window_end, args.grace)
        for g in gens:
            g.read("window_end", args.duration + 30)
        cpu1, gcpu1 = server.cpu_seconds(), sum(g.cpu_seconds() for g in gens)
        wall = time.monotonic() - wall0
        busy1 = harness.cpu_busy_seconds(server_cpu)
        rss_end = server.rss()
        results = [g.read("result", args.grace + 60) for g in gens]
        if profiler is not None:
            profiler.wait(30)
    finally:
        for g in gens:
            g.stop()
        server.stop()

    latencies = array("d")
    for g in gens:
        path = Path(g.samples_out)
        if path.exists():
            latencies.frombytes(path.read_bytes())
            path.unlink()
    lat = sorted(latencies)
    seq_ts: dict[int, float] = {}
    first_arrival: dict[int, float] = {}
    for r in results:
        for s, ts in r["seq_ts"].items():
            seq_ts[int(s)] = ts
        for s, t in r["first_arrival"].items():
            s = int(s)
            first_arrival[s] = min(t, first_arrival.get(s, t))
    in_window = len(seq_ts)
    held = sum(r["clients"] for r in results)
    messages = sum(r["messages"] for r in results)
    errors: dict[str, int] = {}
    for r in ramped:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    ts_stats = period_stats(seq_ts, args.interval)
    arrival_stats = period_stats(first_arrival, args.interval)
    return {
        "target": target,
        "mode": mode,
        "requested": clients,
        "connected": sum(r["connected"] for r in ramped),
        "failed": sum(r["failed"] for r in ramped),
        "connect_errors": errors,
        "ramp_s": max(r["ramp_s"] for r in ramped),
        "held": held,
        "disconnects": sum(r["disconnects"] for r in results),
        "readings": in_window,
        "messages": messages,
        "missed": held * in_window - messages,
        "duplicates": sum(r["duplicates"] for r in results),
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "max_ms": (lat[-1] if lat else math.nan) * 1e3,
        "period_ms": ts_stats["period_ms"],
        "drift_pct": ts_stats["drift_pct"],
        "jitter_p99_ms": ts_stats["jitter_p99_ms"],
        "arrival_jitter_p99_ms": arrival_stats["jitter_p99_ms"],
        "cpu_us_per_msg": (cpu1 - cpu0) / messages * 1e6 if messages else math.nan,
        "server_cpu_pct": (cpu1 - cpu0) / wall * 100,
        "rss_mb": rss_end / 2**20,
        "kb_per_client": (rss_idle - rss0) / 1024 / held if held else math.nan,
        "gen_cpu_pct": (gcpu1 - gcpu0) / wall * 100,
        # Anything else that ran on the server's CPU meanwhile (other programs, interrupts):
        # if this is more than a few %, the machine was not quiet and the figures are pessimistic.
        "other_cpu_pct": max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / wall * 100
        if server_cpus
        else math.nan,
        "gen_us_per_msg": (gcpu1 - gcpu0) / messages * 1e6 if messages else math.nan,
        # How long readings waited in the generator's socket buffers before it read them;
        # latency comes from kernel receive timestamps, so this delay is not in it.
        "gen_lag_p99_ms": max(
            (r["gen_lag_ms"].get("p99", math.nan) for r in results), default=math.nan
        ),
        "other_events": {
            name: sum(r["other_events"].get(name, 0) for r in results)
            for name in {name for r in results for name in r["other_events"]}
        },
    }


COLUMNS = [
    # key, header, format, better ("low"/"high"/None): used for the ratio table
    ("connected", "conn", "{:.0f}", "high"),
    ("failed", "fail", "{:.0f}", "low"),
    ("p50_ms", "p50 ms", "{:.1f}", "low"),
    ("p99_ms", "p99 ms", "{:.1f}", "low"),
    ("max_ms", "max ms", "{:.1f}", "low"),
    ("missed", "missed", "{:.0f}", "low"),
    ("period_ms", "period ms", "{:.2f}", None),
    ("drift_pct", "drift %", "{:+.3f}", None),
    ("jitter_p99_ms", "jit99 ms", "{:.2f}", "low"),
    ("arrival_jitter_p99_ms", "arr jit99", "{:.1f}", "low"),
    ("cpu_us_per_msg", "CPU us/msg", "{:.1f}", "low"),
    ("server_cpu_pct", "srv CPU%", "{:.0f}", "low"),
    ("rss_mb", "RSS MB", "{:.0f}", "low"),
    ("kb_per_client", "KB/client", "{:.1f}", "low"),
    ("gen_cpu_pct", "gen CPU%", "{:.0f}", None),
    ("gen_lag_p99_ms", "gen lag99", "{:.0f}", None),
    ("other_cpu_pct", "other%", "{:.0f}", None),
]


SKIP_RATIO = ("period ms", "drift %", "other%", "gen lag99")


def fmt(fmt_: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt_.format(value)


def print_table(rows: list[dict], out=sys.stdout) -> None:
    headers = ["target", "mode", "N"] + [h for _, h, _, _ in COLUMNS]
    lines = [
        [r["target"], r["mode"], str(r["requested"])] + [fmt(f, r.get(k)) for k, _, f, _ in COLUMNS]
        for r in rows
    ]
    print_markdown(headers, lines, out)


def print_ratios(rows: list[dict], out=sys.stdout) -> None:
    by_key = {(r["target"], r["mode"], r["requested"]): r for r in rows}
    headers = ["mode", "N"] + [h for _, h, _, _ in COLUMNS if h not in SKIP_RATIO] + ["note"]
    lines = []
    for (target, mode, n), real in by_key.items():
        naive = by_key.get(("naive", mode, n))
        if target != "real" or naive is None:
            continue
        line = [mode, str(n)]
        for key, header, _, _ in COLUMNS:
            if header in SKIP_RATIO:
                continue
            a, b = real.get(key), naive.get(key)
            if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
                line.append("-" if not (a == 0 and b == 0) else "=")
            else:
                line.append(f"{a / b:.2f}")
        held = naive.get("connected", 0)
        line.append(f"naive held only {held}" if held < real.get("connected", 0) else "")
        lines.append(line)
    if lines:
        print("\nratio real/naive (lower is better except conn):", file=out)
        print_markdown(headers, lines, out)


def print_markdown(headers: list[str], lines: list[list[str]], out) -> None:
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
        for i, h in enumerate(headers)
    ]
    print("| " + " | ".join(h.rjust(w) for h, w in zip(headers, widths)) + " |", file=out)
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|", file=out)
    for line in lines:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(line, widths)) + " |", file=out)


def machine_description() -> str:
    import psutil

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for pkg in ("flask-socketio", "python-socketio", "python-engineio", "eventlet", "gevent"):
        try:
            from importlib.metadata import version

            versions.append(f"{pkg} {version(pkg)}")
        except Exception:
            pass
    return (
        f"{model}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
        + ", ".join(versions)
    )


def code_version(ref: str = "") -> str:
    """The commit benchmarked; without ``ref``, marked dirty when the working tree differs."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", ref or "HEAD"],
            cwd=harness.ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if ref:
            return rev or ref
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=harness.ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return f"{rev}{' (dirty)' if dirty else ''}" if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--clients",
        default="1000,2000,5000,10000",
        help="comma-separated client counts (max 10000)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=25.0,
        help="measuring window, seconds (25 = one Engine.IO ping interval, so ping cost is in)",
    )
    p.add_argument(
        "--modes", default="eventlet,gevent", help="async modes: eventlet, gevent, threading"
    )
    p.add_argument(
        "--targets",
        default="real,naive",
        help="real (random_stream.py), naive (bench/naive_app.py)",
    )
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument(
        "--grace",
        type=float,
        default=3.0,
        help="seconds to wait for late readings after the window",
    )
    p.add_argument("--batch", type=int, default=500, help="connections opened per ramp step")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument(
        "--procs", type=int, default=1, help="load generator processes (all on the generator CPU)"
    )
    p.add_argument("--ready-timeout", type=float, default=30.0)
    p.add_argument("--real-args", default="", help="extra arguments for random_stream.py")
    p.add_argument(
        "--ref",
        default="",
        help="benchmark random_stream.py as of this commit (e.g. HEAD) instead of the working tree",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of servers and generators (e.g. -10 on a busy machine; negative needs root)",
    )
    p.add_argument("--json", default="", help="also write all figures to this JSON file")
    p.add_argument(
        "--profile",
        default="",
        help="sample each server with py-spy into this folder "
        "(collapsed stacks, one file per run; needs `pip install py-spy` and ptrace rights)",
    )
    args = p.parse_args(argv)
    args.client_counts = [int(c) for c in args.clients.split(",") if c]
    if any(n < 1 or n > 10000 for n in args.client_counts):
        p.error("--clients: each count must be in 1..10000")
    args.mode_list = [m for m in args.modes.split(",") if m]
    args.target_list = [t for t in args.targets.split(",") if t]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    harness.raise_fd_limit()
    harness.NICE = args.nice
    global REAL_ROOT
    if args.ref:
        REAL_ROOT = export_ref(args.ref)
    if "real" in args.target_list and not (REAL_ROOT / "random_stream.py").exists():
        print("random_stream.py not found: benchmarking the naive reference only", file=sys.stderr)
        args.target_list = [t for t in args.target_list if t != "real"]
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"# bench/run.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    code = code_version(args.ref) if args.ref else code_version()
    print(f"# {started:%Y-%m-%d %H:%M} UTC; code {code}; {machine_description()}")
    print(
        f"# server pinned to CPU {harness.available_cpus()[0]}, load generator to CPU "
        f"{harness.available_cpus()[-1]}; logs in {workdir}",
        flush=True,
    )
    rows: list[dict] = []
    try:
        for n in args.client_counts:
            for mode in args.mode_list:
                for target in args.target_list:
                    if target == "naive" and mode == "threading":
                        continue
                    label = f"{target} {mode} N={n}"
                    print(f"... {label}", file=sys.stderr, flush=True)
                    try:
                        row = run_one(target, mode, n, args, workdir)
                    except RuntimeError as exc:
                        print(f"!!! {label}: {exc}", file=sys.stderr, flush=True)
                        continue
                    rows.append(row)
                    print(
                        f"    connected {row['connected']}/{n}, p99 {row['p99_ms']:.0f} ms, missed {row['missed']}, "
                        f"{row['cpu_us_per_msg']:.1f} us/msg, {row['kb_per_client']:.1f} KB/client, "
                        f"gen CPU {row['gen_cpu_pct']:.0f}%, other load on the server CPU {row['other_cpu_pct']:.0f}%",
                        file=sys.stderr,
                        flush=True,
                    )
    except KeyboardInterrupt:
        print("\ninterrupted: stopping servers", file=sys.stderr)
    finally:
        harness.stop_all()
    print()
    print_table(rows)
    print_ratios(rows)
    busy = [r for r in rows if r.get("other_cpu_pct", 0) > 10]
    if busy:
        print(
            f"\nWARNING: in {len(busy)} of {len(rows)} runs other programs used more than 10% of the server's "
            "CPU (column other%): latency, jitter and drift there are pessimistic; rerun on a quiet machine."
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"started": started.isoformat(), "args": vars(args), "rows": rows}, indent=1)
        )
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
