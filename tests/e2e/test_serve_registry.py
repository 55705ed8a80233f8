"""`loramux serve`: the adapter registry (POST/GET/HEAD/DELETE /v1/adapters, pin/unpin,
versions by content, residency within a memory budget, restarts and crashes).

Most cases run on stories260K (fast). The cases that need a request to be running while the
registry changes, and the crash cases that need a large upload, use the SmolLM-135M-shaped
synthetic model (~30 ms a token on 2 cores; a rank-64 all-projection adapter is ~78 MB)."""
import http.client
import json
import os
import pathlib
import socket
import struct
import threading
import time

import pytest

from conftest import (FilePart, adapter_dir_version, adapter_files, adapter_version,
                      check_registry_consistent, eventually, multipart, registry_state, upload,
                      upload_ok, upload_parts, wait_until)

STORIES_ID = "stories260K-hf"
PROMPT = "Once upon a time"
DESC_KEYS = {"object", "name", "version", "method", "rank", "ranks", "target_modules", "bytes",
             "created", "pinned", "resident", "resident_bytes", "uses"}
VOLATILE = ("resident", "resident_bytes", "uses")  # change with traffic, not with the registry


# ---- helpers ----

def greedy(srv, model, n=24, prompt=PROMPT):
    return srv.completion(model=model, prompt=prompt, max_tokens=n, temperature=0,
                          ignore_eos=True)["choices"][0]["text"]


def greedy_tokens(srv, model, n):
    o = srv.completion(model=model, prompt="Hello", max_tokens=n, temperature=0,
                       ignore_eos=True, logprobs=0)
    return o["choices"][0]["logprobs"]["tokens"]


def stable(desc):
    return {k: v for k, v in desc.items() if k not in VOLATILE}


def list_all(srv, limit=1000):
    r = srv.get(f"/v1/adapters?offset=0&limit={limit}")
    assert r.status == 200, r
    return r.json()


def names_of(srv):
    return [d["name"] for d in list_all(srv)["data"]]


def stored(root):
    """names and blobs of a registry directory (tmp/ is compared separately)."""
    st = registry_state(root)
    return st["names"], st["blobs"]


def assert_nothing_left(root, before):
    """A refused upload changed no name and no blob, and left nothing in tmp/."""
    assert stored(root) == before, (registry_state(root), before)

    def tmp_empty():
        assert registry_state(root)["tmp"] == [], registry_state(root)
    eventually(tmp_empty, timeout=5)


def adapter_metrics(srv):
    m = srv.metrics()
    return {k: m.get(f"loramux_{k}", 0.0) for k in
            ("adapter_loads_total", "adapter_evictions_total", "adapters_resident",
             "adapter_bytes_resident")}


def st_parse(b):
    """safetensors bytes -> (header dict, {tensor name: raw bytes})."""
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    data = b[8 + n:]
    tensors = {k: data[v["data_offsets"][0]:v["data_offsets"][1]]
               for k, v in header.items() if k != "__metadata__"}
    return header, tensors


def st_build(header, tensors, raw_header=False):
    """A safetensors file from header entries (dtype, shape; offsets recomputed unless
    raw_header) and raw tensor bytes."""
    data, h = b"", {}
    for k, v in header.items():
        if k == "__metadata__" or raw_header:
            h[k] = v
            if k != "__metadata__":
                data += tensors[k]
            continue
        e = dict(v)
        e["data_offsets"] = [len(data), len(data) + len(tensors[k])]
        data += tensors[k]
        h[k] = e
    hj = json.dumps(h).encode()
    hj += b" " * (-len(hj) % 8)
    return struct.pack("<Q", len(hj)) + hj + data


def rss_kb(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_bytes(d):
    total = 0
    for dp, _, fn in os.walk(d):
        for f in fn:
            try:
                total += os.path.getsize(os.path.join(dp, f))
            except OSError:
                pass
    return total


# ---- fixtures ----

@pytest.fixture(scope="module")
def srv(module_server, models, tmp_path_factory):
    """stories260K with a registry directory (srv.registry) and no memory budget."""
    root = tmp_path_factory.mktemp("registry") / "reg"
    s = module_server(models.stories, "--registry-dir", root)
    s.registry = root
    return s


@pytest.fixture(scope="module")
def sa(models):
    """Small stories260K adapters by seed: rank 8 on q,v (38 KB)."""
    return lambda seed: models.adapter(models.stories, rank=8, targets="q,v", seed=seed)


@pytest.fixture(scope="module")
def big_srv(module_server, models, tmp_path_factory):
    """The SmolLM-135M-shaped model (slow enough that a stream is still running while the
    registry changes) with a registry directory."""
    root = tmp_path_factory.mktemp("registry-big") / "reg"
    s = module_server(models.big, "--registry-dir", root)
    s.registry = root
    return s


# ---- upload and descriptor ----

def test_upload_returns_201_and_a_descriptor(srv, sa):
    d = sa(1)
    config, weights = adapter_files(d)
    t0 = time.time()
    r = upload(srv, "desc-a", d)
    assert r.status == 201, r
    assert r.headers["content-type"].startswith("application/json")
    o = r.json()
    assert DESC_KEYS <= set(o), o
    assert o["object"] == "adapter" and o["name"] == "desc-a"
    assert o["version"] == adapter_version(config, weights)
    assert o["method"] == "lora"
    assert o["rank"] == 8 and o["ranks"] == {"min": 8, "max": 8}
    assert o["target_modules"] == ["q_proj", "v_proj"]
    assert o["bytes"] == len(config) + len(weights)
    assert isinstance(o["created"], int) and abs(o["created"] - t0) < 120
    assert o["pinned"] is False and o["resident"] is True and o["resident_bytes"] > 0
    # the same descriptor from GET, and the bytes on disk are the uploaded ones
    g = srv.get("/v1/adapters/desc-a")
    assert g.status == 200, g
    assert stable(g.json()) == stable(o)
    blob = srv.registry / "blobs" / o["version"][7:]
    assert (blob / "adapter_config.json").read_bytes() == config
    assert (blob / "adapter_model.safetensors").read_bytes() == weights
    assert registry_state(srv.registry)["names"]["desc-a"] == (o["version"], False)
    # it serves, and the adapter changes the output
    assert greedy(srv, "desc-a") != greedy(srv, STORIES_ID)
    assert "desc-a" in {m["id"] for m in srv.get("/v1/models").json()["data"]}


@pytest.mark.parametrize("method,targets,rank", [("rslora", "all", 4), ("dora", "q,k,v,o", 4),
                                                 ("lora", "gate,up,down", 16)])
def test_descriptor_method_rank_and_targets(srv, models, method, targets, rank):
    d = models.adapter(models.stories, method=method, rank=rank, targets=targets, seed=3)
    o = upload_ok(srv, f"desc-{method}", d)
    assert o["method"] == method
    assert o["rank"] == rank and o["ranks"] == {"min": rank, "max": rank}
    want = {"all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            "q,k,v,o": ["q_proj", "k_proj", "v_proj", "o_proj"],
            "gate,up,down": ["gate_proj", "up_proj", "down_proj"]}[targets]
    assert sorted(o["target_modules"]) == sorted(want)
    assert o["version"] == adapter_dir_version(d)
    assert o["bytes"] == sum(len(x) for x in adapter_files(d))


def test_reupload_of_identical_bytes_is_idempotent(srv, sa):
    d = sa(2)
    first = upload(srv, "idem", d)
    assert first.status == 201, first
    before = registry_state(srv.registry)
    time.sleep(1.1)  # a re-upload must not change "created" either
    for kw in ({}, {"weights_first": True}, {"chunked": True}):
        r = upload(srv, "idem", d, **kw)
        assert r.status == 200, (kw, r)
        assert stable(r.json()) == stable(first.json()), kw
    assert registry_state(srv.registry) == before
    # the same bytes under another name: a new name (201) sharing the version and its blob
    r = upload(srv, "idem-twin", d)
    assert r.status == 201, r
    assert r.json()["version"] == first.json()["version"]
    blobs = registry_state(srv.registry)["blobs"]
    assert set(blobs) == set(before["blobs"])


def test_part_order_and_chunked_transfer_give_the_same_version(srv, sa):
    d = sa(4)
    want = adapter_dir_version(d)
    assert upload_ok(srv, "order-1", d, weights_first=True)["version"] == want
    assert upload_ok(srv, "order-2", d, chunked=True)["version"] == want
    assert upload_ok(srv, "order-3", d, chunked=True, weights_first=True)["version"] == want
    # the name part may come last
    config, weights = adapter_files(d)
    r = upload(srv, parts=[("adapter_config.json", config), ("adapter_model.safetensors", weights),
                           ("name", "order-4")])
    assert r.status == 201, r
    assert r.json()["version"] == want
    outs = {greedy(srv, f"order-{i}") for i in range(1, 5)}
    assert len(outs) == 1


def test_new_bytes_under_a_name_make_a_new_version(srv, sa):
    d1, d2 = sa(11), sa(12)
    v1, v2 = adapter_dir_version(d1), adapter_dir_version(d2)
    # references: each version alone under its own name
    upload_ok(srv, "ref-11", d1)
    upload_ok(srv, "ref-12", d2)
    out1, out2 = greedy(srv, "ref-11"), greedy(srv, "ref-12")
    assert out1 != out2
    a = upload(srv, "mover", d1)
    assert a.status == 201 and a.json()["version"] == v1, a
    assert greedy(srv, "mover") == out1
    b = upload(srv, "mover", d2)
    assert b.status == 201, b
    assert b.json()["version"] == v2 != v1
    assert srv.get("/v1/adapters/mover").json()["version"] == v2
    assert registry_state(srv.registry)["names"]["mover"][0] == v2
    assert greedy(srv, "mover") == out2
    # and back: the old version's cache entry is found by version, not by name
    c = upload(srv, "mover", d1)
    assert c.status == 201 and c.json()["version"] == v1, c
    assert greedy(srv, "mover") == out1
    # through the "adapters" field too
    o = srv.completion(model=STORIES_ID, prompt=PROMPT, max_tokens=24, temperature=0,
                       ignore_eos=True, adapters=[{"name": "mover"}])
    assert o["choices"][0]["text"] == out1


def test_a_version_no_name_refers_to_is_removed_from_disk(server, models, tmp_path, sa):
    root = tmp_path / "reg"
    s = server(models.stories, "--registry-dir", root)
    v1 = upload_ok(s, "only", sa(21))["version"]
    v2 = upload_ok(s, "only", sa(22))["version"]
    _, blobs = stored(root)
    assert v1[7:] not in blobs and v2[7:] in blobs
    assert greedy(s, "only")  # still serves
    assert s.request("DELETE", "/v1/adapters/only").status == 200
    eventually(lambda: _assert_eq(stored(root), ({}, {})))


def _assert_eq(a, b):
    assert a == b, (a, b)


def test_cache_is_keyed_by_version_after_delete_and_reupload(srv, sa):
    d1, d2 = sa(31), sa(32)
    upload_ok(srv, "cache-ref2", d2)
    out2 = greedy(srv, "cache-ref2")
    upload_ok(srv, "cachey", d1)
    out1 = greedy(srv, "cachey")
    assert out1 != out2
    assert srv.request("DELETE", "/v1/adapters/cachey").status == 200
    assert srv.post("/v1/completions", {"model": "cachey", "prompt": "x",
                                        "max_tokens": 2}).status == 404
    upload_ok(srv, "cachey", d2)
    assert greedy(srv, "cachey") == out2


# ---- list, get, head, delete, pin ----

def test_list_is_paginated_and_sorted(server, models, sa):
    s = server(models.stories)  # a temporary registry of its own
    names = [f"page-{i:02d}" for i in range(7)]
    for i, n in enumerate(reversed(names)):
        upload_ok(s, n, sa(40 + i % 3))
    full = list_all(s)
    assert full["object"] == "list" and full["total"] == 7
    assert [d["name"] for d in full["data"]] == names  # sorted by name
    for d in full["data"]:
        assert DESC_KEYS <= set(d), d
    seen = []
    for off in range(0, 9, 3):
        r = s.get(f"/v1/adapters?offset={off}&limit=3")
        assert r.status == 200, r
        o = r.json()
        assert o["total"] == 7 and o["offset"] == off and o["limit"] == 3
        assert len(o["data"]) == min(3, max(0, 7 - off))
        seen += [d["name"] for d in o["data"]]
    assert seen == names
    o = s.get("/v1/adapters?offset=100&limit=5").json()
    assert o["data"] == [] and o["total"] == 7
    default = s.get("/v1/adapters").json()
    assert [d["name"] for d in default["data"]] == names
    for q, param in (("limit=0", "limit"), ("limit=1001", "limit"), ("offset=-1", "offset")):
        r = s.get(f"/v1/adapters?{q}")
        assert r.status == 400, (q, r)
        assert r.error()["param"] == param
    # every name is also a model
    assert set(names) <= {m["id"] for m in s.get("/v1/models").json()["data"]}


def test_get_head_and_delete(srv, sa):
    o = upload_ok(srv, "gone-soon", sa(51))
    g = srv.get("/v1/adapters/gone-soon")
    assert g.status == 200 and g.json()["version"] == o["version"]
    h = srv.request("HEAD", "/v1/adapters/gone-soon")
    assert h.status == 200 and h.body == b""
    for method in ("GET", "HEAD", "DELETE"):
        r = srv.request(method, "/v1/adapters/never-was")
        assert r.status == 404, (method, r)
        if method != "HEAD":
            e = r.error()
            assert e["type"] == "not_found_error" and e["code"] == "model_not_found", e
    r = srv.request("DELETE", "/v1/adapters/gone-soon")
    assert r.status == 200, r
    assert r.json() == {"object": "adapter.deleted", "name": "gone-soon", "deleted": True}
    assert srv.get("/v1/adapters/gone-soon").status == 404
    assert srv.request("HEAD", "/v1/adapters/gone-soon").status == 404
    assert srv.request("DELETE", "/v1/adapters/gone-soon").status == 404
    assert "gone-soon" not in names_of(srv)
    assert "gone-soon" not in {m["id"] for m in srv.get("/v1/models").json()["data"]}
    assert "gone-soon" not in registry_state(srv.registry)["names"]
    r = srv.post("/v1/completions", {"model": "gone-soon", "prompt": "x", "max_tokens": 2})
    assert r.status == 404, r
    # methods the routes do not have
    assert srv.request("PUT", "/v1/adapters/desc-a", b"x").status in (404, 405)
    assert srv.request("DELETE", "/v1/adapters").status == 405


def test_pin_blocks_delete_until_unpinned(srv, sa):
    upload_ok(srv, "pinned-1", sa(52))
    r = srv.post("/v1/adapters/pinned-1/pin", b"")
    assert r.status == 200, r
    assert r.json()["pinned"] is True
    assert srv.get("/v1/adapters/pinned-1").json()["pinned"] is True
    assert registry_state(srv.registry)["names"]["pinned-1"][1] is True
    r = srv.request("DELETE", "/v1/adapters/pinned-1")
    assert r.status == 409, r
    e = r.error()
    assert "pin" in e["message"]
    assert srv.get("/v1/adapters/pinned-1").status == 200
    assert greedy(srv, "pinned-1")
    # a new version keeps the pin
    o = upload_ok(srv, "pinned-1", sa(53))
    assert o["pinned"] is True
    assert srv.request("DELETE", "/v1/adapters/pinned-1").status == 409
    r = srv.post("/v1/adapters/pinned-1/unpin", b"")
    assert r.status == 200 and r.json()["pinned"] is False, r
    assert srv.request("DELETE", "/v1/adapters/pinned-1").status == 200
    assert srv.get("/v1/adapters/pinned-1").status == 404
    for what in ("pin", "unpin"):
        assert srv.post(f"/v1/adapters/never-was/{what}", b"").status == 404
    assert srv.get("/v1/adapters/desc-a/pin").status in (404, 405)
    assert srv.post("/v1/adapters/desc-a/frobnicate", b"").status == 404


def test_uses_count_requests(srv, sa):
    upload_ok(srv, "counted", sa(54))
    u0 = srv.get("/v1/adapters/counted").json()["uses"]
    for _ in range(3):
        greedy(srv, "counted", n=2)
    assert srv.get("/v1/adapters/counted").json()["uses"] == u0 + 3


def test_concurrent_uploads_to_one_name(server, models, tmp_path, sa):
    root = tmp_path / "reg"
    s = server(models.stories, "--registry-dir", root)
    dirs = [sa(60 + i) for i in range(6)]
    versions = [adapter_dir_version(d) for d in dirs]
    res = [None] * len(dirs)
    barrier = threading.Barrier(len(dirs))

    def go(i):
        try:
            barrier.wait(30)
            res[i] = upload(s, "contested", dirs[i])
        except BaseException as ex:  # reported below
            res[i] = ex
    ts = [threading.Thread(target=go, args=(i,)) for i in range(len(dirs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    for i, r in enumerate(res):
        assert not isinstance(r, BaseException) and r.status == 201, (i, r)
        assert r.json()["version"] == versions[i]
    final = s.get("/v1/adapters/contested").json()["version"]
    assert final in versions
    names, blobs = stored(root)
    assert names == {"contested": (final, False)}
    eventually(lambda: _assert_eq(set(stored(root)[1]), {final[7:]}))
    # the name serves its final version
    upload_ok(s, "contested-ref", dirs[versions.index(final)])
    assert greedy(s, "contested") == greedy(s, "contested-ref")
    # identical bytes at once: exactly one creates the name
    res2 = [None] * 6
    barrier2 = threading.Barrier(6)

    def same(i):
        try:
            barrier2.wait(30)
            res2[i] = upload(s, "same-bytes", dirs[0])
        except BaseException as ex:
            res2[i] = ex
    ts = [threading.Thread(target=same, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert sorted(r.status for r in res2) == [200] * 5 + [201], res2
    assert {r.json()["version"] for r in res2} == {versions[0]}
    s.stop()
    check_registry_consistent(root)


# ---- requests in flight keep their version ----

def test_running_stream_keeps_its_version_when_the_name_moves(big_srv, models):
    s = big_srv
    d1 = models.adapter(models.big, rank=8, targets="q,v", seed=71)
    d2 = models.adapter(models.big, rank=8, targets="q,v", seed=72)
    n = 80
    upload_ok(s, "moving", d1)
    solo1 = greedy_tokens(s, "moving", n)
    upload_ok(s, "moving-ref2", d2)
    solo2 = greedy_tokens(s, "moving-ref2", n)
    assert solo1 != solo2, "the two versions must differ for this test to mean anything"
    st = s.stream("/v1/completions", dict(model="moving", prompt="Hello", max_tokens=n,
                                          temperature=0, ignore_eos=True, logprobs=0))
    assert st.status == 200
    assert st.next_event() is not None  # running
    r = upload(s, "moving", d2)
    assert r.status == 201 and r.json()["version"] == adapter_dir_version(d2), r
    assert s.metrics().get("loramux_requests_running") == 1, "the stream ended too early"
    # a request that starts now gets the new version, while the stream continues on the old
    assert greedy_tokens(s, "moving", 4) == solo2[:4]
    st.read_all()
    st.close()
    assert st.done and st.finish_reason() == "length"
    assert st.tokens() == solo1
    assert greedy_tokens(s, "moving", n) == solo2


def test_running_stream_finishes_when_its_adapter_is_deleted(big_srv, models):
    s = big_srv
    d = models.adapter(models.big, rank=8, targets="q,v", seed=73)
    n = 60
    upload_ok(s, "doomed", d)
    solo = greedy_tokens(s, "doomed", n)
    st = s.stream("/v1/completions", dict(model="doomed", prompt="Hello", max_tokens=n,
                                          temperature=0, ignore_eos=True, logprobs=0))
    assert st.status == 200 and st.next_event() is not None
    r = s.request("DELETE", "/v1/adapters/doomed")
    assert r.status == 200, r
    assert s.get("/v1/adapters/doomed").status == 404
    assert s.post("/v1/completions", {"model": "doomed", "prompt": "x",
                                      "max_tokens": 2}).status == 404
    assert s.metrics().get("loramux_requests_running") == 1, "the stream ended too early"
    st.read_all()
    st.close()
    assert st.done and st.tokens() == solo
    eventually(lambda: _assert_eq(adapter_dir_version(d)[7:] in stored(s.registry)[1], False))


# ---- refusals: names, sizes, parts, bad adapters ----

BAD_NAMES = ["../x", "a/b", ".hidden", "x" * 101, "", "adäpter", "名前", "a..b", "a b",
             "a%2Fb", "..", STORIES_ID]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[:24])
def test_bad_names_are_400_and_store_nothing(srv, sa, name):
    before = stored(srv.registry)
    r = upload(srv, name, sa(80))
    assert r.status == 400, r
    e = r.error()
    assert e["param"] == "name" and e["type"] == "invalid_request_error", e
    assert_nothing_left(srv.registry, before)
    # nothing escaped names/ either (names/../x, names/a/b)
    assert not (srv.registry / "x").exists() and not (srv.registry / "names" / "a").exists()


def test_longest_name_is_accepted(srv, sa):
    n = "n" * 100
    assert upload(srv, n, sa(81)).status == 201
    assert srv.get(f"/v1/adapters/{n}").status == 200
    assert greedy(srv, n)


@pytest.mark.parametrize("path", ["/v1/adapters/.hidden", "/v1/adapters/a..b",
                                  "/v1/adapters/%2E%2E", "/v1/adapters/" + "y" * 101])
def test_bad_names_in_the_path_are_refused(srv, path):
    for method in ("GET", "DELETE"):
        r = srv.request(method, path)
        assert r.status in (400, 404), (method, path, r)
    r = srv.post(path + "/pin", b"")
    assert r.status in (400, 404), (path, r)


def test_upload_size_limit_is_413(server, models, tmp_path, sa):
    small = sa(82)
    size = sum(len(x) for x in adapter_files(small))
    big = models.adapter(models.stories, rank=64, targets="all", seed=83)  # ~1.5 MB
    root = tmp_path / "reg"
    s = server(models.stories, "--registry-dir", root, "--max-upload-bytes", size - 1)
    before = stored(root)
    cases = [("far above, Content-Length", big, {}),
             ("far above, chunked", big, {"chunked": True}),
             ("one byte above, Content-Length", small, {}),
             ("one byte above, chunked", small, {"chunked": True})]
    wrong = []
    for what, d, kw in cases:
        r = upload(s, "too-big", d, **kw)
        assert r.status == 413, (what, r)
        e = r.error()
        assert e["code"] == "request_too_large", (what, e)
        assert_nothing_left(root, before)
        if "max_upload_bytes" not in e["message"]:  # checked after every case has run
            wrong.append((what, e["message"]))
    assert s.get("/v1/adapters/too-big").status == 404
    # the server is fine afterwards, and the limit counts the two files exactly
    s.stop()
    s2 = server(models.stories, "--registry-dir", root, "--max-upload-bytes", size)
    assert upload(s2, "just-fits", small).status == 201
    assert not wrong, f"413 messages that do not name the upload limit: {wrong}"


def test_upload_size_limit_from_environment(server, models, sa):
    s = server(models.stories, env={"LORAMUX_MAX_UPLOAD_BYTES": "4096"})
    assert upload(s, "env-limit", sa(84)).status == 413


def test_missing_and_unexpected_parts_are_400(srv, sa):
    config, weights = adapter_files(sa(85))
    before = stored(srv.registry)
    cases = [([("adapter_config.json", config), ("adapter_model.safetensors", weights)], "name"),
             ([("name", "parts"), ("adapter_model.safetensors", weights)],
              "adapter_config.json"),
             ([("name", "parts"), ("adapter_config.json", config)],
              "adapter_model.safetensors"),
             ([("name", "parts")], "adapter_config.json"),
             ([("name", "parts"), ("adapter_config.json", b""),
               ("adapter_model.safetensors", weights)], "adapter_config.json"),
             ([("name", "parts"), ("adapter_config.json", config),
               ("adapter_model.safetensors", b"")], "adapter_model.safetensors"),
             ([("name", "parts"), ("adapter_config.json", config),
               ("adapter_model.safetensors", weights), ("adapter_model.bin", b"x")],
              "adapter_model.bin")]
    for parts, missing in cases:
        r = upload(srv, parts=parts)
        assert r.status == 400, (missing, r)
        e = r.error()
        assert e["param"] == missing, (missing, e)
        assert missing in e["message"], (missing, e)
        assert_nothing_left(srv.registry, before)
    # not multipart at all
    r = srv.post("/v1/adapters", {"name": "parts"})
    assert r.status == 400, r
    assert "multipart" in r.error()["message"]
    assert srv.get("/v1/adapters/parts").status == 404


def _corruptions(config, weights):
    header, tensors = st_parse(weights)
    keys = [k for k in header if k != "__metadata__"]
    out = {}
    out["truncated"] = (config, weights[:len(weights) // 2], ("exceed", "data section"))
    out["truncated in the header"] = (config, weights[:24], ("truncated", "header"))
    h = json.loads(json.dumps(header))
    last = keys[-1]
    a, b = h[last]["data_offsets"]
    h[last]["data_offsets"] = [a, b + 4096]  # past the end of the file
    out["offsets beyond the file"] = (config, st_build(h, tensors, raw_header=True),
                                      ("exceed", last))
    c = json.loads(config)
    c["peft_type"] = "ADALORA"
    out["peft_type ADALORA"] = (json.dumps(c).encode(), weights, ("peft_type", "ADALORA"))
    qb = next(k for k in keys if "lora_B" in k)
    out["missing lora_B"] = (config, st_build({k: v for k, v in header.items() if k != qb},
                                              tensors), ("missing", qb.rsplit(".lora_B", 1)[0]))
    qa = next(k for k in keys if "lora_A" in k)
    h = json.loads(json.dumps(header))
    r, n = h[qa]["shape"]
    h[qa]["shape"] = [r, n // 2]
    t = dict(tensors)
    t[qa] = tensors[qa][:r * (n // 2) * 4]
    out["wrong shape"] = (config, st_build(h, t), ("shape", qa, f"[{r}, {n // 2}]"))
    c = json.loads(config)
    c["r"] = c["r"] // 2
    out["rank in config differs from tensors"] = (json.dumps(c).encode(), weights,
                                                  ("shape", "expected"))
    out["config not JSON"] = (b"{not json", weights, ("adapter_config.json", "JSON"))
    out["weights not safetensors"] = (config, b"\x00" * 64, ("header",))
    return out


CORRUPTIONS = ["truncated", "truncated in the header", "offsets beyond the file",
               "peft_type ADALORA", "missing lora_B", "wrong shape",
               "rank in config differs from tensors", "config not JSON",
               "weights not safetensors"]


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_bad_adapters_are_400_with_the_reason_and_store_nothing(srv, sa, case):
    config, weights, reason = _corruptions(*adapter_files(sa(86)))[case]
    before = stored(srv.registry)
    r = upload(srv, "corrupt", config=config, weights=weights)
    assert r.status == 400, (case, r)
    e = r.error()
    assert e["type"] == "invalid_request_error" and e["code"] == "invalid_adapter", e
    for want in reason:
        assert want in e["message"], (case, e["message"])
    assert_nothing_left(srv.registry, before)
    assert srv.get("/v1/adapters/corrupt").status == 404
    # the same name still works with a good adapter (and then goes away again)
    assert upload(srv, "corrupt", sa(86)).status == 201
    assert srv.request("DELETE", "/v1/adapters/corrupt").status == 200


def test_refusal_messages_name_the_part_not_server_paths(srv, sa):
    """The message of a refused upload should name the part the client sent, not the
    server's temporary file (which also discloses the registry directory)."""
    config, weights = adapter_files(sa(87))
    r = upload(srv, "leaky", config=config, weights=weights[:len(weights) // 2])
    assert r.status == 400, r
    msg = r.error()["message"]
    assert "adapter_model.safetensors" in msg, msg
    assert str(srv.registry) not in msg and "tmp/up-" not in msg, msg


def test_an_adapter_for_another_base_is_refused(srv, models):
    before = stored(srv.registry)
    r = upload(srv, "wrong-base", models.adapter(models.chat, rank=8, targets="q,v", seed=1))
    assert r.status == 400, r
    assert "wrong-base" in r.error()["message"]  # chat-tiny has 2 layers, stories260K 5
    assert_nothing_left(srv.registry, before)


def test_uploads_need_the_api_key_before_any_byte_is_stored(server, models, tmp_path):
    """An unauthenticated client must not be able to make the server write its body to disk
    (up to max_upload_bytes, 1 GiB by default, per connection)."""
    root = tmp_path / "reg"
    s = server(models.stories, "--registry-dir", root, "--api-key", "k-1")
    d = models.adapter(models.stories, rank=64, targets="all", seed=88)  # ~1.5 MB
    seen = []

    def watch(sent):
        if sent > 256 * 1024 and len(seen) < 8:
            time.sleep(0.05)
            seen.append(tree_bytes(root / "tmp"))
    r = upload(s, "intruder", d, headers={"Authorization": "Bearer wrong"}, piece_size=65536,
               on_piece=watch)
    # once more after the answer: a server that closes right after its 401 stops the client
    # before 256 KiB are sent, and then this is the only look
    seen.append(tree_bytes(root / "tmp"))
    assert r.status == 401, r
    assert r.error()["type"] == "authentication_error"
    assert stored(root) == ({}, {})
    assert seen and max(seen) == 0, f"unauthenticated body bytes written to tmp/: {seen}"
    assert upload(s, "friend", d).status == 201  # with the key


# ---- residency and eviction ----

@pytest.fixture(scope="module")
def r64(models):
    """stories260K adapters of rank 64 on every projection (~1.48 MB resident each): a
    4 MiB budget holds two (fp32 factors: the sizes below assume them)."""
    return lambda seed: models.adapter(models.stories, rank=64, targets="all", seed=seed)


BUDGET_MB = 4


def use(srv, model):
    """A greedy request, then a short pause: the HTTP side holds its request (and so the
    adapter) until the response is sent, and an adapter in use cannot be evicted; without the
    pause the next request's load could race with that release."""
    out = greedy(srv, model)
    time.sleep(0.1)
    return out


def test_lru_eviction_under_a_budget_keeps_outputs_correct(server, models, r64):
    s = server(models.stories, "--adapter-memory-budget-mb", BUDGET_MB,
               "--adapter-dtype", "fp32")
    names = [f"ev{i}" for i in range(6)]
    first = {}
    for i, n in enumerate(names):
        o = upload_ok(s, n, r64(100 + i))
        assert o["resident"] is True  # an upload is left resident
        first[n] = use(s, n)
    assert len(set(first.values())) == len(names)
    per = s.get("/v1/adapters/ev0").json()["resident_bytes"] or \
        s.get("/v1/adapters/ev5").json()["resident_bytes"]
    assert 2 * per <= BUDGET_MB << 20 < 3 * per, per  # the premise of this test
    m0 = adapter_metrics(s)
    for _ in range(3):
        for n in names:
            assert use(s, n) == first[n], n
            d = s.get(f"/v1/adapters/{n}").json()
            assert d["resident"] is True, d  # just used
    m1 = adapter_metrics(s)
    # two fit, so every request of the round-robin loads its adapter and evicts one
    assert m1["adapter_evictions_total"] - m0["adapter_evictions_total"] == 3 * len(names)
    assert m1["adapter_loads_total"] - m0["adapter_loads_total"] == 3 * len(names)
    assert m1["adapters_resident"] <= 2
    assert m1["adapter_bytes_resident"] <= BUDGET_MB << 20
    listed = list_all(s)["data"]
    resident = [d for d in listed if d["resident"]]
    assert len(resident) == m1["adapters_resident"]
    assert sum(d["resident_bytes"] for d in resident) == m1["adapter_bytes_resident"]
    # the least recently used ones were evicted
    assert not s.get("/v1/adapters/ev0").json()["resident"]
    assert s.get("/v1/adapters/ev5").json()["resident"]


def test_pinned_adapter_is_never_evicted(server, models, r64):
    s = server(models.stories, "--adapter-memory-budget-mb", BUDGET_MB,
               "--adapter-dtype", "fp32")
    upload_ok(s, "keeper", r64(110))
    assert s.post("/v1/adapters/keeper/pin", b"").status == 200
    keeper_out = use(s, "keeper")
    others = [f"churn{i}" for i in range(4)]
    for i, n in enumerate(others):
        upload_ok(s, n, r64(111 + i))
    m0 = adapter_metrics(s)
    for _ in range(3):
        for n in others:
            use(s, n)
            assert s.get("/v1/adapters/keeper").json()["resident"] is True
    m1 = adapter_metrics(s)
    assert m1["adapter_evictions_total"] > m0["adapter_evictions_total"]
    loads = m1["adapter_loads_total"]
    assert use(s, "keeper") == keeper_out
    assert adapter_metrics(s)["adapter_loads_total"] == loads  # served from memory
    # unpinned, it ages out like any other
    assert s.post("/v1/adapters/keeper/unpin", b"").status == 200
    for n in others:
        use(s, n)
    assert s.get("/v1/adapters/keeper").json()["resident"] is False


def test_pin_of_one_name_survives_unpin_of_another_with_the_same_bytes(server, models, r64):
    """Two names, one version: pinning is per name, so unpinning "twin" must not make the
    pinned "orig" evictable."""
    s = server(models.stories, "--adapter-memory-budget-mb", BUDGET_MB,
               "--adapter-dtype", "fp32")
    upload_ok(s, "orig", r64(120))
    upload_ok(s, "twin", r64(120))
    assert s.post("/v1/adapters/orig/pin", b"").status == 200
    assert s.post("/v1/adapters/twin/unpin", b"").status == 200  # twin was never pinned
    for i in range(3):
        upload_ok(s, f"fill{i}", r64(121 + i))
    for _ in range(2):
        for i in range(3):
            use(s, f"fill{i}")
    d = s.get("/v1/adapters/orig").json()
    assert d["pinned"] is True
    assert d["resident"] is True, "a pinned adapter was evicted"


def test_old_version_of_a_pinned_name_does_not_stay_pinned(server, models, r64):
    """After a pinned name moves to a new version and is unpinned, nothing is pinned: the old
    version (no name refers to it) must not keep its place in the budget forever."""
    s = server(models.stories, "--adapter-memory-budget-mb", BUDGET_MB,
               "--adapter-dtype", "fp32")
    upload_ok(s, "p", r64(130))
    assert s.post("/v1/adapters/p/pin", b"").status == 200
    upload_ok(s, "p", r64(131))  # new version, still pinned
    assert s.post("/v1/adapters/p/unpin", b"").status == 200
    upload_ok(s, "a1", r64(132))
    upload_ok(s, "a2", r64(133))
    for _ in range(2):  # a1 and a2 fit the budget together once nothing else is held
        use(s, "a1")
        use(s, "a2")
    m0 = adapter_metrics(s)
    for _ in range(3):
        use(s, "a1")
        use(s, "a2")
    m1 = adapter_metrics(s)
    assert m1["adapter_loads_total"] == m0["adapter_loads_total"], \
        f"a1/a2 keep being reloaded: {m0} -> {m1}"


def test_budget_holds_again_once_an_adapter_in_use_is_released(server, models):
    """An adapter in use cannot be evicted, so a load may take the cache over the budget for
    a while; once the request is done, the cache must come back within the budget (not stay
    above it until some later load happens to evict). On the slow SmolLM-shaped base, so that
    the first request is certainly still running while the second adapter loads."""
    budget = 2  # MiB: one rank-8 q,v adapter of this base (1.84 MB), not two
    s = server(models.big, "--adapter-memory-budget-mb", budget, "--adapter-dtype", "fp32")
    upload_ok(s, "held", models.adapter(models.big, rank=8, targets="q,v", seed=74))
    per = upload_ok(s, "other", models.adapter(models.big, rank=8, targets="q,v",
                                               seed=75))["resident_bytes"]
    assert per <= budget << 20 < 2 * per, per  # the premise of this test
    st = s.stream("/v1/completions", dict(model="held", prompt="Hello", max_tokens=80,
                                          temperature=0, ignore_eos=True))
    assert st.status == 200 and st.next_event() is not None
    greedy_tokens(s, "other", 2)  # loads "other" while "held" runs
    assert s.metrics().get("loramux_requests_running") == 1, "the stream ended too early"
    assert s.get("/v1/adapters/held").json()["resident"] is True  # in use: never evicted
    st.read_all()
    st.close()
    assert st.done
    wait_until(lambda: adapter_metrics(s)["adapter_bytes_resident"] <= budget << 20, 5,
               what=f"resident bytes back within {budget} MiB after the request ended")


def test_replaced_versions_do_not_stay_resident(server, models, r64):
    """A version that no name refers to any more (and no request uses) can never be used
    again; with the default budget (unlimited) nothing would ever evict it, so moving a name
    to a new version, or deleting it, must drop the old compute-ready form."""
    s = server(models.stories)  # no budget
    for i in range(5):
        upload_ok(s, "often-updated", r64(160 + i))
    use(s, "often-updated")

    def one_left():
        m = adapter_metrics(s)
        assert m["adapters_resident"] == 1, m
        assert m["adapter_bytes_resident"] == \
            s.get("/v1/adapters/often-updated").json()["resident_bytes"], m
    eventually(one_left)
    assert s.request("DELETE", "/v1/adapters/often-updated").status == 200

    def none_left():
        m = adapter_metrics(s)
        assert m["adapters_resident"] == 0 and m["adapter_bytes_resident"] == 0, m
    eventually(none_left)


def test_loads_happen_on_first_use_only(server, models, r64):
    s = server(models.stories, "--adapter-memory-budget-mb", BUDGET_MB,
               "--adapter-dtype", "fp32")
    for i in range(3):
        upload_ok(s, f"lazy{i}", r64(140 + i))
    assert not s.get("/v1/adapters/lazy0").json()["resident"]  # evicted by lazy1, lazy2
    m0 = adapter_metrics(s)
    use(s, "lazy0")
    m1 = adapter_metrics(s)
    assert m1["adapter_loads_total"] == m0["adapter_loads_total"] + 1
    assert m1["adapter_evictions_total"] == m0["adapter_evictions_total"] + 1
    use(s, "lazy0")
    assert adapter_metrics(s)["adapter_loads_total"] == m1["adapter_loads_total"]
    assert s.get("/v1/adapters/lazy0").json()["resident"]


# ---- restarts and crashes ----

def test_restart_keeps_every_adapter(server, models, tmp_path, sa):
    root = tmp_path / "reg"
    s = server(models.stories, "--registry-dir", root)
    for i in range(5):
        upload_ok(s, f"keep{i}", sa(150 + i))
    upload_ok(s, "keep1", sa(160))                 # moved to a new version
    upload_ok(s, "keep-twin", sa(150))             # shares keep0's version
    assert s.post("/v1/adapters/keep2/pin", b"").status == 200
    assert s.request("DELETE", "/v1/adapters/keep3").status == 200
    path = str(sa(161))
    assert s.post("/v1/load_lora_adapter", {"lora_name": "keep-loaded",
                                            "lora_path": path}).status == 200
    before = list_all(s)
    outs = {d["name"]: greedy(s, d["name"]) for d in before["data"]}
    assert s.stop() == 0
    st = check_registry_consistent(root)
    assert st["tmp"] == []
    s2 = server(models.stories, "--registry-dir", root)
    after = list_all(s2)
    assert after["total"] == before["total"] == 6
    assert [stable(d) for d in after["data"]] == [stable(d) for d in before["data"]]
    assert all(d["resident"] is False for d in after["data"])  # loaded on first use
    for n, o in outs.items():
        assert greedy(s2, n) == o, n
        assert s2.get(f"/v1/adapters/{n}").json()["resident"] is True
    assert s2.get("/v1/adapters/keep3").status == 404
    assert s2.get("/v1/adapters/keep2").json()["pinned"] is True
    assert s2.request("DELETE", "/v1/adapters/keep2").status == 409
    ids = {m["id"] for m in s2.get("/v1/models").json()["data"]}
    assert set(outs) <= ids


def test_registry_dir_is_locked_by_one_server(server, models, tmp_path):
    root = tmp_path / "reg"
    server(models.stories, "--registry-dir", root)
    s2 = server(models.stories, "--registry-dir", root, wait=False)
    assert s2.wait_exit(60) != 0
    assert "LOCK" in s2.log() or "in use" in s2.log(), s2.log()


class _Killed(Exception):
    pass


def _staged(s, v_new):
    """The upload's staging directory is complete (manifest written): the commit is past its
    fsyncs and about to rename the blob into blobs/."""
    return any((d / "manifest").exists() for d in (s.registry / "tmp").glob("up-*"))


def _blob_in_place(s, v_new):
    """The new blob is in blobs/; the name may not have moved yet."""
    return (s.registry / "blobs" / v_new[7:]).exists()


def _upload_and_kill(s, name, adapter, when, v_new, pace=0.002):
    """Sends the upload on a raw socket in 256 KiB pieces (pace seconds apart) and kills the
    server with SIGKILL at the moment `when` says:
      ("bytes", n)    once n bytes of the body have been sent (mid-body);
      ("delay", t)    t seconds after the whole body was sent;
      ("watch", f)    after the whole body, as soon as f(s, v_new) is true (polled);
      ("response",)   right after the response arrived.
    Returns what happened: bytes sent, what tmp/ held before the kill, the server's RSS
    growth (KiB) while the body streamed in, the status when a response was read."""
    ctype, total, body = multipart(upload_parts(name, adapter))
    head = (f"POST /v1/adapters HTTP/1.1\r\nHost: {s.host}:{s.port}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {total}\r\n\r\n").encode()
    rss0 = rss_kb(s.proc.pid)
    kill_at = when[1] if when[0] == "bytes" else None
    info = {"when": when[0], "sent": 0, "total": total}
    sock = socket.create_connection((s.host, s.port), timeout=60)
    try:
        sock.sendall(head)
        for piece in body:
            for i in range(0, len(piece), 256 * 1024):
                p = piece[i:i + 256 * 1024]
                if kill_at is not None and info["sent"] + len(p) > kill_at:
                    p = p[:max(0, kill_at - info["sent"])]
                    sock.sendall(p)
                    info["sent"] += len(p)
                    raise _Killed
                sock.sendall(p)
                info["sent"] += len(p)
                time.sleep(pace)
        t_body = time.monotonic()
        if when[0] == "delay":
            time.sleep(when[1])
        elif when[0] == "watch":
            while not when[1](s, v_new) and time.monotonic() < t_body + 30:
                time.sleep(0.0005)
            info["watched"] = when[1](s, v_new)
        elif when[0] == "response":
            resp = http.client.HTTPResponse(sock, method="POST")
            resp.begin()
            info["status"] = resp.status
        info["after_body_s"] = round(time.monotonic() - t_body, 3)
    except _Killed:
        time.sleep(0.5)  # let the server write what it received
    finally:
        info["tmp_bytes"] = tree_bytes(s.registry / "tmp")
        info["rss_growth_kb"] = rss_kb(s.proc.pid) - rss0
        s.proc.kill()
        s.wait_exit(30)
        sock.close()
    return info


# kill moments: mid-body (the name must stay at the old version), after the body (old or
# new), and right after the 201 (the new version must survive)
KILL_MOMENTS = {"in the config part": ("bytes", 400),
                "mid-weights": ("bytes", "half"),
                "body sent, validating": ("delay", 0.05),
                "staged, before the blob rename": ("watch", _staged),
                "blob renamed, name not yet moved": ("watch", _blob_in_place),
                "right after the 201": ("response",)}


@pytest.mark.parametrize("moment", list(KILL_MOMENTS))
def test_kill_during_upload_leaves_old_or_new_state(server, models, tmp_path, moment):
    root = tmp_path / "reg"
    old = models.adapter(models.big, rank=8, targets="q,v", seed=170)
    huge = models.adapter(models.big, rank=64, targets="all", seed=171)  # ~78 MB
    v_old, v_new = adapter_dir_version(old), adapter_dir_version(huge)
    s = server(models.big, "--registry-dir", root)
    s.registry = root
    upload_ok(s, "crashy", old)
    upload_ok(s, "bystander", models.adapter(models.big, rank=8, targets="q,v", seed=172))
    out_old = greedy_tokens(s, "crashy", 6)
    out_by = greedy_tokens(s, "bystander", 6)
    when = KILL_MOMENTS[moment]
    if when == ("bytes", "half"):
        when = ("bytes", multipart(upload_parts("crashy", huge))[1] // 2)
    info = _upload_and_kill(s, "crashy", huge, when, v_new)
    if when[0] == "bytes" and when[1] > 1 << 20:
        # mid-body: the bytes went to tmp/, not into memory
        assert info["tmp_bytes"] > when[1] // 2, info
        assert info["rss_growth_kb"] < 32 * 1024, info
    if when[0] == "response":
        assert info["status"] == 201, info
    # the directory as the crash left it: whatever is in names/ and blobs/ is complete
    check_registry_consistent(root, rehash=False)
    s2 = server(models.big, "--registry-dir", root)
    st = registry_state(root)
    assert st["tmp"] == [], st
    names = {n: v for n, (v, _) in st["names"].items()}
    assert set(names) == {"crashy", "bystander"}, names
    assert set(st["blobs"]) == {v[7:] for v in names.values()}, st  # no orphan, no half blob
    got = s2.get("/v1/adapters/crashy").json()["version"]
    print(f"\n{moment}: {info}, name at the {'old' if got == v_old else 'new'} version")
    if when[0] == "bytes":
        assert got == v_old, (moment, info)
    elif when[0] == "response":
        assert got == v_new, (moment, info)  # a completed upload survives kill -9
    else:
        assert got in (v_old, v_new), (moment, info)
    if got == v_old:
        assert greedy_tokens(s2, "crashy", 6) == out_old
    else:
        d = s2.get("/v1/adapters/crashy").json()
        assert d["bytes"] == len(FilePart(huge / "adapter_config.json")) + \
            len(FilePart(huge / "adapter_model.safetensors"))
        assert d["rank"] == 64
        assert len(greedy_tokens(s2, "crashy", 2)) == 2
    assert greedy_tokens(s2, "bystander", 6) == out_by
    # and the registry takes the upload now
    assert upload(s2, "crashy", huge).status in (200, 201)
    assert s2.stop() == 0
    check_registry_consistent(root)


# ---- vLLM's endpoints and --adapter-dir are backed by the registry ----

def test_load_and_unload_lora_adapter_use_the_registry(srv, sa):
    path = sa(180)
    r = srv.post("/v1/load_lora_adapter", {"lora_name": "vl", "lora_path": str(path)})
    assert r.status == 200, r
    d = srv.get("/v1/adapters/vl")
    assert d.status == 200, d
    d = d.json()
    assert d["version"] == adapter_dir_version(path)
    assert d["bytes"] == sum(len(x) for x in adapter_files(path))
    assert d["method"] == "lora" and d["rank"] == 8
    assert "vl" in names_of(srv)
    assert registry_state(srv.registry)["names"]["vl"][0] == d["version"]
    # the same bytes uploaded give the same version and the same output
    assert upload_ok(srv, "vl-up", path)["version"] == d["version"]
    assert greedy(srv, "vl") == greedy(srv, "vl-up")
    # an upload moves a name that load_lora_adapter made, and load refuses an existing name
    r = srv.post("/v1/load_lora_adapter", {"lora_name": "vl", "lora_path": str(path)})
    assert r.status == 400, r
    r = srv.post("/v1/unload_lora_adapter", {"lora_name": "vl"})
    assert r.status == 200, r
    assert srv.get("/v1/adapters/vl").status == 404
    assert "vl" not in names_of(srv)
    # an uploaded adapter can be unloaded the vLLM way
    assert srv.post("/v1/unload_lora_adapter", {"lora_name": "vl-up"}).status == 200
    assert srv.request("HEAD", "/v1/adapters/vl-up").status == 404


def test_unload_of_a_pinned_adapter_is_refused_not_404(srv, sa):
    upload_ok(srv, "vl-pinned", sa(181))
    assert srv.post("/v1/adapters/vl-pinned/pin", b"").status == 200
    try:
        r = srv.post("/v1/unload_lora_adapter", {"lora_name": "vl-pinned"})
        assert srv.get("/v1/adapters/vl-pinned").status == 200  # still there
        assert r.status == 409, r  # like DELETE; "cannot be found" would be false
    finally:
        srv.post("/v1/adapters/vl-pinned/unpin", b"")
        srv.request("DELETE", "/v1/adapters/vl-pinned")


def test_adapter_dir_imports_into_the_registry(server, models, tmp_path, sa):
    specs = {f"imp{i}": dict(rank=8, targets="q,v", seed=190 + i) for i in range(3)}
    d = models.adapter_dir(models.stories, specs, "registry-import")
    root = tmp_path / "reg"
    s = server(models.stories, "--adapter-dir", d, "--registry-dir", root)
    listed = {x["name"]: x for x in list_all(s)["data"]}
    assert set(listed) == set(specs)
    for n in specs:
        assert listed[n]["version"] == adapter_dir_version(d / n)
    assert set(registry_state(root)["names"]) == set(specs)
    outs = {n: greedy(s, n) for n in specs}
    # a restart with the same directory is idempotent
    s.stop()
    s2 = server(models.stories, "--adapter-dir", d, "--registry-dir", root)
    assert {x["name"]: x["version"] for x in list_all(s2)["data"]} == \
        {n: x["version"] for n, x in listed.items()}
    assert {n: greedy(s2, n) for n in specs} == outs
