#!/usr/bin/env python3
"""Adapter upload benchmarks (not tests: they print numbers).

1. Upload-to-servable latency: a rank-16 adapter on every projection of the SmolLM-135M-shaped
   synthetic base (~20 MB) is uploaded with POST /v1/adapters; the time runs from the start
   of the POST to the end of the first successful completion (1 token) with it. Each run
   uploads different bytes under a new name, so every run stores and validates a new version.
2. First-request penalty of a non-resident adapter: the server restarts on the same registry
   with an adapter memory budget that holds ~3 of these adapters; time to first token of a
   streamed request whose adapter was evicted (round-robin over all of them) against one whose
   adapter is resident (the same adapter again).

Uses the test helpers (tests/e2e/conftest.py) for the server, the synthetic model and the
multipart upload; the synthetic model and adapters come from `$LORAMUX_BIN synth-model` /
`synth-adapter`. Environment: LORAMUX_BIN, LORAMUX_FIXTURES (as `make e2e-test`). Takes about a
minute on 2 cores.
"""
import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import conftest as C  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ms(x):
    return f"{x * 1e3:8.1f}"


def ttft(srv, model, prompt="Hello"):
    """Seconds from sending a streamed request to its first token; the rest is drained."""
    t0 = time.monotonic()
    st = srv.stream("/v1/completions", dict(model=model, prompt=prompt, max_tokens=2,
                                            temperature=0, ignore_eos=True))
    assert st.status == 200, st.status
    ev = st.next_event()
    t1 = time.monotonic()
    assert ev is not None, st.lines
    st.read_all()
    st.close()
    return t1 - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="upload-to-servable runs")
    ap.add_argument("--requests", type=int, default=50, help="requests per TTFT series")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--fit", type=float, default=3.5,
                    help="adapters the budget holds in the TTFT part")
    ap.add_argument("--workdir", help="keep models and logs here (default: temporary)")
    a = ap.parse_args()

    binary = os.environ.get("LORAMUX_BIN", str(ROOT / "build" / "loramux"))
    fixtures = pathlib.Path(os.environ.get("LORAMUX_FIXTURES", ROOT.parent / "shared" / "fixtures"))
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is not built (make build/loramux)")
    work = pathlib.Path(a.workdir or tempfile.mkdtemp(prefix="bench-upload-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "models").mkdir(exist_ok=True)
    models = C.Models(fixtures, binary, work / "models")
    factory = C.ServerFactory(binary, work)
    t = time.monotonic()
    base = models.big
    adapters = [models.adapter(base, rank=a.rank, targets="all", seed=1000 + i)
                for i in range(a.runs)]
    size = sum(len(C.FilePart(d / f)) for d in adapters[:1] for f in C.UPLOAD_PARTS)
    print(f"# base {base.name} (SmolLM-135M shape, fp32), {a.runs} rank-{a.rank} "
          f"all-projection adapters of {size / 1e6:.1f} MB each; setup {time.monotonic() - t:.1f} s")
    reg = work / "registry"
    shutil.rmtree(reg, ignore_errors=True)
    try:
        # ---- 1. upload to servable ----
        srv = factory(base, "--registry-dir", reg)
        base_lat = []
        for _ in range(5):
            t0 = time.monotonic()
            srv.completion(prompt="Hello", max_tokens=1, temperature=0)
            base_lat.append(time.monotonic() - t0)
        total, post, first = [], [], []
        resident_bytes = 0
        for i, d in enumerate(adapters):
            name = f"up{i}"
            t0 = time.monotonic()
            r = C.upload(srv, name, d)
            t1 = time.monotonic()
            assert r.status == 201, r
            resident_bytes = r.json()["resident_bytes"]
            srv.completion(model=name, prompt="Hello", max_tokens=1, temperature=0)
            t2 = time.monotonic()
            total.append(t2 - t0)
            post.append(t1 - t0)
            first.append(t2 - t1)
        srv.stop()

        # ---- 2. first-request penalty ----
        budget_mb = max(1, int(a.fit * resident_bytes / (1 << 20)))
        srv = factory(base, "--registry-dir", reg, "--adapter-memory-budget-mb", budget_mb)
        names = [f"up{i}" for i in range(a.runs)]
        m0 = srv.metrics()
        miss = []
        for k in range(a.requests):  # round-robin: the LRU victim is always the next one
            miss.append(ttft(srv, names[k % len(names)]))
        m1 = srv.metrics()
        hot = names[0]
        ttft(srv, hot)  # make it resident
        m1b = srv.metrics()
        hit = []
        for _ in range(a.requests):
            hit.append(ttft(srv, hot))
        m2 = srv.metrics()
        base_ttft = [ttft(srv, srv.model_id) for _ in range(10)]
        srv.stop()
    finally:
        try:
            factory.close()
        except AssertionError as ex:
            print(f"warning: {ex}", file=sys.stderr)
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)

    loads_miss = m1.get("loramux_adapter_loads_total") - m0.get("loramux_adapter_loads_total")
    loads_hit = m2.get("loramux_adapter_loads_total") - m1b.get("loramux_adapter_loads_total")
    ev = m2.get("loramux_adapter_evictions_total") - m0.get("loramux_adapter_evictions_total")

    print()
    print("upload to servable (POST start -> first completion done), "
          f"{a.runs} runs, ms")
    print(f"{'':34}{'p50':>8} {'min':>8} {'max':>8}")
    for label, xs in (("total", total), ("  POST (stream, validate, commit)", post),
                      ("  first completion (1 token)", first),
                      ("base model completion (1 token)", base_lat)):
        print(f"{label:34}{ms(pct(xs, 50))} {ms(min(xs))} {ms(max(xs))}")
    print()
    print(f"time to first token, budget {budget_mb} MiB (~{a.fit:g} adapters of "
          f"{resident_bytes / 1e6:.1f} MB resident), {a.requests} requests each, ms")
    print(f"{'':34}{'p50':>8} {'p99':>8} {'max':>8}  loads")
    print(f"{'evicted adapter (round-robin)':34}{ms(pct(miss, 50))} {ms(pct(miss, 99))} "
          f"{ms(max(miss))}  {loads_miss:.0f}")
    print(f"{'resident adapter (same again)':34}{ms(pct(hit, 50))} {ms(pct(hit, 99))} "
          f"{ms(max(hit))}  {loads_hit:.0f}")
    print(f"{'base model':34}{ms(pct(base_ttft, 50))} {ms(pct(base_ttft, 99))} "
          f"{ms(max(base_ttft))}")
    print(f"first-request penalty (p50 evicted - p50 resident): "
          f"{(pct(miss, 50) - pct(hit, 50)) * 1e3:.1f} ms; evictions {ev:.0f}")
    if loads_miss < a.requests * 0.9 or loads_hit > 0:
        print("warning: the series did not measure what they claim (see loads)",
              file=sys.stderr)


if __name__ == "__main__":
    main()
