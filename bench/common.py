"""Shared benchmark helpers: child processes, medians, free ports, the result table."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_child(module: str, *args: str, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``python -m module args`` and parse the JSON it prints on its last line."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args], check=True, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, cwd=ROOT, timeout=600,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def cpu_pinning() -> tuple[list[str], list[str]]:
    """Command prefixes: the measured server on CPU 0, the load generator on CPU 1 (empty
    when taskset is missing or there is one CPU)."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", "0"], ["taskset", "-c", "1"]
    return [], []


def pin_store_beside_load(redis_url: str) -> None:
    """Move the store (all its threads) to the load generator's CPU 1: in production it runs
    on a host of its own, and left to the scheduler it often shares the measured server's
    core, where every batch written to it wakes it up and preempts the server for the length
    of the script (seen in py-spy as time spent writing to the store's socket)."""
    if not cpu_pinning()[1]:
        return
    import redis

    client = redis.Redis.from_url(redis_url)
    pid = str(client.info("server")["process_id"])
    client.close()
    subprocess.run(["taskset", "-a", "-p", "-c", "1", pid], check=True, capture_output=True)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ensure_tool(command: str, package: str, also: Path | None = None) -> str:
    """The path of ``command``, installed from Debian's ``package`` with apt-get when it (or
    the file ``also`` the package ships) is missing."""
    found = shutil.which(command)
    if found and (also is None or also.exists()):
        return found
    print(f"  installing {package} (apt-get install -y {package})...", file=sys.stderr)
    install = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        subprocess.run(install, check=True, capture_output=True)
    found = shutil.which(command)
    if not found:
        raise RuntimeError(f"{command} is not installed and apt-get could not install it")
    return found


def gateway_env(redis_url: str, clock: str) -> dict[str, str]:
    """The environment of the gateway processes and CLI calls of a bench: its store, its
    clock, warnings only, and none of the bench-only switches inherited from the caller."""
    env = {**os.environ, "REDIS_URL": redis_url, "GATEWAY_LOG_LEVEL": "WARNING",
           "GATEWAY_CLOCK": clock}
    for name in ("GATEWAY_BENCH_NO_AUTH", "GATEWAY_METRICS", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    return env


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Row:
    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    target: str = ""
    paired: float | None = None  # median of per-round ratios, when rounds were interleaved

    @property
    def ratio(self) -> float:
        if self.paired is not None:
            return self.paired
        return self.value / self.baseline_value if self.baseline_value else float("nan")


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_table(rows: list[Row]) -> None:
    header = f"{'benchmark':<46} {'median':>10} {'unit':<6} {'baseline':<34} {'ratio':>7}  target"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.name:<46} {r.value:>10.3f} {r.unit:<6} "
              f"{r.baseline + f' ({r.baseline_value:.3f})':<34} {r.ratio:>7.2f}  {r.target}")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _one_answer(url: str, headers: dict[str, str] | None) -> str:
    """Status and start of the body of one request (what a failed load run was refused
    with, if the server still refuses)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=5) as resp:
            return f"{resp.status} {resp.read(300)!r}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read(300)!r}"
    except OSError as exc:
        return repr(exc)


_STATUSES = """
local seen = {}
response = function(status, headers, body)
  if status ~= 200 and not seen[status] then
    seen[status] = true
    io.write(status .. " " .. string.sub(body, 1, 200) .. "\\n")
  end
end
"""


def _statuses(binary: list[str], url: str, headers: dict[str, str] | None,
              connections: int) -> str:
    """The non-200 statuses (one body each) of a second of the same load, through a wrk
    script (slower than plain wrk: only to say what failed)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_STATUSES)
        script.flush()
        args = [*binary, "-t1", f"-c{connections}", "-d1s", "-s", script.name]
        for name, value in (headers or {}).items():
            args += ["-H", f"{name}: {value}"]
        done = subprocess.run([*args, url], capture_output=True, text=True, check=False)
    lines = [line.strip() for line in done.stdout.splitlines()
             if line[:3].isdigit() or "Socket errors" in line]
    return "; ".join(lines) or (done.stderr.strip() if done.returncode else "only 200")


def run_wrk(binary: list[str], url: str, seconds: int, headers: dict[str, str] | None = None,
            script: Path | None = None, connections: int = 32
            ) -> tuple[float, float, float, int]:
    """requests/s, p50 ms, p99 ms, requests completed."""
    args = [*binary, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        args += ["-s", str(script)]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], check=True, capture_output=True, text=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if bad:
        if script is not None:  # its requests (keys in rotation) cannot be replayed here
            raise RuntimeError(f"{bad.group(1)} failed responses from {url}:\n{out}")
        raise RuntimeError(f"{bad.group(1)} failed responses from {url}:\n{out}\n"
                           f"a request now answers: {_one_answer(url, headers)}\n"
                           f"a second of the same load now answers: "
                           f"{_statuses(binary, url, headers, connections)}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    if not (rps and done and p50 and p99):
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return (float(rps.group(1)), _ms(*p50.groups()), _ms(*p99.groups()), int(done.group(1)))
