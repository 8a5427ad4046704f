"""Shared helpers of the benchmark scripts: run a child process measuring wall time and peak RSS,
describe the machine, format markdown tables, and update one section of benchmarks/RESULTS.md.

Benchmarks are scripts, never timed tests: each prints its table, rewrites its own section of
RESULTS.md (between `<!-- BEGIN name -->` and `<!-- END name -->`) and exits non-zero when a floor
is missed.
"""

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS_PATH = PROJECT_ROOT / "benchmarks" / "RESULTS.md"
PYTHON = str(PROJECT_ROOT / ".venv" / "bin" / "python") if (PROJECT_ROOT / ".venv" / "bin" / "python").is_file() \
    else sys.executable
HAM10000_DIR = Path(os.environ.get("BENCH_HAM10000", "/work/shared/data/ham10000-lesions-224"))
MOBILENET_WEIGHTS = Path(os.environ.get(
    "BENCH_MOBILENET_WEIGHTS", "/work/shared/weights/mobilenet_0.75_224_imagenet_tf_no_top.h5"))


def child_env(**extra):
    """Environment for child processes: quiet TensorFlow, `lib` importable from anywhere."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.update({key: str(value) for key, value in extra.items()})
    return env


def machine():
    """CPU model, core count, RAM, load average and UTC time: the context every number needs."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(ram_gb, 1),
            "load_average": [round(value, 2) for value in os.getloadavg()],
            "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")}


def machine_line():
    info = machine()
    return (f"{info['date']} UTC; CPU {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM; "
            f"load average at the end {info['load_average'][0]} (1 min), {info['load_average'][1]} (5 min)")


def _descendants(root_pid):
    """`root_pid` and all its descendants (a papermill kernel is a grandchild, in its own session)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [root_pid]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _tree_rss_bytes(root_pid):
    """(sum, largest single) VmRSS in bytes over `root_pid` and its descendants."""
    total, largest = 0, 0
    for pid in _descendants(root_pid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    total, largest = total + rss, max(largest, rss)
                    break
        except OSError:
            continue
    return total, largest


def available_memory_mb():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def run_measured(command, env=None, cwd=PROJECT_ROOT, timeout_seconds=None, stop_after_seconds=None,
                 log_path=None, sample_seconds=0.25, min_available_mb=2500):
    """Run `command` as a child, sampling the RSS of its process tree; return
    {"seconds", "returncode", "max_rss_mb" (peak RSS of the largest single process: wait4's ru_maxrss,
    which covers reaped descendants, or the largest sampled value if higher, e.g. for a stopped run whose
    grandchild was never reaped), "tree_peak_rss_mb" (largest sampled sum over the tree), "stopped"
    (True when ended by `stop_after_seconds`), "output"}.

    `stop_after_seconds`: end the child and its descendants (SIGTERM) after that long, for runs whose
    memory has reached its plateau and whose end would only cost time; the caller says so in its table.
    `min_available_mb`: the machine is shared, so a child is also ended when the machine's available
    memory falls below this ("low_memory": True; its peak is then a lower bound)."""
    log_file = open(log_path, "w") if log_path else subprocess.PIPE
    started = time.monotonic()
    process = subprocess.Popen(command, env=env or child_env(), cwd=cwd, stdout=log_file,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    peak = [0, 0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            total, largest = _tree_rss_bytes(process.pid)
            peak[0], peak[1] = max(peak[0], total), max(peak[1], largest)
            done.wait(sample_seconds)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output_chunks = []
    if log_file is subprocess.PIPE:
        reader = threading.Thread(target=lambda: output_chunks.append(process.stdout.read()), daemon=True)
        reader.start()
    limit = min(filter(None, [timeout_seconds, stop_after_seconds]), default=None)
    stopped = low_memory = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        low_memory = available_memory_mb() < min_available_mb
        if low_memory or (limit is not None and time.monotonic() - started > limit):
            stopped = True
            for pid in reversed(_descendants(process.pid)):  # only the processes this call started
                try:
                    os.kill(pid, 15)
                except ProcessLookupError:
                    pass
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.1)
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if log_file is subprocess.PIPE:
        reader.join(timeout=5)
        output = "".join(output_chunks)
    else:
        log_file.close()
        output = Path(log_path).read_text(errors="replace")
    if stopped and stop_after_seconds is None and not low_memory:
        raise TimeoutError(f"{' '.join(map(str, command))} did not finish within {timeout_seconds} s")
    return {"seconds": seconds, "returncode": process.returncode, "stopped": stopped, "low_memory": low_memory,
            "load_average_1min": round(os.getloadavg()[0], 1),
            "max_rss_mb": max(usage.ru_maxrss / 1024, peak[1] / 2**20), "tree_peak_rss_mb": peak[0] / 2**20,
            "output": output}


def last_json(output):
    """The last line of `output` that parses as a JSON object (children report through it)."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def self_peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def markdown_table(rows, columns):
    """rows: list of dicts; columns: list of keys (header = key). Floats get 3 significant-ish digits."""
    def cell(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return "" if value is None else str(value)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def update_results(section, markdown, path=RESULTS_PATH):
    """Replace (or append) the section `section` of RESULTS.md with `markdown`."""
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = Path(path).read_text() if Path(path).is_file() else "# Benchmark results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    Path(path).write_text(text)
    print(f"updated section {section!r} of {path}")
