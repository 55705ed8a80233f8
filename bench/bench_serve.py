#!/usr/bin/env python3
"""Serving benchmark: aggregate decode and prefill speed, latency and memory of `loramux serve`
under closed-loop streaming load, on synthetic models of real shapes (not a test: it prints and
writes numbers).

For each model shape (SmolLM-135M, TinyLlama-1.1B; random weights, real tokenizers) and each
scenario, a fresh server is started, build/bench/loadgen drives it for a warm-up and then a
fixed measured window, and the server's peak RSS (VmHWM) is read. Scenarios:

  single        1 stream on the base model
  base-8/32     8 / 32 concurrent streams on the base
  prefill       1 stream of ~480-token prompts and 1 output token (prefill speed)
  lora-8/32     8 / 32 streams, each on its own rank-16 LoRA on all 7 projections
  zipf-1000     32 streams over 1,000 registered rank-16 q,v LoRAs, Zipf(s) popularity
  mixed-32      32 streams over LoRA, DoRA, MoRA and LoRA² adapters (8 each, rank 16, all 7)
  sweep-K       32 streams over K = 1, 2, 4, 8, 16 distinct LoRAs (K = 32 is lora-32)

--quick (the default of `make bench`) runs every SmolLM scenario and TinyLlama's single,
base-8, base-32 and prefill; without it (`make bench-full`, or BENCH_FULL=1) TinyLlama runs
every scenario too. Models and adapters are made once with `loramux synth-model` /
`synth-adapter` and cached in build/bench-cache/, with persistent adapter registries (the
1,000 Zipf adapters are uploaded once). The machine's DRAM read bandwidth (bench_membw) is
measured at the start and at the end of the run.

Outputs: build/bench/serve-results.json (everything, including each loadgen report and the
server's start-up lines about weights and kernels), build/bench/serve-results.md (one table
per shape with the targets), build/bench/serve-throughput.png (gnuplot: tok/s against
distinct adapters per step; skipped with a message when gnuplot is missing; `make bench-deps`
installs it).

Numbers on this 2-core shared VM move by up to ±40 % from minute to minute; the results record
the CPU time other processes took during each scenario ("other CPU"), a disturbed scenario is
run again (--busy-retries) and the least disturbed run is kept. Environment: LORAMUX_BIN,
LORAMUX_FIXTURES (as `make e2e-test`), LORAMUX_LOADGEN, LORAMUX_MEMBW (default
build/bench/loadgen, build/bench/bench_membw).
Exit status: 1 if a scenario could not run or requests failed (the outputs are written first).
"""
import argparse
import datetime
import hashlib
import json
import math
import os
import pathlib
import platform
import random
import re
import resource
import shlex
import shutil
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import conftest as C  # noqa: E402  (the e2e helpers: Server, upload, Metrics)

# ---- shapes, scenarios, targets ----

# Decode scenarios use short prompts so that their tok/s is mostly decode and compares with
# the decode targets: with 128-token prompts, 32 streams spend about half of their time in
# prefill even at the targets (whose TinyLlama prefill rate is below its 32-stream decode
# rate). Long prompts are the `prefill` scenario's.
SHAPES = {
    "smollm-135m": dict(label="SmolLM-135M", tokenizer="smollm-135m-instruct-lora-qv-r16",
                        warmup=10.0, duration=20.0, max_tokens=128, prompt_tokens=16),
    "tinyllama-1.1b": dict(label="TinyLlama-1.1B", tokenizer="tinyllama-tokenizer-json",
                           warmup=20.0, duration=40.0, max_tokens=128, prompt_tokens=16),
}

# Targets in tok/s (prefill: prompt tok/s), from the issue; lora-32 is held to 85 % of the
# base-32 run of the same shape in the same benchmark run.
TARGETS = {
    "tinyllama-1.1b": {"single": 15, "base-8": 100, "base-32": 200, "prefill": 150},
    "smollm-135m": {"single": 100, "base-8": 550, "base-32": 1200, "prefill": 1000},
}
DISTINCT_VS_BASE = 0.85

# A scenario during which other processes used more than this many cores is "disturbed": it
# is run again (--busy-retries) and flagged in the table.
BUSY_CORES = 0.25

SWEEP = (1, 2, 4, 8, 16, 32)
MIXED_METHODS = ("lora", "dora", "mora", "lora2")
PREFILL_PROMPT = 480  # tokens; under the default 512-token step budget, so one chunk
# Streams start evenly over this fraction of the warm-up: equal-length requests started at
# once would stay in lockstep (every round prefilled in one burst, then decode only).
RAMP_FRACTION = 0.75


def scenarios(zipf_n, zipf_s):
    """All scenarios in run order: dicts with name, desc, streams, kind and its parameters."""
    out = [
        dict(name="single", desc="1 stream, base", streams=1, kind="base"),
        dict(name="base-8", desc="8 streams, base", streams=8, kind="base"),
        dict(name="base-32", desc="32 streams, base", streams=32, kind="base"),
        dict(name="prefill", desc=f"1 stream, ~{PREFILL_PROMPT}-token prompts, 1 token out",
             streams=1, kind="base", prompt_tokens=PREFILL_PROMPT, max_tokens=1),
        dict(name="lora-8", desc="8 streams, 8 distinct r16 LoRAs (all 7 proj.)", streams=8,
             kind="lora", k=8),
        dict(name="lora-32", desc="32 streams, 32 distinct r16 LoRAs (all 7 proj.)",
             streams=32, kind="lora", k=32),
        dict(name=f"zipf-{zipf_n}", desc=f"32 streams, Zipf s={zipf_s:g} over {zipf_n} "
             "registered r16 q,v LoRAs", streams=32, kind="zipf"),
        dict(name="mixed-32", desc="32 streams, LoRA/DoRA/MoRA/LoRA² x 8 (r16, all 7)",
             streams=32, kind="mixed"),
    ]
    for k in SWEEP[:-1]:
        out.append(dict(name=f"sweep-{k}", desc=f"32 streams over {k} r16 LoRA"
                        f"{'s' if k > 1 else ''}", streams=32, kind="lora", k=k, sweep=k))
    return out


QUICK_TINYLLAMA = ("single", "base-8", "base-32", "prefill")

# Start-up log lines worth keeping in the results: weights, kernels, threads, memory.
STARTUP_RE = re.compile(r"(?i)openblas|kernel|weights|dtype|bf16|int8|fp32|avx|thread|"
                        r"engine ready|loaded in|kv cache|registry")


# ---- small helpers ----

def log(msg):
    print(msg, flush=True)


def pct_change(x, ref):
    return None if x is None or not ref else 100.0 * x / ref


def median(xs):
    xs = sorted(x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x)))
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def git_describe():
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def file_identity(path):
    """mtime and sha256 of a file: which binary was measured (the tree may be dirty)."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        return {"path": str(path), "sha256": digest,
                "mtime": datetime.datetime.fromtimestamp(st.st_mtime).astimezone()
                .isoformat(timespec="seconds")}
    except OSError as ex:
        return {"path": str(path), "error": str(ex)}


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def cpu_busy_seconds():
    """Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def fetch_metrics(srv):
    """The server's /metrics, or None if it does not answer (e.g. it died)."""
    try:
        r = srv.get("/metrics", timeout=30)
        return C.Metrics(r.text) if r.status == 200 else None
    except OSError:
        return None


class RssSampler(threading.Thread):
    """Polls /proc/PID/status while a scenario runs: the largest VmRSS seen, and VmHWM (the
    kernel's own peak, which also covers start-up) at the end."""

    def __init__(self, pid, interval=0.2):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.max_rss_kb = 0
        self.hwm_kb = None
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            v = proc_status_kb(self.pid, "VmRSS")
            if v:
                self.max_rss_kb = max(self.max_rss_kb, v)
            h = proc_status_kb(self.pid, "VmHWM")
            if h:
                self.hwm_kb = h
            self._halt.wait(self.interval)

    def finish(self):
        self._halt.set()
        self.join()
        h = proc_status_kb(self.pid, "VmHWM")
        if h:
            self.hwm_kb = h
        return self.hwm_kb, self.max_rss_kb


# ---- tools: loramux synth-*, loadgen, bench_membw ----

class Tools:
    def __init__(self, a):
        self.binary = os.environ.get("LORAMUX_BIN", str(ROOT / "build" / "loramux"))
        self.loadgen = os.environ.get("LORAMUX_LOADGEN", str(ROOT / "build" / "bench" / "loadgen"))
        self.membw = os.environ.get("LORAMUX_MEMBW", str(ROOT / "build" / "bench" / "bench_membw"))
        self.fixtures = pathlib.Path(os.environ.get("LORAMUX_FIXTURES",
                                                    ROOT.parent / "shared" / "fixtures"))
        for p, how in ((self.binary, "make build/loramux"),
                       (self.loadgen, "make build/bench/loadgen"),
                       (self.membw, "make build/bench/bench_membw")):
            if not os.access(p, os.X_OK):
                sys.exit(f"{p} is not built ({how})")
        # `loramux synth-model` / `synth-adapter`; before they existed the same options were
        # `loramux-synth model` / `adapter` (kept as a fallback).
        r = subprocess.run([self.binary, "synth-model", "--help"], capture_output=True,
                           text=True, timeout=60)
        if r.returncode == 0:
            self.synth = {k: [self.binary, f"synth-{k}"] for k in ("model", "adapter")}
        else:
            old = os.environ.get("LORAMUX_SYNTH", str(ROOT / "build" / "loramux-synth"))
            if not os.access(old, os.X_OK):
                sys.exit(f"{self.binary} has no synth-model command and {old} is not built")
            self.synth = {k: [old, k] for k in ("model", "adapter")}
        help_text = subprocess.run([self.binary, "serve", "--help"], capture_output=True,
                                   text=True, timeout=60).stdout
        self.serve_flags = {f: f in help_text for f in ("--weights", "--adapter-dtype",
                                                        "--threads")}

    def run_synth(self, kind, *args):
        cmd = self.synth[kind] + [str(x) for x in args]
        env = dict(os.environ, LORAMUX_FIXTURES=str(self.fixtures))
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed:\n{r.stderr}")

    def measure_membw(self):
        r = subprocess.run([self.membw], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            return {"error": r.stderr.strip()}
        return json.loads(r.stdout)


# ---- cached models and adapters ----

def cached_dir(path, recipe, make):
    """path holds what make(tmp_path) wrote for recipe (a string); remade if the recipe
    changed or a previous attempt did not finish (written to a temporary name first)."""
    marker = path / ".bench-recipe"
    if marker.is_file() and marker.read_text() == recipe:
        return path
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    make(tmp)
    (tmp / ".bench-recipe").write_text(recipe)
    tmp.rename(path)
    return path


class ShapeCache:
    """Model, adapters and registries of one shape under build/bench-cache/<shape>-<dtype>/."""

    def __init__(self, tools, root, shape, dtype):
        self.tools, self.shape, self.dtype = tools, shape, dtype
        self.dir = root / f"{shape}-{dtype}"
        self.tokenizer = tools.fixtures / SHAPES[shape]["tokenizer"]

    def model(self):
        args = ["--shape", self.shape, "--dtype", self.dtype, "--tokenizer-from", self.tokenizer,
                "--seed", 1]

        def make(d):
            log(f"   synthesising the {self.shape} model ({self.dtype}) in {d} ...")
            self.tools.run_synth("model", "--out", d, *args)
        return cached_dir(self.dir / "model", " ".join(map(str, args)), make)

    def adapter(self, method, seed, rank=16, targets="all", dtype="f32"):
        name = f"{method}-r{rank}-{targets.replace(',', '')}-{dtype}-s{seed}"
        args = ["--method", method, "--rank", rank, "--targets", targets, "--dtype", dtype,
                "--seed", seed]
        base = self.model()

        def make(d):
            self.tools.run_synth("adapter", "--base", base, "--out", d, *args)
        return name, cached_dir(self.dir / "adapters" / name, " ".join(map(str, args)), make)

    def lora_set(self, k):
        """The first k of the 32 rank-16 all-projection LoRAs: [(name, dir)]."""
        return [self.adapter("lora", s) for s in range(1, k + 1)]

    def mixed_set(self):
        """8 adapters of each method, interleaved so that round-robin streams mix them."""
        per = {m: [self.adapter(m, s) for s in range(1, 9)] for m in MIXED_METHODS}
        return [per[m][i] for i in range(8) for m in MIXED_METHODS]

    def registry(self, which):
        d = self.dir / f"registry-{which}"
        d.mkdir(parents=True, exist_ok=True)
        return d


def zipf_adapters(cache, n):
    """n distinct rank-16 q,v LoRAs (bf16 files) made from one synthesised template: the
    template's bytes with the first 16 values of every tensor replaced by seeded random ones,
    so each has its own content version (compute does not depend on the values). Returns
    [(name, config bytes, weights factory)]; the weights are made on demand."""
    _, tdir = cache.adapter("lora", 1000, targets="q,v", dtype="bf16")
    config = (tdir / "adapter_config.json").read_bytes()
    blob = (tdir / "adapter_model.safetensors").read_bytes()
    hlen = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + hlen])
    spots = []
    for k, v in header.items():
        if k == "__metadata__":
            continue
        size = {"BF16": 2, "F16": 2, "F32": 4}[v["dtype"]]
        spots.append((8 + hlen + v["data_offsets"][0], size, v["dtype"]))

    def weights(i):
        rnd = random.Random(i)
        b = bytearray(blob)
        for off, size, dt in spots:
            vals = [rnd.uniform(-0.05, 0.05) for _ in range(16)]
            if dt == "F32":
                raw = struct.pack("<16f", *vals)
            elif dt == "BF16":
                raw = b"".join(struct.pack("<f", x)[2:4] for x in vals)
            else:
                raw = struct.pack("<16e", *vals)
            b[off:off + 16 * size] = raw
        return bytes(b)
    return [(f"z{i:04d}", config, (lambda i=i: weights(i))) for i in range(n)]


def registered(srv):
    """{name: version} of every adapter in the server's registry."""
    out, off = {}, 0
    while True:
        r = srv.get(f"/v1/adapters?offset={off}&limit=1000")
        if r.status != 200:
            raise RuntimeError(f"GET /v1/adapters: {r}")
        o = r.json()
        for d in o["data"]:
            out[d["name"]] = d.get("version")
        off += len(o["data"])
        if not o["data"] or off >= o["total"]:
            return out


def ensure_registered(srv, items, threads=4):
    """Uploads the adapters of items [(name, config bytes, weights bytes or callable)] that
    the registry lacks (or holds with other bytes). Returns how many were uploaded."""
    have = registered(srv)
    todo = []
    for name, config, weights in items:
        if name in have:
            w = weights() if callable(weights) else weights
            if have[name] == C.adapter_version(config, w):
                continue
        todo.append((name, config, weights))
    if not todo:
        return 0
    log(f"   uploading {len(todo)} adapters to the registry ...")
    t0 = time.monotonic()

    def up(item):
        name, config, weights = item
        w = weights() if callable(weights) else weights
        r = C.upload(srv, name, config=config, weights=w, timeout=600)
        if r.status not in (200, 201):
            raise RuntimeError(f"upload of {name}: {r}")
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(up, todo))
    log(f"   ... {len(todo)} uploaded in {time.monotonic() - t0:.0f} s")
    return len(todo)


def dir_items(named_dirs):
    """[(name, config bytes, weights factory)] of adapter directories (read on demand)."""
    return [(n, (d / C.UPLOAD_PARTS[0]).read_bytes(),
             (lambda d=d: (d / C.UPLOAD_PARTS[1]).read_bytes())) for n, d in named_dirs]


# ---- one scenario ----

class Runner:
    def __init__(self, a, tools, out_dir):
        self.a, self.tools, self.out_dir = a, tools, out_dir
        self.log_dir = out_dir / "serve-logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LORAMUX_")}
        for kv in a.server_env:
            k, _, v = kv.partition("=")
            if v:
                self.env[k] = v
            else:
                self.env.pop(k, None)
        self.n_servers = 0
        self.verified = {}  # registry dir -> adapter names checked in this run

    def start_server(self, model, args, timeout=900):
        """A ready `loramux serve` (C.Server) on a free port; raises with its log if not."""
        args = [*args, *self.a.server_arg]
        for attempt in range(3):
            self.n_servers += 1
            srv = C.Server(self.tools.binary, model, args, self.env, self.log_dir,
                           f"serve{self.n_servers}")
            try:
                return srv.wait_ready(timeout)
            except AssertionError as ex:
                if srv.proc.poll() is None:
                    srv.proc.kill()
                srv.wait_exit(30)
                if "cannot listen" in srv.log() and attempt < 2:
                    continue
                raise RuntimeError(f"server did not start: {shlex.join(srv.cmd)}\n"
                                   f"{str(ex)[-3000:]}") from None

    def stop_server(self, srv):
        try:
            return srv.stop(timeout=60)
        except AssertionError as ex:
            log(f"   warning: {str(ex)[:500]}")
            return srv.returncode

    def server_log_lines(self, srv):
        """(start-up lines about weights/kernels, warnings and errors after start-up)."""
        startup, later, ready = [], [], False
        for line in srv.log().splitlines():
            msg = re.sub(r"^\S+Z loramux ", "", line)
            if not ready:
                if STARTUP_RE.search(msg) or " warn: " in line or " error: " in line:
                    startup.append(msg)
                ready = "engine ready" in line
            elif re.search(r"loramux (warn|error):", line) and "draining" not in line:
                later.append(msg)
        return startup, later

    def prepare(self, shape, sc, cache):
        """Makes (or finds in the cache) what scenario sc needs: the model, its adapters, and
        their registry, populated. Returns (model dir, model names for loadgen, server args,
        Zipf exponent or 0)."""
        a = self.a
        model = cache.model()
        names, reg, items, zipf_s = [], None, None, 0.0
        if sc["kind"] == "base":
            names = [shape]
        elif sc["kind"] == "lora":
            pairs = cache.lora_set(sc["k"])
            names, reg, items = [n for n, _ in pairs], "main", dir_items(pairs)
        elif sc["kind"] == "mixed":
            pairs = cache.mixed_set()
            names, reg, items = [n for n, _ in pairs], "main", dir_items(pairs)
        elif sc["kind"] == "zipf":
            items = zipf_adapters(cache, a.zipf_adapters)
            names, reg, zipf_s = [n for n, _, _ in items], "zipf", a.zipf_s
        args = ["--model-name", shape]
        if reg:
            args += ["--registry-dir", cache.registry(reg)]
            if sc["kind"] == "zipf" and a.zipf_budget_mb:
                args += ["--adapter-memory-budget-mb", a.zipf_budget_mb]
            seen = self.verified.setdefault(str(cache.registry(reg)), set())
            if not set(names) <= seen:
                # Populate first, in a server of its own, so that uploads are not in the
                # measured server's memory or time.
                srv = self.start_server(model, args)
                try:
                    ensure_registered(srv, items)
                finally:
                    self.stop_server(srv)
                seen.update(names)
        return model, names, args, zipf_s

    def run(self, shape, sc, cache):
        """Runs scenario sc once; returns its record (or raises)."""
        a = self.a
        model, names, args, zipf_s = self.prepare(shape, sc, cache)
        warmup = a.warmup if a.warmup is not None else SHAPES[shape]["warmup"]
        duration = a.duration if a.duration is not None else SHAPES[shape]["duration"]
        max_tokens = sc.get("max_tokens") or a.max_tokens or SHAPES[shape]["max_tokens"]
        prompt = sc.get("prompt_tokens") or a.prompt_tokens or SHAPES[shape]["prompt_tokens"]
        names_file = self.log_dir / f"models-{shape}-{sc['name']}.txt"
        names_file.write_text("\n".join(names) + "\n")

        t_start = time.monotonic()
        srv = self.start_server(model, args)
        startup_s = time.monotonic() - t_start
        rec = {"scenario": sc["name"], "server_cmd": shlex.join(srv.cmd),
               "server_start_s": round(startup_s, 2)}
        try:
            cmd = [self.tools.loadgen, "--host", srv.host, "--port", str(srv.port),
                   "--concurrency", str(sc["streams"]), "--models-file", str(names_file),
                   "--warmup", str(warmup), "--duration", str(duration),
                   "--max-tokens", str(max_tokens), "--prompt-tokens", str(prompt),
                   "--seed", str(a.seed), "--ramp", str(round(RAMP_FRACTION * warmup, 2))]
            if zipf_s:
                cmd += ["--zipf", str(zipf_s)]
            m0 = fetch_metrics(srv)
            sampler = RssSampler(srv.proc.pid)
            sampler.start()
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            self0 = resource.getrusage(resource.RUSAGE_SELF)
            busy0, srv0, t0 = cpu_busy_seconds(), proc_cpu_seconds(srv.proc.pid), time.monotonic()
            r = subprocess.run(cmd, capture_output=True, text=True,
                               timeout=warmup + duration + 300)
            busy1, srv1, t1 = cpu_busy_seconds(), proc_cpu_seconds(srv.proc.pid), time.monotonic()
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            self1 = resource.getrusage(resource.RUSAGE_SELF)
            hwm_kb, max_rss_kb = sampler.finish()
            m1 = fetch_metrics(srv)
            if r.returncode != 0:
                raise RuntimeError(f"loadgen failed ({r.returncode}): {shlex.join(cmd)}\n"
                                   f"{r.stderr}")
            lg = json.loads(r.stdout)
        finally:
            rc = self.stop_server(srv)
        dt = t1 - t0
        lg_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        self_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
        srv_cpu = (srv1 - srv0) if srv0 is not None and srv1 is not None else None
        other = None
        if srv_cpu is not None:
            other = max(0.0, (busy1 - busy0) - srv_cpu - lg_cpu - self_cpu) / dt
        startup, later = self.server_log_lines(srv)

        def delta(name):
            if m0 is None or m1 is None:
                return None
            x0, x1 = m0.get(name), m1.get(name)
            return None if x0 is None or x1 is None else x1 - x0

        def mean_of(hist):
            s, n = delta(hist + "_sum"), delta(hist + "_count")
            return s / n if s is not None and n else None
        rec.update({
            "description": sc["desc"], "streams": sc["streams"], "models": len(names),
            "zipf_s": zipf_s or None, "max_tokens": max_tokens, "prompt_words": prompt,
            "warmup_s": warmup, "duration_s": duration,
            "loadgen": lg, "loadgen_cmd": shlex.join(cmd),
            "peak_rss_mib": hwm_kb / 1024 if hwm_kb else None,
            "max_sampled_rss_mib": max_rss_kb / 1024 if max_rss_kb else None,
            "server_cpu_cores": srv_cpu / dt if srv_cpu is not None else None,
            "loadgen_cpu_cores": lg_cpu / dt, "other_cpu_cores": other,
            "server_exit_code": rc,
            "engine": {  # over warm-up and window together
                "mean_step_adapters": mean_of("loramux_engine_step_adapters"),
                "mean_step_tokens": mean_of("loramux_engine_step_tokens"),
                "mean_step_ms": (lambda v: v * 1e3 if v is not None else None)(
                    mean_of("loramux_engine_step_seconds")),
                "adapter_loads": delta("loramux_adapter_loads_total"),
                "adapter_evictions": delta("loramux_adapter_evictions_total"),
                "adapters_resident_end": m1.get("loramux_adapters_resident") if m1 else None,
            },
            "server_startup_log": startup, "server_warnings": later[:50],
        })
        if rc not in (0, None):  # crashed, or did not stop cleanly: keep its last words
            rec["server_log_tail"] = srv.log().splitlines()[-30:]
            rec["server_warnings"].append(f"server exit code {rc} (log: {srv.stderr_path})")
        return rec


def run_undisturbed(runner, a, shape, sc, cache):
    """runner.run(), again up to --busy-retries times while other processes took more than
    BUSY_CORES during it; returns the least disturbed attempt, with the others summarised."""
    attempts = []
    for i in range(a.busy_retries + 1):
        rec = runner.run(shape, sc, cache)
        attempts.append(rec)
        other = rec["other_cpu_cores"]
        if other is None or other <= BUSY_CORES or i == a.busy_retries:
            break
        log(f"   {sc['name']}: other processes used {other:.2f} cores; again in 15 s")
        time.sleep(15)
    best = min(attempts, key=lambda r: r["other_cpu_cores"] or 0.0)
    best["disturbed_attempts"] = [
        {"other_cpu_cores": r["other_cpu_cores"], "decode_tok_s": r["loadgen"]["decode_tok_s"],
         "prefill_tok_s": r["loadgen"]["prefill_tok_s"]} for r in attempts if r is not best]
    return best


def summarize(runs):
    """The scenario's figures: medians over its repetitions."""
    def m(f):
        return median([f(r) for r in runs])
    lg = [r["loadgen"] for r in runs]
    return {
        "decode_tok_s": median([x["decode_tok_s"] for x in lg]),
        "prefill_tok_s": median([x["prefill_tok_s"] for x in lg]),
        "prompt_tok_s": median([x["prompt_tok_s"] for x in lg]),
        "ttft_p50_ms": median([x["ttft_ms"]["p50"] for x in lg]),
        "ttft_p99_ms": median([x["ttft_ms"]["p99"] for x in lg]),
        "itl_p50_ms": median([x["itl_ms"]["p50"] for x in lg]),
        "itl_p99_ms": median([x["itl_ms"]["p99"] for x in lg]),
        "tpot_p50_ms": median([x["tpot_ms"]["p50"] for x in lg]),
        "requests_done": sum(x["requests_done"] for x in lg),
        "errors": sum(x["errors"] for x in lg),
        "peak_rss_mib": m(lambda r: r["peak_rss_mib"]),
        "load_rss_mib": m(lambda r: r["max_sampled_rss_mib"]),
        "other_cpu_cores": m(lambda r: r["other_cpu_cores"]),
        "mean_step_adapters": m(lambda r: r["engine"]["mean_step_adapters"]),
        "repeats": len(runs),
    }


def target_of(shape, name, by_name):
    """(target value, which metric, label) or None."""
    t = TARGETS.get(shape, {})
    if name in t:
        metric = "prefill_tok_s" if name == "prefill" else "decode_tok_s"
        unit = "prefill tok/s" if name == "prefill" else "tok/s"
        return t[name], metric, f"≥{t[name]:g} {unit}"
    if name == "lora-32" and "base-32" in by_name:
        base = by_name["base-32"]["summary"]["decode_tok_s"]
        if base:
            return DISTINCT_VS_BASE * base, "decode_tok_s", \
                f"≥{DISTINCT_VS_BASE:.0%} of base-32 ({DISTINCT_VS_BASE * base:.0f})"
    return None


# ---- outputs ----

def fmt(x, nd=0):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{nd}f}"


def pair(a_, b_, nd=0):
    return f"{fmt(a_, nd)} / {fmt(b_, nd)}"


def write_markdown(path, res):
    L = []
    meta = res["meta"]
    L.append("# loramux serving benchmark")
    L.append("")
    lm = meta["loramux"]
    L.append(f"{meta['date']}, commit {meta['commit']}, `{meta['command']}`  ")
    L.append(f"Server binary: {lm.get('path')} (built {lm.get('mtime', '?')}, sha256 "
             f"{lm.get('sha256', '?')[:12]}).  ")
    L.append(f"Machine: {meta['cpu']}, {meta['cores']} cores. DRAM read bandwidth "
             f"(bench_membw, 1 GiB, median GB/s, 1 / 2 threads): "
             + "; ".join(f"{k} {fmt(v.get('gbps_1t'), 1)} / {fmt(v.get('gbps_2t'), 1)}"
                         for k, v in res["membw"].items() if isinstance(v, dict)) + ".  ")
    env = meta["server_env"]
    overrides = meta["server_env_overrides"]
    L.append(f"Server args: `{' '.join(meta['server_args']) or '(defaults)'}`; "
             f"OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE', 'unset')}"
             + (f"; env overrides: {', '.join(overrides)}" if overrides else "") + ".")
    L.append("")
    L.append("tok/s: aggregate generated tokens per second in the measured window. Prefill "
             "tok/s: Σ prompt tokens ÷ Σ TTFT (one stream: the prefill speed; under "
             "concurrency a lower bound). ITL: gap between consecutive streamed tokens. "
             "Peak RSS: the server's VmHWM (start-up included: loading and converting the "
             "checkpoint); RSS under load: the largest VmRSS sampled during the load test. "
             "Each figure is one fixed window after a warm-up "
             "(median over repeats if --repeat > 1); on this shared 2-core VM expect ±40 % "
             "between runs. \"other CPU\" flags scenarios during which other processes used "
             f"more than {BUSY_CORES} of a core (each is run up to --busy-retries more times "
             "and the least disturbed run kept).")
    for shape, sres in res["shapes"].items():
        L.append("")
        sh = SHAPES[shape]
        L.append(f"## {sh['label']} shape ({sres['model_dtype']} checkpoint, random weights)")
        L.append("")
        if sres.get("error"):
            L.append(f"**Not run:** {sres['error']}")
            continue
        r0 = next((r for s in sres["scenarios"] for r in s.get("runs", [])
                   if s["scenario"] != "prefill"), None)
        if r0:
            L.append(f"Prompts of ~{r0['prompt_words']} tokens, {r0['max_tokens']} tokens out "
                     f"(ignore_eos, greedy); per scenario a {r0['warmup_s']:g} s warm-up, "
                     f"then a {r0['duration_s']:g} s window.")
            L.append("")
        if sres.get("startup_log"):
            L.append("Server start-up (weights, kernels):")
            L.append("")
            L.append("```")
            L.extend(sres["startup_log"])
            L.append("```")
            L.append("")
        L.append("| scenario | tok/s | prefill tok/s | TTFT p50/p99 ms | ITL p50/p99 ms | "
                 "peak RSS MiB | RSS under load MiB | target | % of target |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---|---:|")
        by = {s["scenario"]: s for s in sres["scenarios"]}
        notes = []
        for s in sres["scenarios"]:
            name = s["scenario"]
            if s.get("error") or not s.get("summary"):  # failed, or interrupted
                L.append(f"| {name}: {s['description']} | "
                         f"{'failed' if s.get('error') else 'not finished'} | | | | | | | |")
                if s.get("error"):
                    notes.append(f"{name}: {s['error'].splitlines()[0][:300]}")
                continue
            m = s["summary"]
            t = s.get("target")
            tgt = t["label"] if t else ""
            pc = fmt(t["percent"]) + " %" if t and t["percent"] is not None else ""
            flag = ""
            if m["errors"]:
                flag += f" ⚠ {m['errors']} errors"
            if m["other_cpu_cores"] and m["other_cpu_cores"] > BUSY_CORES:
                flag += f" (other CPU {m['other_cpu_cores']:.1f} cores)"
            L.append(f"| {name}: {s['description']}{flag} | {fmt(m['decode_tok_s'])} | "
                     f"{fmt(m['prefill_tok_s'])} | {pair(m['ttft_p50_ms'], m['ttft_p99_ms'])} | "
                     f"{pair(m['itl_p50_ms'], m['itl_p99_ms'], 1)} | {fmt(m['peak_rss_mib'])} | "
                     f"{fmt(m['load_rss_mib'])} | {tgt} | {pc} |")
            for run in s["runs"]:
                if run["loadgen"].get("first_error"):
                    notes.append(f"{name}: first error: {run['loadgen']['first_error'][:300]}")
                if run.get("server_exit_code") not in (0, None):
                    notes.append(f"{name}: server exit code {run['server_exit_code']}")
                for w in run.get("server_warnings", [])[:3]:
                    notes.append(f"{name}: server log: {w[:300]}")
        sw = [(k, by[f"sweep-{k}" if k < 32 else "lora-32"]["summary"])
              for k in SWEEP if (f"sweep-{k}" if k < 32 else "lora-32") in by
              and by[f"sweep-{k}" if k < 32 else "lora-32"].get("summary")]
        if sw:
            L.append("")
            L.append("Distinct adapters per step (32 streams; measured mean adapters per "
                     "engine step in brackets): " + ", ".join(
                         f"{k}: {fmt(m['decode_tok_s'])} tok/s "
                         f"[{fmt(m['mean_step_adapters'], 1)}]" for k, m in sw)
                     + (f"; base-32: {fmt(by['base-32']['summary']['decode_tok_s'])} tok/s"
                        if by.get("base-32", {}).get("summary") else "") + ".")
        if notes:
            L.append("")
            L.append("Notes:")
            L.extend(f"- {n}" for n in notes)
    if res.get("plot"):
        L.append("")
        L.append(f"Plot: {res['plot']}")
    path.write_text("\n".join(L) + "\n")


def write_plot(out_dir, res):
    """serve-throughput.png with gnuplot; returns a message for the log and the results."""
    series = []
    for shape, sres in res["shapes"].items():
        by = {s["scenario"]: s for s in sres.get("scenarios", []) if s.get("summary")}
        pts = []
        for k in SWEEP:
            s = by.get(f"sweep-{k}" if k < 32 else "lora-32")
            if s and s["summary"]["decode_tok_s"] is not None:
                pts.append((k, s["summary"]["decode_tok_s"]))
        if len(pts) >= 2:
            base = by.get("base-32", {}).get("summary", {}).get("decode_tok_s")
            series.append((shape, pts, base))
    if not series:
        return "plot skipped: no sweep results"
    gp = shutil.which("gnuplot")
    if not gp:
        return "plot skipped: gnuplot not found (`make bench-deps` installs gnuplot-nox)"
    dat = out_dir / "serve-throughput.dat"
    lines = []
    for shape, pts, base in series:
        lines.append(f"# {shape}")
        lines += [f"{k} {v:.2f}" for k, v in pts]
        lines += ["", ""]
    dat.write_text("\n".join(lines))
    png = out_dir / "serve-throughput.png"
    plots = []
    for i, (shape, pts, base) in enumerate(series):
        label = SHAPES[shape]["label"]
        plots.append(f"'{dat}' index {i} using 1:2 with linespoints lw 2 pt 7 lc {i + 1} "
                     f"title '{label}, 32 streams over K adapters'")
        if base:
            plots.append(f"{base:.2f} with lines dt 2 lc {i + 1} title '{label} base, 32 streams'")
            plots.append(f"{DISTINCT_VS_BASE * base:.2f} with lines dt 3 lc {i + 1} "
                         f"title '{label} target ({DISTINCT_VS_BASE:.0%} of base)'")
    script = "\n".join([
        "set terminal pngcairo size 960,600 noenhanced" if _has_cairo(gp) else
        "set terminal png size 960,600 noenhanced",
        f"set output '{png}'",
        "set title 'loramux: aggregate decode throughput vs distinct adapters per step'",
        "set xlabel 'distinct rank-16 LoRA adapters among the 32 streams'",
        "set ylabel 'tokens/s (aggregate)'",
        "set logscale x 2", "set xrange [0.8:40]", "set yrange [0:*]", "set grid",
        "set key outside bottom center horizontal maxrows 3",
        "plot " + ", ".join(plots),
    ])
    (out_dir / "serve-throughput.gp").write_text(script + "\n")
    r = subprocess.run([gp, str(out_dir / "serve-throughput.gp")], capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        return f"plot failed: {r.stderr.strip()[:300]}"
    return str(png)


def _has_cairo(gp):
    r = subprocess.run([gp, "-e", "set terminal"], capture_output=True, text=True, timeout=30)
    return "pngcairo" in (r.stdout + r.stderr)


# ---- main ----

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="smollm-135m,tinyllama-1.1b",
                    help="comma-separated: smollm-135m, tinyllama-1.1b (default both)")
    ap.add_argument("--quick", action="store_true",
                    help="TinyLlama: only single, base-8, base-32 and prefill")
    ap.add_argument("--scenarios", default="",
                    help="comma-separated scenario names or prefixes (e.g. base,sweep); "
                    "default all")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--prepare", action="store_true",
                    help="only make and cache the models, adapters and registries of the "
                    "selected scenarios (no measurement)")
    ap.add_argument("--warmup", type=float, help="seconds (default: SmolLM 10, TinyLlama 20); "
                    f"the streams start evenly over its first {RAMP_FRACTION:.0%}".replace("%", "%%"))
    ap.add_argument("--duration", type=float,
                    help="measured seconds (default: SmolLM 20, TinyLlama 40)")
    ap.add_argument("--max-tokens", type=int,
                    help="max_tokens (default 128)")
    ap.add_argument("--prompt-tokens", type=int,
                    help="prompt length of the decode scenarios (default 16)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per scenario; figures are medians over them")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--busy-retries", type=int, default=2,
                    help=f"runs of a scenario again (after 15 s) while other processes used "
                    f"more than {BUSY_CORES} cores during it (default 2); the least disturbed "
                    "run is kept")
    ap.add_argument("--model-dtype", default="f32", choices=("f32", "bf16", "f16"),
                    help="storage dtype of the synthetic checkpoints (default f32)")
    ap.add_argument("--zipf-adapters", type=int, default=1000)
    ap.add_argument("--zipf-s", type=float, default=1.0, help="Zipf exponent (default 1.0)")
    ap.add_argument("--zipf-budget-mb", type=int, default=0,
                    help="--adapter-memory-budget-mb of the Zipf scenario (default 0: none)")
    ap.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for every `loramux serve`, e.g. "
                    "--server-arg=--weights=bf16 (repeatable)")
    ap.add_argument("--server-env", action="append", default=[], metavar="K=V",
                    help="environment of the server (K= removes K), e.g. "
                    "--server-env OPENBLAS_CORETYPE=SkylakeX (repeatable)")
    ap.add_argument("--out-dir", default=str(ROOT / "build" / "bench"))
    ap.add_argument("--cache-dir", default=str(ROOT / "build" / "bench-cache"))
    a = ap.parse_args()

    shapes = [s.strip() for s in a.shapes.split(",") if s.strip()]
    for s in shapes:
        if s not in SHAPES:
            sys.exit(f"unknown shape {s} (known: {', '.join(SHAPES)})")
    all_sc = scenarios(a.zipf_adapters, a.zipf_s)
    wanted = [w.strip() for w in a.scenarios.split(",") if w.strip()]

    def selected(shape, sc):
        if wanted and not any(sc["name"] == w or sc["name"].startswith(w) for w in wanted):
            return False
        return not (a.quick and shape == "tinyllama-1.1b" and sc["name"] not in QUICK_TINYLLAMA)
    plan = {s: [sc for sc in all_sc if selected(s, sc)] for s in shapes}
    if a.list:
        for s, scs in plan.items():
            for sc in scs:
                print(f"{s:16} {sc['name']:12} {sc['desc']}")
        return 0

    tools = Tools(a)
    out_dir = pathlib.Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_root = pathlib.Path(a.cache_dir)
    json_path, md_path = out_dir / "serve-results.json", out_dir / "serve-results.md"
    runner = Runner(a, tools, out_dir)
    res = {
        "meta": {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "commit": git_describe(), "command": shlex.join(sys.argv),
            "cpu": cpu_model(), "cores": os.cpu_count(),
            "loramux": file_identity(tools.binary), "synth": " ".join(tools.synth["model"]),
            "server_args": a.server_arg, "server_env_overrides": a.server_env,
            "server_env": {k: runner.env[k] for k in runner.env if k.startswith("OPENBLAS")},
            "serve_flags_available": tools.serve_flags,
            "quick": a.quick, "repeat": a.repeat,
        },
        "membw": {}, "shapes": {},
    }

    def save():
        json_path.write_text(json.dumps(res, indent=1))
        write_markdown(md_path, res)

    if a.prepare:
        for shape in shapes:
            cache = ShapeCache(tools, cache_root, shape, a.model_dtype)
            for sc in plan[shape]:
                t0 = time.monotonic()
                runner.prepare(shape, sc, cache)
                log(f"{shape} {sc['name']}: ready ({time.monotonic() - t0:.0f} s)")
        return 0

    log("== DRAM read bandwidth (bench_membw)")
    res["membw"]["start"] = tools.measure_membw()
    log(f"   {res['membw']['start']}")
    failed = []
    t_all = time.monotonic()
    try:
        for shape in shapes:
            cache = ShapeCache(tools, cache_root, shape, a.model_dtype)
            sres = res["shapes"][shape] = {"model_dtype": a.model_dtype, "scenarios": []}
            log(f"== {SHAPES[shape]['label']} shape: {len(plan[shape])} scenarios")
            try:
                sres["model_dir"] = str(cache.model())
            except (RuntimeError, OSError, subprocess.SubprocessError) as ex:
                sres["error"] = str(ex)
                failed.append(f"{shape}: {ex}")
                save()
                continue
            by_name = {}
            for sc in plan[shape]:
                entry = {"scenario": sc["name"], "description": sc["desc"], "runs": []}
                sres["scenarios"].append(entry)
                by_name[sc["name"]] = entry
                t0 = time.monotonic()
                try:
                    for _ in range(a.repeat):
                        entry["runs"].append(run_undisturbed(runner, a, shape, sc, cache))
                except (RuntimeError, OSError, subprocess.SubprocessError, ValueError,
                        KeyError) as ex:
                    entry["error"] = str(ex)
                    failed.append(f"{shape} {sc['name']}: {str(ex)[:2000]}")
                    log(f"   {sc['name']}: FAILED: {str(ex)[:2000]}")
                    save()
                    continue
                m = entry["summary"] = summarize(entry["runs"])
                t = target_of(shape, sc["name"], by_name)
                if t:
                    val = m[t[1]]
                    entry["target"] = {"value": t[0], "metric": t[1], "label": t[2],
                                       "percent": pct_change(val, t[0])}
                if not sres.get("startup_log"):
                    sres["startup_log"] = entry["runs"][0]["server_startup_log"]
                if m["errors"]:
                    first = next((r["loadgen"]["first_error"] for r in entry["runs"]
                                  if r["loadgen"].get("first_error")), "")
                    failed.append(f"{shape} {sc['name']}: {m['errors']} failed requests; "
                                  f"first: {first}")
                tg = entry.get("target")
                log(f"   {sc['name']:10} {fmt(m['decode_tok_s']):>7} tok/s, prefill "
                    f"{fmt(m['prefill_tok_s']):>6} tok/s, TTFT p50/p99 "
                    f"{pair(m['ttft_p50_ms'], m['ttft_p99_ms'])} ms, ITL p50/p99 "
                    f"{pair(m['itl_p50_ms'], m['itl_p99_ms'], 1)} ms, RSS "
                    f"{fmt(m['peak_rss_mib'])} MiB, {m['requests_done']} requests, "
                    f"{m['errors']} errors, other CPU {fmt(m['other_cpu_cores'], 2)}"
                    + (f"; {fmt(tg['percent'])} % of {tg['label']}" if tg else "")
                    + f" [{time.monotonic() - t0:.0f} s]")
                save()
    finally:
        log("== DRAM read bandwidth again")
        res["membw"]["end"] = tools.measure_membw()
        log(f"   {res['membw']['end']}")
        res["meta"]["wall_s"] = round(time.monotonic() - t_all)
        res["plot"] = write_plot(out_dir, res)
        log(f"== {res['plot']}")
        save()
        log(f"== results: {json_path}, {md_path} ({res['meta']['wall_s']} s)")
    if failed:
        print("FAILED:\n" + "\n".join(f"- {f}" for f in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
