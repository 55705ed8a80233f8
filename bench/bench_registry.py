#!/usr/bin/env python3
"""Registry scale benchmark (not a test: it prints numbers).

10,000 adapters (rank 2, q_proj only, ~2.5 KB each) on a tiny synthetic base (the "tiny" shape
with SmolLM's tokenizer), with an adapter memory budget that holds ~500 of them:

1. populate by HTTP uploads (POST /v1/adapters from a thread pool); 100 sampled adapters'
   greedy outputs are measured right after their upload;
2. populate a fresh registry by --adapter-dir import at start-up (process start to /ready);
   the import is sequential, every adapter fsynced (45 s to 3 minutes for 10,000 here,
   depending on the disk's other traffic), so by default 3,000 of them are imported (the
   sampled ones included) and the time for all is extrapolated; --import-count 10000 imports
   them all;
3. restart on the uploaded registry: process start to /ready with 10,000 registered;
4. random traffic from concurrent clients over the 10,000, Zipf then uniform: throughput,
   latency, adapter loads and evictions, and the sampled adapters' outputs compared with
   those measured after upload (also on the imported registry).

Uses the test helpers (tests/e2e/conftest.py); the synthetic base and adapters come from
`$LORAMUX_BIN synth-model` / `synth-adapter`. Environment: LORAMUX_BIN, LORAMUX_FIXTURES (as
`make e2e-test`). A few minutes on 2 cores; --adapters and --requests scale it down.
"""
import argparse
import array
import bisect
import json
import math
import os
import pathlib
import random
import re
import shutil
import struct
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import conftest as C  # noqa: E402

PROMPT = "Once upon a time"
MAX_TOKENS = 8


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def st_parse(b):
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n])


def make_adapters(template, out, n):
    """n adapter directories like template (same config and tensor names and shapes), with
    seeded random F32 values. Returns their paths."""
    config = (template / "adapter_config.json").read_bytes()
    header = st_parse((template / "adapter_model.safetensors").read_bytes())
    keys = [k for k in header if k != "__metadata__"]
    shapes = [header[k]["shape"] for k in keys]
    counts = [math.prod(s) for s in shapes]
    h, off = {}, 0
    for k, s, c in zip(keys, shapes, counts):
        h[k] = {"dtype": "F32", "shape": s, "data_offsets": [off, off + 4 * c]}
        off += 4 * c
    hj = json.dumps(h).encode()
    hj += b" " * (-len(hj) % 8)
    prefix = struct.pack("<Q", len(hj)) + hj
    total = sum(counts)
    paths = []
    for i in range(n):
        d = out / f"a{i:05d}"
        paths.append(d)
        if (d / "adapter_model.safetensors").exists():
            continue
        d.mkdir(parents=True, exist_ok=True)
        rnd = random.Random(i)
        vals = array.array("f", (rnd.uniform(-1.0, 1.0) for _ in range(total)))
        if sys.byteorder != "little":
            vals.byteswap()
        (d / "adapter_config.json").write_bytes(config)
        (d / "adapter_model.safetensors").write_bytes(prefix + vals.tobytes())
    return paths


def greedy(srv, model):
    o = srv.completion(model=model, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0,
                       ignore_eos=True)
    return o["choices"][0]["text"]


def adapter_metrics(srv):
    m = srv.metrics()
    return {k: m.get(f"loramux_{k}", 0.0) for k in
            ("adapter_loads_total", "adapter_evictions_total", "adapters_resident",
             "adapter_bytes_resident", "adapter_load_seconds_sum", "adapter_load_seconds_count")}


def registry_log_line(srv):
    m = re.search(r"registry .*", srv.log())
    return m.group(0) if m else "?"


class Zipf:
    def __init__(self, n, s, rnd):
        w = [1.0 / (k + 1) ** s for k in range(n)]
        self.cdf = []
        acc = 0.0
        for x in w:
            acc += x
            self.cdf.append(acc)
        self.total = acc
        self.perm = list(range(n))
        rnd.shuffle(self.perm)  # popularity rank -> adapter index
        self.rnd = rnd

    def __call__(self):
        k = bisect.bisect_left(self.cdf, self.rnd.random() * self.total)
        return self.perm[min(k, len(self.perm) - 1)]


def traffic(srv, names, n_req, clients, pick, refs):
    """n_req completions over names chosen by pick(), from `clients` threads. Returns
    (seconds, latencies, mismatches [(name, got, want)], distinct adapters used)."""
    lock = threading.Lock()
    todo = [pick() for _ in range(n_req)]
    lat, bad, errors = [], [], []
    it = iter(todo)

    def client():
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                return
            name = names[i]
            t0 = time.monotonic()
            try:
                out = greedy(srv, name)
            except AssertionError as ex:
                with lock:
                    errors.append((name, str(ex)[:200]))
                continue
            dt = time.monotonic() - t0
            with lock:
                lat.append(dt)
                if name in refs and refs[name] != out:
                    bad.append((name, out, refs[name]))
    t0 = time.monotonic()
    ts = [threading.Thread(target=client) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.monotonic() - t0, lat, bad, errors, len(set(todo))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adapters", type=int, default=10000)
    ap.add_argument("--resident", type=int, default=500, help="adapters the budget holds")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--upload-threads", type=int, default=8)
    ap.add_argument("--sample", type=int, default=100)
    ap.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent (default 1.0)")
    ap.add_argument("--import-count", type=int, default=3000,
                    help="adapters imported with --adapter-dir (0: skip)")
    ap.add_argument("--workdir", help="keep models, adapters and logs here (default: temporary)")
    a = ap.parse_args()

    binary = os.environ.get("LORAMUX_BIN", str(ROOT / "build" / "loramux"))
    fixtures = pathlib.Path(os.environ.get("LORAMUX_FIXTURES", ROOT.parent / "shared" / "fixtures"))
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is not built (make build/loramux)")
    work = pathlib.Path(a.workdir or tempfile.mkdtemp(prefix="bench-registry-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "models").mkdir(exist_ok=True)
    models = C.Models(fixtures, binary, work / "models")
    factory = C.ServerFactory(binary, work)
    rows = []  # (what, value)
    rnd = random.Random(12345)
    t_start = time.monotonic()
    phases = []

    def phase(what):
        phases.append((what, time.monotonic()))

    t = time.monotonic()
    base = models.chat  # tiny shape, SmolLM tokenizer
    template = models.adapter(base, rank=2, targets="q", seed=1)
    # The client's copies of the adapters go to tmpfs when there is one (they are only read
    # by this script and by the --adapter-dir import; deleting 20,000 files from a busy disk
    # took longer than the whole benchmark). The registries stay on the disk.
    src = work / "adapters"
    if not a.workdir and os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free > 1 << 30:
        src = pathlib.Path(tempfile.mkdtemp(prefix="bench-registry-src-", dir="/dev/shm"))
    paths = make_adapters(template, src, a.adapters)
    names = [p.name for p in paths]
    per = sum(len(C.FilePart(paths[0] / f)) for f in C.UPLOAD_PARTS)
    rows.append(("adapters written (Python)", f"{a.adapters} x {per} B in "
                 f"{time.monotonic() - t:.1f} s"))
    sample = set(rnd.sample(names, min(a.sample, len(names))))
    os.sync()  # the adapters' dirty pages must not be flushed by the first timed fsync

    reg_up = work / "registry-upload"
    reg_imp = work / "registry-import"
    for d in (reg_up, reg_imp):
        shutil.rmtree(d, ignore_errors=True)
    try:
        # resident size of one adapter, for the budget. The budget is whole MiB, so the smallest
        # holds 1 MiB / size: fp32 factors (~2 KiB here) make that ~500 (bf16 would be ~1,000).
        dtype = ("--adapter-dtype", "fp32")
        probe = factory(base, *dtype)
        rb = C.upload_ok(probe, "probe", paths[0])["resident_bytes"]
        probe.stop()
        budget_mb = max(1, round(a.resident * rb / (1 << 20)))
        fits = budget_mb * (1 << 20) // rb
        rows.append(("budget", f"{budget_mb} MiB = {fits} adapters of {rb} B resident "
                     f"({dtype[1]} factors)"))
        flags = ("--adapter-memory-budget-mb", budget_mb, *dtype)

        # ---- 1a. populate by uploads ----
        phase("setup")
        srv = factory(base, "--registry-dir", reg_up, *flags)
        refs = {}
        lat = []
        lock = threading.Lock()

        def up(p):
            t0 = time.monotonic()
            r = C.upload(srv, p.name, p)
            dt = time.monotonic() - t0
            assert r.status == 201, (p.name, r)
            ref = greedy(srv, p.name) if p.name in sample else None
            with lock:
                lat.append(dt)
                if ref is not None:
                    refs[p.name] = ref
        t0 = time.monotonic()
        with ThreadPoolExecutor(a.upload_threads) as ex:
            list(ex.map(up, paths))
        dt = time.monotonic() - t0
        m = adapter_metrics(srv)
        total = srv.get("/v1/adapters?limit=1").json()["total"]
        assert total == a.adapters, total
        rows.append((f"upload {a.adapters} over HTTP ({a.upload_threads} threads)",
                     f"{dt:.1f} s, {a.adapters / dt:.0f}/s; latency p50 {pct(lat, 50) * 1e3:.1f} ms"
                     f", p99 {pct(lat, 99) * 1e3:.1f} ms"))
        rows.append(("  resident after uploads", f"{m['adapters_resident']:.0f} "
                     f"({m['adapter_bytes_resident'] / 1e6:.2f} MB), evictions "
                     f"{m['adapter_evictions_total']:.0f}"))
        distinct = len(set(refs.values()))
        rows.append(("  sample outputs after upload", f"{len(refs)} adapters, {distinct} distinct "
                     f"outputs ({MAX_TOKENS} greedy tokens)"))
        t0 = time.monotonic()
        r = srv.get("/v1/adapters?offset=5000&limit=1000")
        t_list = time.monotonic() - t0
        assert r.status == 200 and len(r.json()["data"]) == min(1000, max(0, a.adapters - 5000))
        t0 = time.monotonic()
        r = srv.get("/v1/models")
        t_models = time.monotonic() - t0
        assert r.status == 200 and len(r.json()["data"]) == a.adapters + 1
        rows.append(("  GET /v1/adapters (1,000 of them)", f"{t_list * 1e3:.0f} ms"))
        rows.append(("  GET /v1/models (all of them)", f"{t_models * 1e3:.0f} ms"))
        srv.stop()

        # ---- 2. populate by --adapter-dir import at start-up ----
        phase("uploads")
        k = min(a.import_count, a.adapters)
        if k > 0:
            imp = work / "adapters-import"
            shutil.rmtree(imp, ignore_errors=True)
            imp.mkdir()
            chosen = sorted(sample) + [n for n in names if n not in sample][:max(0, k - len(sample))]
            for n in chosen:
                (imp / n).symlink_to(src / n)
            os.sync()
            t0 = time.monotonic()
            srv = factory(base, "--adapter-dir", imp, "--registry-dir", reg_imp, *flags,
                          timeout=3600)
            dt = time.monotonic() - t0
            total = srv.get("/v1/adapters?limit=1").json()["total"]
            assert total == len(chosen), total
            est = "" if len(chosen) == a.adapters else \
                f" (~{dt * a.adapters / len(chosen):.0f} s for {a.adapters})"
            rows.append((f"import {len(chosen)} with --adapter-dir (start to /ready)",
                         f"{dt:.1f} s, {len(chosen) / dt:.0f}/s{est}"))
            bad = [n for n in sorted(sample) if greedy(srv, n) != refs[n]]
            rows.append(("  sample outputs vs after-upload", f"{len(sample) - len(bad)}/"
                         f"{len(sample)} equal"))
            srv.stop()
            t0 = time.monotonic()
            srv = factory(base, "--registry-dir", reg_imp, *flags, timeout=600)
            rows.append(("  restart of the imported registry", f"{time.monotonic() - t0:.2f} s"))
            srv.stop()

        # ---- 3. restart with 10,000 registered ----
        phase("import")
        os.sync()
        t0 = time.monotonic()
        srv = factory(base, "--registry-dir", reg_up, *flags, timeout=600)
        dt = time.monotonic() - t0
        rows.append((f"restart with {a.adapters} registered (start to /ready)",
                     f"{dt:.2f} s"))
        rows.append(("  server log", re.sub(r"registry \S+", "registry", registry_log_line(srv))))

        # ---- 4. random traffic ----
        phase("restart")
        bad, bad_after, errors = [], [], []
        for dist, pick in ((f"Zipf s={a.zipf:g}", Zipf(len(names), a.zipf, rnd)),
                           ("uniform", lambda: rnd.randrange(len(names)))):
            m0 = adapter_metrics(srv)
            dt, lat, b, e, used = traffic(srv, names, a.requests, a.clients, pick, refs)
            m1 = adapter_metrics(srv)
            bad += b
            errors += e
            loads = m1["adapter_loads_total"] - m0["adapter_loads_total"]
            ev = m1["adapter_evictions_total"] - m0["adapter_evictions_total"]
            n_load = m1["adapter_load_seconds_count"] - m0["adapter_load_seconds_count"]
            load_ms = (m1["adapter_load_seconds_sum"] - m0["adapter_load_seconds_sum"]) / \
                n_load * 1e3 if n_load else float("nan")
            rows.append((f"traffic: {a.requests} requests, {a.clients} clients, {dist}",
                         f"{dt:.1f} s, {a.requests / dt:.1f} req/s, {used} distinct adapters"))
            rows.append(("  latency (8 tokens)", f"p50 {pct(lat, 50) * 1e3:.1f} ms, "
                         f"p99 {pct(lat, 99) * 1e3:.1f} ms"))
            rows.append(("  adapter loads / evictions", f"{loads:.0f} / {ev:.0f} "
                         f"(hit rate {1 - loads / a.requests:.1%}); mean load {load_ms:.2f} ms"))
            rows.append(("  resident at the end", f"{m1['adapters_resident']:.0f} "
                         f"({m1['adapter_bytes_resident'] / 1e6:.2f} MB)"))
            rows.append(("  errors; sampled adapters hit with a wrong output",
                         f"{len(e)}; {len(b)}" + (f" e.g. {e[0]}" if e else "")))
        bad_after = [n for n in sorted(sample) if greedy(srv, n) != refs[n]]
        rows.append(("sample outputs after traffic vs after upload",
                     f"{len(sample) - len(bad_after)}/{len(sample)} equal"))
        srv.stop()
        phase("traffic")
    finally:
        try:
            factory.close()
        except AssertionError as ex:
            print(f"warning: {ex}", file=sys.stderr)
        t_clean = time.monotonic()
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
            if src.parent != work:
                shutil.rmtree(src, ignore_errors=True)
        phase("clean-up")

    w = max(len(r[0]) for r in rows)
    print(f"# registry bench: tiny base ({base.name}), rank-2 q_proj adapters")
    for what, val in rows:
        print(f"{what:<{w}}  {val}")
    t, spent = t_start, []
    for what, t1 in phases:
        spent.append(f"{what} {t1 - t:.0f} s")
        t = t1
    print(f"wall time {time.monotonic() - t_start:.0f} s: " + ", ".join(spent))
    if bad or bad_after or errors:
        sys.exit("FAILED: wrong outputs or errors (see above)")


if __name__ == "__main__":
    main()
