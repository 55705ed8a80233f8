"""`loramux serve` operations: authentication, body and queue limits, readiness during
start-up, client disconnects, /metrics, and SIGTERM (drain within the grace period, cancel
after it).

The slow cases use a SmolLM-135M-shaped synthetic model (about 1-2 s to load, ~25 ms per
token on 2 cores), so that a request is still running when the test acts on it."""
import http.client
import json
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import eventually, wait_until

STORIES_ID = "stories260K-hf"

REQUEST_HISTOGRAMS = ("loramux_time_to_first_token_seconds", "loramux_inter_token_latency_seconds",
                      "loramux_e2e_request_latency_seconds", "loramux_request_queue_time_seconds")
ENGINE_HISTOGRAMS = ("loramux_engine_step_seconds", "loramux_engine_step_tokens")
GAUGES = ("loramux_requests_running", "loramux_requests_waiting", "loramux_kv_blocks_used",
          "loramux_adapters_resident", "loramux_adapter_bytes_resident",
          "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")
COUNTERS = ("loramux_requests_total", "loramux_prompt_tokens_total",
            "loramux_generation_tokens_total")


def idle(s):
    m = s.metrics()
    return (m.get("loramux_requests_running") == 0 and m.get("loramux_requests_waiting") == 0
            and m.get("loramux_kv_blocks_used") == 0)


# ---- authentication ----

def test_api_key(server, models, tmp_path):
    s = server(models.stories, "--api-key", "sekret-1")
    body = {"model": STORIES_ID, "prompt": "Once", "max_tokens": 3}
    bad = [None, "Bearer wrong", "Bearer sekret-", "Bearer sekret-12", "Basic sekret-1",
           "sekret-1", "Bearer "]
    for h in bad:
        hdrs = {"Authorization": h} if h is not None else {}
        for method, path, b in (("GET", "/v1/models", None), ("POST", "/v1/completions", body),
                                ("POST", "/v1/chat/completions", {}),
                                ("POST", "/v1/load_lora_adapter", {"lora_name": "x"}),
                                ("POST", "/v1/completions", b"{broken")):
            r = s.request(method, path, b, headers=hdrs, auth=False)
            assert r.status == 401, (h, path, r)
            e = r.error()
            assert e["type"] == "authentication_error", e
    st = s.stream("/v1/completions", body, auth=False)
    assert st.status == 401
    st.close()
    # probes and metrics need no key
    for path in ("/health", "/ready", "/metrics"):
        assert s.get(path, auth=False).status == 200, path
    # the right key
    assert s.get("/v1/models").status == 200
    assert s.post("/v1/completions", body).status == 200
    st = s.stream("/v1/completions", body).read_all()
    assert st.status == 200 and st.done


def test_api_key_file_and_environment(server, models, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# team keys\nalpha-key\n\nbeta-key\n")
    s = server(models.stories, "--api-key-file", keys, env={"LORAMUX_API_KEY": "env-key"})
    for k in ("alpha-key", "beta-key", "env-key"):
        r = s.get("/v1/models", headers={"Authorization": f"Bearer {k}"}, auth=False)
        assert r.status == 200, k
    for k in ("# team keys", "", "gamma-key"):
        r = s.get("/v1/models", headers={"Authorization": f"Bearer {k}"}, auth=False)
        assert r.status == 401, k


# ---- body limit ----

def test_body_too_large_is_413(server, models):
    s = server(models.stories, "--max-body-bytes", 2048)
    small = {"model": STORIES_ID, "prompt": "Once upon a time " * 50, "max_tokens": 3}
    assert len(json.dumps(small)) < 2048
    assert s.post("/v1/completions", small).status == 200
    big = {"model": STORIES_ID, "prompt": "Once upon a time " * 150, "max_tokens": 3}
    assert len(json.dumps(big)) > 2048
    r = s.post("/v1/completions", big)
    assert r.status == 413, r
    r.error()
    r = s.post("/v1/load_lora_adapter", {"lora_name": "x" * 3000, "lora_path": "/nope"})
    assert r.status == 413, r
    # without Content-Length (chunked): the limit still holds
    payload = json.dumps(big).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(payload[i:i + 500]), payload[i:i + 500])
                      for i in range(0, len(payload), 500)) + b"0\r\n\r\n"
    status, _, rest = s.raw(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                            b"Connection: close\r\n\r\n" + chunks)
    assert status == 413, rest
    # the server is fine afterwards
    assert s.post("/v1/completions", small).status == 200


def test_body_limit_from_environment(server, models):
    s = server(models.stories, env={"LORAMUX_MAX_BODY_BYTES": "2048"})
    big = {"model": STORIES_ID, "prompt": "Once upon a time " * 150, "max_tokens": 3}
    assert s.post("/v1/completions", big).status == 413


# ---- readiness during start-up ----

def test_not_ready_while_loading(server, models):
    big = models.big  # written before the clock starts
    s = server(big, wait=False)
    seen = []
    deadline = time.monotonic() + 90
    ready = False
    while time.monotonic() < deadline and not ready:
        assert s.proc.poll() is None, s.log()
        try:
            h = s.get("/health", timeout=5)
            c = s.post("/v1/completions", {"model": big.name, "prompt": "x", "max_tokens": 2})
            mo = s.get("/v1/models")
            r = s.get("/ready", timeout=5)  # last: 503 here means all of the above were early
        except OSError:  # not listening yet
            time.sleep(0.005)
            continue
        if r.status == 503:
            seen.append((h.status, r.status, r.error()["type"], c.status, mo.status))
        else:
            assert r.status == 200, r
            ready = True
    assert ready, s.log()
    assert seen, "never saw /ready 503 while the model loaded (start-up too fast to observe?)"
    for health, rd, etype, comp, mods in seen:
        assert health == 200 and rd == 503 and etype == "unavailable_error"
        assert comp == 503 and mods == 503
    assert s.get("/health").status == 200
    o = s.completion(prompt="Hello", max_tokens=2, temperature=0)
    assert o["usage"]["completion_tokens"] == 2


# ---- queue limit, gauges under load, client disconnect ----

@pytest.fixture(scope="module")
def busy_srv(module_server, models):
    """The slow model, one running sequence and one waiting request at most."""
    return module_server(models.big, "--max-running", 1, "--max-queue", 1)


def test_queue_full_is_429(busy_srv):
    s = busy_srv
    wait_until(lambda: idle(s), 10, what="idle server")
    m0 = s.metrics()
    # A runs for a few seconds (~25 ms a token); B waits behind it; C finds the queue full
    a = s.stream("/v1/completions", dict(prompt="Hello", max_tokens=120, temperature=0,
                                         ignore_eos=True))
    assert a.status == 200
    assert a.next_event() is not None  # A is running
    res = {}

    def b():
        try:
            res["b"] = s.post("/v1/completions", {"model": s.model_id, "prompt": "Hi",
                                                  "max_tokens": 3, "temperature": 0})
        except Exception as ex:  # reported below
            res["b"] = ex
    tb = threading.Thread(target=b)
    t_b = time.monotonic()
    tb.start()
    try:
        wait_until(lambda: s.metrics().get("loramux_requests_waiting") == 1, 10,
                   what="B waiting")
        m = s.metrics()
        assert m.get("loramux_requests_running") == 1
        assert m.get("vllm:num_requests_running") == 1
        assert m.get("vllm:num_requests_waiting") == 1
        assert m.get("loramux_kv_blocks_used") > 0
        assert 0 < m.get("vllm:kv_cache_usage_perc") <= 1
        # the third request finds the queue full
        r = s.post("/v1/completions", {"model": s.model_id, "prompt": "x", "max_tokens": 3})
        assert r.status == 429, r
        r.error()
        st = s.stream("/v1/completions", dict(prompt="x", max_tokens=3))
        assert st.status == 429
        st.resp.read()
        st.close()
        r = s.post("/v1/chat/completions", {"model": s.model_id, "max_tokens": 3,
                                            "messages": [{"role": "user", "content": "x"}]})
        assert r.status == 429, r
        assert s.metrics().get("loramux_requests_running") == 1, "A finished too early"
    finally:
        a.read_all()  # A finishes, then B runs
        t_a_done = time.monotonic()
        tb.join(60)
    assert a.done and a.finish_reason() == "length"
    # B's wait is in the queue-time histogram
    waited = t_a_done - t_b - 0.2
    eventually(lambda: assert_delta_at_least(s, m0, "loramux_request_queue_time_seconds_sum",
                                             waited, adapter="base"))
    assert not isinstance(res["b"], Exception), res["b"]
    assert res["b"].status == 200, res["b"]
    wait_until(lambda: idle(s), 10, what="idle server")
    assert s.post("/v1/completions", {"model": s.model_id, "prompt": "x",
                                      "max_tokens": 2}).status == 200
    def counted():
        d = s.metrics().sum("loramux_requests_total", status=429) - \
            m0.sum("loramux_requests_total", status=429)
        assert d == 3, f"{d} responses counted with status 429, expected 3"
    eventually(counted)


def test_stream_disconnect_frees_resources(server, models):
    s = server(models.big, "--max-running", 1)
    m0 = s.metrics()
    st = s.stream("/v1/completions", dict(prompt="Hello", max_tokens=1500, temperature=0,
                                          ignore_eos=True))
    assert st.status == 200
    for _ in range(3):
        assert st.next_event() is not None
    assert s.metrics().get("loramux_kv_blocks_used") > 0
    t0 = time.monotonic()
    st.close()
    wait_until(lambda: idle(s), 5, what="running 0 and KV blocks 0 after the disconnect")
    assert time.monotonic() - t0 < 5
    m1 = s.metrics()
    gen = m1.sum("loramux_generation_tokens_total") - m0.sum("loramux_generation_tokens_total")
    assert gen < 1000, f"{gen} tokens generated after the client left"
    # the slot is free again
    o = s.completion(prompt="Hi", max_tokens=2, temperature=0)
    assert o["usage"]["completion_tokens"] == 2


def test_nonstream_disconnect_frees_resources(busy_srv):
    s = busy_srv
    wait_until(lambda: idle(s), 10, what="idle server")
    body = json.dumps({"model": s.model_id, "prompt": "Hello", "max_tokens": 1500,
                       "temperature": 0, "ignore_eos": True}).encode()
    sock = socket.create_connection((s.host, s.port), timeout=10)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    wait_until(lambda: s.metrics().get("loramux_kv_blocks_used") > 0, 10, what="running")
    sock.close()
    t0 = time.monotonic()
    wait_until(lambda: idle(s), 5, what="running 0 and KV blocks 0 after the disconnect")
    assert time.monotonic() - t0 < 5
    assert s.completion(prompt="Hi", max_tokens=2, temperature=0)["usage"]["completion_tokens"] == 2


def test_unload_during_a_request(busy_srv, models):
    # a running request keeps its adapter; the name is gone for new requests at once
    s = busy_srv
    path = str(models.adapter(models.big, seed=5))
    r = s.post("/v1/load_lora_adapter", {"lora_name": "big-a", "lora_path": path})
    assert r.status == 200, r
    body = dict(model="big-a", prompt="Hello", max_tokens=30, temperature=0, ignore_eos=True,
                logprobs=0)
    alone = s.stream("/v1/completions", body).read_all()
    assert alone.done
    base = s.completion(prompt="Hello", max_tokens=30, temperature=0, ignore_eos=True)
    assert alone.text() != base["choices"][0]["text"]
    st = s.stream("/v1/completions", body)
    assert st.next_event() is not None
    r = s.post("/v1/unload_lora_adapter", {"lora_name": "big-a"})
    assert r.status == 200, r
    r = s.post("/v1/completions", dict(body, max_tokens=2))
    assert r.status == 404, r
    st.read_all()
    assert st.done and st.finish_reason() == "length"
    assert st.text() == alone.text()
    assert st.tokens() == alone.tokens()


def test_vllm_lora_requests_info(busy_srv, models):
    # srv_metrics.h / serving.md 4.2: the LoRA gauge LoRA-aware routers read
    s = busy_srv
    path = str(models.adapter(models.big, seed=6))
    assert s.post("/v1/load_lora_adapter",
                  {"lora_name": "big-b", "lora_path": path}).status == 200
    try:
        st = s.stream("/v1/completions", dict(model="big-b", prompt="Hello", max_tokens=40,
                                              temperature=0, ignore_eos=True))
        assert st.next_event() is not None

        def check():
            m = s.metrics()
            assert m.types.get("vllm:lora_requests_info") == "gauge"
            infos = m.series("vllm:lora_requests_info")
            assert len(infos) == 1, infos
            labels, value = infos[0]
            assert "big-b" in labels["running_lora_adapters"].split(","), labels
            assert labels["waiting_lora_adapters"] == ""
            assert "max_lora" in labels
            assert value > 1.6e9  # wall-clock time of the update
        try:
            eventually(check)
        finally:
            st.read_all()
    finally:
        s.post("/v1/unload_lora_adapter", {"lora_name": "big-b"})


# ---- metrics ----

@pytest.fixture(scope="module")
def metrics_srv(module_server, models):
    d = models.adapter_dir(models.stories, {"m-a": dict(seed=31), "m-b": dict(seed=32)},
                           "metrics-two")
    return module_server(models.stories, "--adapter-dir", d)


def assert_delta(s, m0, name, expected, **labels):
    m1 = s.metrics()
    d = m1.get(name, default=0, **labels) - m0.get(name, default=0, **labels)
    assert d == expected, f"{name}{labels}: +{d}, expected +{expected}"


def assert_delta_at_least(s, m0, name, expected, **labels):
    m1 = s.metrics()
    d = m1.get(name, default=0, **labels) - m0.get(name, default=0, **labels)
    assert d >= expected, f"{name}{labels}: +{d}, expected at least +{expected}"


def check_histogram(m, name, **labels):
    buckets = [(lab["le"], v) for lab, v in m.series(name + "_bucket")
               if all(lab.get(k) == v2 for k, v2 in labels.items())]
    assert buckets, f"no buckets for {name}{labels}"
    assert buckets[-1][0] == "+Inf", buckets
    les = [float(le) for le, _ in buckets]
    assert les == sorted(les), buckets
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"{name}{labels} buckets not cumulative: {buckets}"
    count = m.get(name + "_count", **labels)
    assert count == counts[-1], (name, labels)
    assert m.get(name + "_sum", **labels) >= 0
    return count


def test_metrics_series(metrics_srv):
    s = metrics_srv
    r = s.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    assert "version=0.0.4" in r.headers["content-type"]
    usage = {"base": [0, 0], "m-a": [0, 0]}
    for model, key, stream in ((STORIES_ID, "base", False), (STORIES_ID, "base", True),
                               ("m-a", "m-a", False), ("m-a", "m-a", True)):
        body = dict(model=model, prompt="Once upon a time", max_tokens=7, temperature=0,
                    ignore_eos=True)
        if stream:
            st = s.stream("/v1/completions", dict(body, stream_options={"include_usage": True}))
            u = st.read_all().usage()
        else:
            u = s.completion(**body)["usage"]
        usage[key][0] += u["prompt_tokens"]
        usage[key][1] += u["completion_tokens"]

    def check():
        m = s.metrics()
        for fam in COUNTERS:
            assert m.types.get(fam) == "counter", fam
        for fam in REQUEST_HISTOGRAMS + ENGINE_HISTOGRAMS:
            assert m.types.get(fam) == "histogram", fam
        for fam in GAUGES:
            assert m.types.get(fam) == "gauge", fam
            assert m.get(fam) is not None, fam
        assert m.get("loramux_requests_total", adapter="m-a", status="200") == 2
        assert m.get("loramux_requests_total", adapter="base", status="200") >= 2
        for key in ("base", "m-a"):
            assert m.get("loramux_prompt_tokens_total", adapter=key) == usage[key][0]
            assert m.get("loramux_generation_tokens_total", adapter=key) == usage[key][1]
        assert m.get("loramux_prompt_tokens_total", adapter="m-b", default=0) == 0
        for fam in REQUEST_HISTOGRAMS:
            check_histogram(m, fam, adapter="base")
        assert check_histogram(m, "loramux_e2e_request_latency_seconds", adapter="m-a") == 2
        assert check_histogram(m, "loramux_time_to_first_token_seconds", adapter="m-a") == 2
        assert check_histogram(m, "loramux_request_queue_time_seconds", adapter="m-a") >= 2
        assert check_histogram(m, "loramux_inter_token_latency_seconds", adapter="m-a") == 2 * 6
        for fam in ENGINE_HISTOGRAMS:
            assert check_histogram(m, fam) > 0
        # idle now
        assert m.get("loramux_requests_running") == 0 and m.get("loramux_requests_waiting") == 0
        assert m.get("loramux_kv_blocks_used") == 0
        assert m.get("vllm:num_requests_running") == 0 and m.get("vllm:num_requests_waiting") == 0
        assert m.get("vllm:kv_cache_usage_perc") == 0
        assert m.get("loramux_adapters_resident") == 2
        assert m.get("loramux_adapter_bytes_resident") > 0
        # vLLM-compatible token counters are sums over adapters
        if m.types.get("vllm:prompt_tokens_total"):
            assert m.get("vllm:prompt_tokens_total") == m.sum("loramux_prompt_tokens_total")
            assert m.get("vllm:generation_tokens_total") == \
                m.sum("loramux_generation_tokens_total")

    eventually(check)


def test_rejected_request_is_counted_under_its_adapter(metrics_srv):
    s = metrics_srv
    m0 = s.metrics()
    r = s.post("/v1/completions", {"model": "m-b", "prompt": "x", "max_tokens": 0})
    assert r.status == 400
    eventually(lambda: assert_delta(s, m0, "loramux_requests_total", 1, adapter="m-b",
                                    status="400"))


def test_metrics_follow_adapter_loading(metrics_srv, models):
    s = metrics_srv
    m0 = s.metrics()
    path = str(models.adapter(models.stories, seed=33))
    assert s.post("/v1/load_lora_adapter", {"lora_name": "m-c", "lora_path": path}).status == 200
    m1 = s.metrics()
    assert m1.get("loramux_adapters_resident") == m0.get("loramux_adapters_resident") + 1
    assert m1.get("loramux_adapter_bytes_resident") > m0.get("loramux_adapter_bytes_resident")
    assert s.post("/v1/unload_lora_adapter", {"lora_name": "m-c"}).status == 200
    m2 = s.metrics()
    assert m2.get("loramux_adapters_resident") == m0.get("loramux_adapters_resident")
    assert m2.get("loramux_adapter_bytes_resident") == m0.get("loramux_adapter_bytes_resident")


def test_adapter_load_counters(metrics_srv, models, tmp_path):
    # srv_metrics.h: loramux_adapter_loads_total / _load_failures_total / _load_seconds
    s = metrics_srv
    m0 = s.metrics()
    for fam in ("loramux_adapter_loads_total", "loramux_adapter_load_failures_total"):
        assert m0.types.get(fam) == "counter", fam
    assert m0.types.get("loramux_adapter_load_seconds") == "histogram"
    path = str(models.adapter(models.stories, seed=34))
    assert s.post("/v1/load_lora_adapter", {"lora_name": "m-d", "lora_path": path}).status == 200
    try:
        r = s.post("/v1/load_lora_adapter", {"lora_name": "m-e", "lora_path": str(tmp_path)})
        assert r.status in (400, 404), r
        m1 = s.metrics()
        assert m1.get("loramux_adapter_loads_total") - m0.get("loramux_adapter_loads_total") == 1
        assert m1.get("loramux_adapter_load_failures_total") - \
            m0.get("loramux_adapter_load_failures_total") == 1
        assert m1.get("loramux_adapter_load_seconds_count") - \
            m0.get("loramux_adapter_load_seconds_count") == 1
    finally:
        s.post("/v1/unload_lora_adapter", {"lora_name": "m-d"})


def test_probes_and_scrapes_are_not_counted_as_requests(metrics_srv):
    # loramux_requests_total{adapter,status} counts API requests; kubelet probes and
    # Prometheus scrapes must not inflate adapter="base"
    s = metrics_srv
    m0 = s.metrics()
    for _ in range(5):
        assert s.get("/health").status == 200
        assert s.get("/ready").status == 200
    for _ in range(3):
        s.metrics()
    s.completion(prompt="Once", max_tokens=2, temperature=0)
    time.sleep(0.3)  # let the last completion be recorded
    m1 = s.metrics()
    delta = m1.sum("loramux_requests_total") - m0.sum("loramux_requests_total")
    assert delta == 1, f"{delta} requests counted for 1 completion (+ probes and scrapes)"


# ---- SIGTERM ----

def test_sigterm_drains_running_stream(server, models):
    s = server(models.big)
    keep = s.connection(timeout=30)  # a keep-alive connection opened before the signal
    keep.request("GET", "/health")
    assert keep.getresponse().read() and True
    n = 40
    st = s.stream("/v1/completions", dict(prompt="Hello", max_tokens=n, temperature=0,
                                          ignore_eos=True, logprobs=0))
    assert st.status == 200
    assert st.next_event() is not None
    s.signal(signal.SIGTERM)
    t0 = time.monotonic()

    def ready_refused():
        try:
            r = s.get("/ready", timeout=5)
            return r.status == 503 and r.error()["type"] == "unavailable_error"
        except OSError:
            return True  # quiesced: no longer accepting connections
    wait_until(ready_refused, 5, what="/ready 503 or refused after SIGTERM")
    try:
        r = s.post("/v1/completions", {"model": s.model_id, "prompt": "x", "max_tokens": 2},
                   timeout=10)
        assert r.status == 503, r
    except OSError:
        pass  # connection refused
    # new connections are refused once quiesced; a connection opened before the signal
    # still gets an answer: 503 shutting down
    keep.request("POST", "/v1/completions", body=json.dumps(
        {"model": s.model_id, "prompt": "x", "max_tokens": 2}),
        headers={"Content-Type": "application/json"})
    r = keep.getresponse()
    body = r.read()
    assert r.status == 503, (r.status, body)
    assert json.loads(body)["error"]["type"] == "unavailable_error"
    keep.close()
    st.read_all()
    assert st.done, st.lines[-3:]
    assert st.finish_reason() == "length"
    assert len(st.tokens()) == n
    assert s.wait_exit(30) == 0, s.log()
    assert time.monotonic() - t0 < 30
    assert "draining" in s.log()


def test_sigterm_after_grace_cancels_and_exits(server, models):
    s = server(models.big, "--shutdown-grace", 0.5)
    res = {}

    def nonstream():
        try:
            res["r"] = s.post("/v1/completions", {"model": s.model_id, "prompt": "Hey",
                                                  "max_tokens": 1500, "temperature": 0,
                                                  "ignore_eos": True}, timeout=30)
        except (OSError, http.client.HTTPException) as ex:
            res["r"] = ex
    st = s.stream("/v1/completions", dict(prompt="Hello", max_tokens=1500, temperature=0,
                                          ignore_eos=True, logprobs=0), timeout=30)
    assert st.status == 200
    assert st.next_event() is not None
    t = threading.Thread(target=nonstream)
    t.start()
    wait_until(lambda: s.metrics().get("loramux_requests_running") == 2, 10, what="both running")
    t0 = time.monotonic()
    s.signal(signal.SIGTERM)
    st.read_all()
    elapsed = time.monotonic() - t0
    assert elapsed < 10, elapsed
    assert len(st.tokens()) < 1500
    # ended early: an "abort" finish reason, or the stream is cut
    assert not st.done or st.finish_reason() == "abort", st.lines[-3:]
    assert s.wait_exit(10) == 0, s.log()
    assert time.monotonic() - t0 < 10
    t.join(30)
    r = res["r"]
    if not isinstance(r, Exception):  # the waiting non-streaming request is told why
        assert r.status == 503, r
        r.error()


def test_sigint_also_stops_cleanly(server, models):
    s = server(models.stories)
    s.completion(prompt="Once", max_tokens=3, temperature=0)
    t0 = time.monotonic()
    s.signal(signal.SIGINT)
    assert s.wait_exit(10) == 0, s.log()
    assert time.monotonic() - t0 < 3  # idle: nothing to drain


@pytest.mark.parametrize("weights", ["f32", "bf16", "int8"])
def test_weight_types_serve_and_are_logged(server, models, weights):
    """Every --weights type serves; the start-up log names it, the kernel backend chosen for
    this CPU, the compute threads and OpenBLAS's core, and the adapter factor dtype."""
    s = server(models.stories, "--weights", weights, "--threads", 2)
    o = s.completion(prompt="Once", max_tokens=8, temperature=0, ignore_eos=True)
    assert o["usage"]["completion_tokens"] == 8
    log = s.log()
    assert f"{weights} weights" in log, log
    assert "2 compute threads; kernels: " in log, log
    assert "OpenBLAS" in log and "1 thread per call" in log, log
    assert "adapters bf16" in log, log


def test_bad_weights_setting_stops_startup(binary, models):
    r = subprocess.run([str(binary), "serve", "--model", str(models.stories), "--weights", "fp8"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r
    assert "--weights" in r.stderr and "f32|bf16|int8" in r.stderr, r.stderr
