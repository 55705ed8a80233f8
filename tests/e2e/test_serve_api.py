"""`loramux serve`: the OpenAI API on stories260K (completions) and a synthetic ChatML model
(chat): response shapes, streaming, sampling options, logprobs, usage and request errors."""
import json
import re
import threading
import time

import pytest

STORIES_ID = "stories260K-hf"


@pytest.fixture(scope="module")
def stories_adapters(models):
    return models.adapter_dir(models.stories, {"ad-one": dict(seed=1), "ad-two": dict(seed=2)},
                              "api-two")


@pytest.fixture(scope="module")
def srv(module_server, models, stories_adapters):
    """stories260K with two LoRA adapters."""
    return module_server(models.stories, "--adapter-dir", stories_adapters)


@pytest.fixture(scope="module")
def chat_srv(module_server, models):
    return module_server(models.chat)


def greedy(**kw):
    kw.setdefault("temperature", 0)
    return kw


def generate_text(run, model, prompt, n):
    r = run("generate", "--model", model, "--prompt", prompt, "--max-tokens", n,
            "--temperature", 0)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("\n")
    return r.stdout[:-1]


def tokenize(run, model, text):
    r = run("tokenize", "--model", model, "--text", text)
    assert r.returncode == 0, r.stderr
    return [int(t) for t in r.stdout.split()]


# ---- health, readiness, models ----

def test_health_and_ready(srv):
    r = srv.get("/health")
    assert r.status == 200 and r.json() == {"status": "ok"}
    r = srv.get("/ready")
    assert r.status == 200


def test_models_lists_base_and_adapters(srv, stories_adapters):
    r = srv.get("/v1/models")
    assert r.status == 200, r
    o = r.json()
    assert o["object"] == "list"
    by_id = {m["id"]: m for m in o["data"]}
    assert set(by_id) == {STORIES_ID, "ad-one", "ad-two"}
    for m in o["data"]:
        assert m["object"] == "model"
        assert isinstance(m["created"], int) and m["created"] > 1_600_000_000
        assert isinstance(m["owned_by"], str) and m["owned_by"]
        assert isinstance(m["root"], str) and m["root"]
    base = by_id[STORIES_ID]
    assert base["parent"] is None
    assert base["root"].rstrip("/").endswith(STORIES_ID)
    for name in ("ad-one", "ad-two"):
        assert by_id[name]["parent"] == STORIES_ID
        assert by_id[name]["root"].rstrip("/").endswith(name)


def test_model_name_flag(server, models):
    s = server(models.stories, "--model-name", "tiny-stories")
    ids = [m["id"] for m in s.get("/v1/models").json()["data"]]
    assert ids == ["tiny-stories"]
    o = s.completion(model="tiny-stories", prompt="Once", max_tokens=3, temperature=0)
    assert o["model"] == "tiny-stories"
    r = s.post("/v1/completions", {"model": STORIES_ID, "prompt": "Once", "max_tokens": 3})
    assert r.status == 404, r
    assert STORIES_ID in r.error()["message"]


# ---- completions ----

def test_completion_shape_and_usage(srv, run, models):
    o = srv.completion(prompt="Once upon a time", max_tokens=12, **greedy())
    assert re.fullmatch(r"cmpl-[A-Za-z0-9_-]+", o["id"]), o["id"]
    assert o["object"] == "text_completion"
    assert o["model"] == STORIES_ID
    assert isinstance(o["created"], int)
    assert len(o["choices"]) == 1
    c = o["choices"][0]
    assert c["index"] == 0 and isinstance(c["text"], str) and c["text"]
    assert c["logprobs"] is None
    assert c["finish_reason"] == "length"
    n_prompt = len(tokenize(run, models.stories, "Once upon a time"))
    assert o["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": 12,
                          "total_tokens": n_prompt + 12}


@pytest.mark.parametrize("prompt", ["Once upon a time", "", "Tom and Lily went to the"])
def test_greedy_matches_generate_command(srv, run, models, prompt):
    expected = generate_text(run, models.stories, prompt, 60)
    o = srv.completion(prompt=prompt, max_tokens=60, **greedy())
    assert o["choices"][0]["text"] == expected
    st = srv.stream("/v1/completions", dict(prompt=prompt, max_tokens=60, **greedy())).read_all()
    assert st.status == 200 and st.done
    assert st.text() == expected


def test_streaming_completion_events(srv):
    # 200 tokens: a step of this tiny model takes well under a millisecond, and a stream
    # carries whatever text is new when the connection's thread wakes, so a short generation
    # can legitimately arrive as one or two events
    full = srv.completion(prompt="Lily", max_tokens=200, ignore_eos=True, **greedy())
    st = srv.stream("/v1/completions", dict(prompt="Lily", max_tokens=200, ignore_eos=True,
                                            **greedy()))
    assert st.status == 200
    assert st.headers["content-type"].startswith("text/event-stream")
    st.read_all()
    assert st.done, st.lines[-3:]
    assert len(st.events) >= 3  # incremental, not one blob
    ids = {ev["id"] for ev in st.events}
    assert len(ids) == 1 and next(iter(ids)).startswith("cmpl-")
    for ev in st.events:
        assert ev["object"] == "text_completion"
        assert ev["model"] == STORIES_ID
        for c in ev["choices"]:
            assert c["index"] == 0 and isinstance(c["text"], str)
    assert st.text() == full["choices"][0]["text"]
    assert st.finish_reason() == "length"
    # the finish_reason comes once, on the last choice chunk
    last = st.choice_events()[-1]
    assert last["finish_reason"] == "length"
    assert all(c["finish_reason"] is None for c in st.choice_events()[:-1])
    assert st.usage() is None  # no usage unless stream_options.include_usage


def test_concurrent_streams_are_woken_every_step(srv):
    # The engine wakes every stream that got a token once the step's tokens are all handled.
    # A stream it left out would hear nothing until its request finished (or its connection
    # thread's 1-s fallback poll ran out): 400 tokens in one or two events. Woken each step, a
    # stream's thread sends whatever is new each time it wakes: many events, fewer than tokens
    # when it wakes later than a step of this tiny model.
    counts = [None] * 4

    def one(i):
        st = srv.stream("/v1/completions", dict(prompt="Lily", max_tokens=400, ignore_eos=True,
                                                **greedy()))
        assert st.status == 200
        st.read_all()
        assert st.done
        counts[i] = len(st.choice_events())

    for _ in range(2):  # again: a request leaves the engine's wake list after every step
        th = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        assert all(c is not None and c >= 10 for c in counts), counts


def test_max_tokens_gives_length(srv):
    o = srv.completion(prompt="Once", max_tokens=5, temperature=1.0, seed=3, ignore_eos=True)
    assert o["choices"][0]["finish_reason"] == "length"
    assert o["usage"]["completion_tokens"] == 5
    # without max_tokens: --max-tokens-default (256), capped by the context (512)
    o = srv.completion(prompt="Once", temperature=1.0, seed=3, ignore_eos=True)
    assert o["usage"]["completion_tokens"] == 256
    long_prompt = "Once upon a time " * 70
    o = srv.completion(prompt=long_prompt, temperature=1.0, seed=3, ignore_eos=True)
    assert o["usage"]["prompt_tokens"] > 256
    assert o["usage"]["prompt_tokens"] + o["usage"]["completion_tokens"] == 512
    assert o["choices"][0]["finish_reason"] == "length"


def test_eos_gives_stop(server, models):
    s = server(models.stories_eos1)
    # seed 1 samples token 1 (EOS in this copy) as its 260th token
    o = s.completion(prompt="", max_tokens=500, temperature=1.0, seed=1)
    c = o["choices"][0]
    assert c["finish_reason"] == "stop"
    assert 0 < o["usage"]["completion_tokens"] < 500
    assert "<s>" not in c["text"] and "</s>" not in c["text"]
    p = s.completion(prompt="", max_tokens=500, temperature=1.0, seed=1, ignore_eos=True)
    assert p["choices"][0]["finish_reason"] == "length"
    assert p["usage"]["completion_tokens"] == 500
    assert p["choices"][0]["text"].startswith(c["text"])
    st = s.stream("/v1/completions", dict(prompt="", max_tokens=500, temperature=1.0,
                                          seed=1)).read_all()
    assert st.done and st.finish_reason() == "stop" and st.text() == c["text"]


def test_ignore_eos_runs_to_max_tokens(srv):
    o = srv.completion(prompt="", max_tokens=500, temperature=1.0, seed=1, ignore_eos=True)
    assert o["choices"][0]["finish_reason"] == "length"
    assert o["usage"]["completion_tokens"] == 500


def test_stop_strings(srv):
    full = srv.completion(prompt="", max_tokens=60, **greedy())["choices"][0]["text"]
    assert full.startswith("Once upon a time, there was a little girl named Lily")
    for stop, expected in (("Lily", "Once upon a time, there was a little girl named "),
                           (["zzz", "Lily"], "Once upon a time, there was a little girl named "),
                           (["Lily", " named L"], "Once upon a time, there was a little girl"),
                           ("Once", "")):
        o = srv.completion(prompt="", max_tokens=60, stop=stop, **greedy())
        c = o["choices"][0]
        assert c["text"] == expected, stop
        assert c["finish_reason"] == "stop"
        st = srv.stream("/v1/completions",
                        dict(prompt="", max_tokens=60, stop=stop, **greedy())).read_all()
        assert st.done and st.text() == c["text"], stop
        assert st.finish_reason() == "stop"
    # a stop string that never occurs changes nothing
    o = srv.completion(prompt="", max_tokens=60, stop=["qqqq"], **greedy())
    assert o["choices"][0]["text"] == full and o["choices"][0]["finish_reason"] == "length"


def test_stop_string_across_token_boundaries(srv):
    o = srv.completion(prompt="", max_tokens=60, logprobs=0, **greedy())
    text = o["choices"][0]["text"]
    offs = o["choices"][0]["logprobs"]["text_offset"] + [len(text)]
    toks = [text[offs[i]:offs[i + 1]] for i in range(len(offs) - 1)]
    # stop strings made of the end of one token and the start of the next ones
    checked = 0
    for k in range(3, len(toks) - 3, 5):
        a, b = toks[k], toks[k + 1] + toks[k + 2]
        if len(a) < 2 or len(b) < 2:
            continue
        stop = a[-2:] + b[:3]
        cut = text.find(stop)
        expected = text[:cut]
        o2 = srv.completion(prompt="", max_tokens=60, stop=stop, **greedy())
        assert o2["choices"][0]["text"] == expected, stop
        assert o2["choices"][0]["finish_reason"] == "stop"
        st = srv.stream("/v1/completions",
                        dict(prompt="", max_tokens=60, stop=stop, **greedy())).read_all()
        assert st.done
        assert st.text() == expected, stop
        for c in st.choice_events():  # no chunk carries any part of the stop string's match
            assert stop not in c["text"]
        checked += 1
    assert checked >= 3


def test_seed_reproducible(srv):
    body = dict(prompt="Lily", max_tokens=40, temperature=1.0, top_p=0.95, ignore_eos=True)
    a = srv.completion(seed=7, **body)["choices"][0]["text"]
    b = srv.completion(seed=7, **body)["choices"][0]["text"]
    c = srv.completion(seed=8, **body)["choices"][0]["text"]
    assert a == b
    assert a != c
    st = srv.stream("/v1/completions", dict(seed=7, **body)).read_all()
    assert st.text() == a


def test_sampling_parameters(srv):
    body = dict(prompt="Lily", max_tokens=30, temperature=0.8, top_k=20, top_p=0.9, min_p=0.05,
                repetition_penalty=1.1, presence_penalty=0.5, frequency_penalty=0.5, seed=4,
                ignore_eos=True)
    a = srv.completion(**body)["choices"][0]["text"]
    assert a == srv.completion(**body)["choices"][0]["text"]
    assert srv.completion(**dict(body, top_k=-1))["usage"]["completion_tokens"] == 30
    # top_k 1 is greedy whatever the temperature
    g = srv.completion(prompt="Lily", max_tokens=30, temperature=0)["choices"][0]["text"]
    assert srv.completion(prompt="Lily", max_tokens=30, temperature=1.5, top_k=1,
                          seed=9)["choices"][0]["text"] == g


def test_n_choices(srv):
    o = srv.completion(prompt="Lily", max_tokens=20, n=3, temperature=1.0, seed=11,
                       ignore_eos=True)
    assert [c["index"] for c in o["choices"]] == [0, 1, 2]
    texts = [c["text"] for c in o["choices"]]
    assert len(set(texts)) >= 2, texts  # sampled choices differ
    assert o["usage"]["completion_tokens"] == 60
    st = srv.stream("/v1/completions", dict(prompt="Lily", max_tokens=20, n=3, temperature=1.0,
                                            seed=11, ignore_eos=True)).read_all()
    assert st.done
    assert [st.text(i) for i in range(3)] == texts
    assert [st.finish_reason(i) for i in range(3)] == ["length"] * 3
    g = srv.completion(prompt="Lily", max_tokens=20, n=2, **greedy())
    assert g["choices"][0]["text"] == g["choices"][1]["text"]


def test_n_counts_the_prompt_once(srv):
    # OpenAI / vLLM: usage.prompt_tokens is the prompt's length, whatever n is
    one = srv.completion(prompt="Lily", max_tokens=4, ignore_eos=True, **greedy())["usage"]
    three = srv.completion(prompt="Lily", max_tokens=4, n=3, ignore_eos=True,
                           **greedy())["usage"]
    assert three["completion_tokens"] == 12
    assert three["prompt_tokens"] == one["prompt_tokens"]
    assert three["total_tokens"] == one["prompt_tokens"] + 12


def test_keep_alive_connection(srv):
    conn = srv.connection(30)
    try:
        for stream in (False, True, False, True):
            body = {"model": STORIES_ID, "prompt": "Lily", "max_tokens": 8, "temperature": 0,
                    "stream": stream, "user": "keep-alive-test"}
            conn.request("POST", "/v1/completions", body=json.dumps(body),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            assert r.status == 200, data
            if stream:
                assert data.rstrip().endswith(b"data: [DONE]")
            else:
                assert json.loads(data)["usage"]["completion_tokens"] == 8
        conn.request("GET", "/v1/models")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["data"]
    finally:
        conn.close()


def test_logprobs_completions(srv):
    o = srv.completion(prompt="Once upon a time", max_tokens=15, logprobs=3, **greedy())
    c = o["choices"][0]
    lp = c["logprobs"]
    assert set(lp) >= {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    n = o["usage"]["completion_tokens"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == \
        len(lp["text_offset"]) == n == 15
    assert lp["text_offset"][0] == 0
    assert lp["text_offset"] == sorted(lp["text_offset"])
    assert lp["text_offset"][-1] < len(c["text"])
    for i in range(n):
        assert isinstance(lp["tokens"][i], str)
        top = lp["top_logprobs"][i]
        assert isinstance(top, dict) and 1 <= len(top) <= 4
        assert all(v <= 0 for v in top.values())
        assert lp["token_logprobs"][i] <= 0
        # greedy: the chosen token is the most likely one
        assert lp["token_logprobs"][i] == pytest.approx(max(top.values()), abs=1e-4)
    st = srv.stream("/v1/completions", dict(prompt="Once upon a time", max_tokens=15,
                                            logprobs=3, **greedy())).read_all()
    assert st.tokens() == lp["tokens"]
    # logprobs: 0 still gives the sampled tokens' logprobs
    o = srv.completion(prompt="Once upon a time", max_tokens=5, logprobs=0, **greedy())
    assert len(o["choices"][0]["logprobs"]["token_logprobs"]) == 5


def test_logprobs_tokens_spell_the_text(srv):
    # OpenAI/vLLM: logprobs.tokens are the text pieces of the tokens, so they concatenate to
    # the completion's text and text_offset[i] is where tokens[i] starts in it
    o = srv.completion(prompt="Once upon a time", max_tokens=15, logprobs=1, **greedy())
    c = o["choices"][0]
    assert "".join(c["logprobs"]["tokens"]) == c["text"]
    o = srv.completion(prompt="Once upon a time", max_tokens=10, echo=True, logprobs=1,
                       **greedy())
    c = o["choices"][0]
    for tok, off in zip(c["logprobs"]["tokens"], c["logprobs"]["text_offset"]):
        assert c["text"][off:].startswith(tok), (tok, off, c["text"])


def test_echo(srv):
    plain = srv.completion(prompt="Once upon a time", max_tokens=10, **greedy())
    o = srv.completion(prompt="Once upon a time", max_tokens=10, echo=True, **greedy())
    assert o["choices"][0]["text"] == "Once upon a time" + plain["choices"][0]["text"]
    assert o["usage"] == plain["usage"]
    st = srv.stream("/v1/completions", dict(prompt="Once upon a time", max_tokens=10, echo=True,
                                            **greedy())).read_all()
    assert st.text() == o["choices"][0]["text"]


def test_stream_include_usage(srv, run, models):
    n_prompt = len(tokenize(run, models.stories, "Once upon a time"))
    st = srv.stream("/v1/completions", dict(prompt="Once upon a time", max_tokens=9,
                                            stream_options={"include_usage": True},
                                            **greedy())).read_all()
    assert st.done
    last = st.events[-1]
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": 9,
                             "total_tokens": n_prompt + 9}
    assert all(not ev.get("usage") for ev in st.events[:-1])


def test_unknown_stream_option_is_400(srv):
    r = srv.post("/v1/completions", {"model": STORIES_ID, "prompt": "x", "max_tokens": 2,
                                     "stream": True,
                                     "stream_options": {"include_usge": True}})
    assert r.status == 400, r
    e = r.error()
    assert e["param"] in ("stream_options", "stream_options.include_usge"), e
    assert "include_usge" in e["message"], e


def test_prompt_as_token_ids(srv, run, models):
    ids = tokenize(run, models.stories, "Once upon a time")
    a = srv.completion(prompt="Once upon a time", max_tokens=20, **greedy())
    b = srv.completion(prompt=ids, max_tokens=20, **greedy())
    assert b["choices"][0]["text"] == a["choices"][0]["text"]
    assert b["usage"]["prompt_tokens"] == len(ids)
    # a batch of prompts: one choice per prompt, in order
    c = srv.completion(prompt=["Once upon a time", "Lily"], max_tokens=20, **greedy())
    d = srv.completion(prompt="Lily", max_tokens=20, **greedy())
    assert [x["index"] for x in c["choices"]] == [0, 1]
    assert c["choices"][0]["text"] == a["choices"][0]["text"]
    assert c["choices"][1]["text"] == d["choices"][0]["text"]
    e = srv.completion(prompt=[ids, ids[:2]], max_tokens=5, **greedy())
    assert len(e["choices"]) == 2
    assert e["choices"][0]["text"] == srv.completion(prompt=ids, max_tokens=5, **greedy()) \
        ["choices"][0]["text"]


# ---- request errors ----

def assert_bad(resp, param, named=True):
    """A 400 invalid_request_error whose param is the field (and whose message names it)."""
    assert resp.status == 400, resp
    e = resp.error()
    assert e["type"] == "invalid_request_error", e
    assert e["param"] == param, e
    if named:
        assert param.split(".")[0].split("[")[0] in e["message"], e
    return e


@pytest.mark.parametrize("field,value", [
    ("temperature", "hot"), ("temperature", -1), ("max_tokens", 0), ("max_tokens", 1.5),
    ("top_p", 0), ("top_p", 1.5), ("n", 0), ("stop", 5), ("stop", ["a", 1]), ("seed", "x"),
    ("logprobs", 100), ("logprobs", True), ("stream", "yes"), ("echo", 1),
    ("stream_options", "x"), ("prompt", 5), ("prompt", []), ("prompt", [1, 100000]),
    ("presence_penalty", 3), ("frequency_penalty", "x"), ("top_k", 0.5), ("ignore_eos", "x"),
    ("adapters", "ad-one"),
])
def test_bad_field_is_400_naming_it(srv, field, value):
    body = {"model": STORIES_ID, "prompt": "Once", "max_tokens": 5, field: value}
    assert_bad(srv.post("/v1/completions", body), field)


def test_unknown_field_is_400_naming_it(srv):
    r = srv.post("/v1/completions", {"model": STORIES_ID, "prompt": "x", "max_tokens": 2,
                                     "frobnicate": 1})
    assert_bad(r, "frobnicate")
    # chat-only fields are unknown to completions, and the other way round
    r = srv.post("/v1/completions", {"model": STORIES_ID, "prompt": "x", "top_logprobs": 2})
    assert_bad(r, "top_logprobs")


def test_missing_fields(srv):
    assert_bad(srv.post("/v1/completions", {"model": STORIES_ID}), "prompt")
    assert_bad(srv.post("/v1/completions", {"prompt": "x"}), "model")
    assert_bad(srv.post("/v1/completions", {"model": 5, "prompt": "x"}), "model")


@pytest.mark.parametrize("body", [b'{"model": "stories260K-hf", "prompt": ', b"not json",
                                  b"", b"[1, 2]", b'"a string"', b'{"model": "x",}'])
def test_malformed_json_is_400(srv, body):
    r = srv.post("/v1/completions", body)
    assert r.status == 400, r
    e = r.error()
    assert e["type"] == "invalid_request_error"
    assert "JSON" in e["message"] or "json" in e["message"]


def test_malformed_json_raw_socket(srv):
    body = b'{"model": "stories260K-hf", "prompt": "x"'
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    status, hdrs, rest = srv.raw(req)
    assert status == 400
    assert hdrs["content-type"].startswith("application/json")
    assert json.loads(rest)["error"]["type"] == "invalid_request_error"


def test_context_limits(srv):
    # stories260K: context 512
    r = srv.post("/v1/completions", {"model": STORIES_ID, "prompt": "Once upon a time " * 200,
                                     "max_tokens": 5})
    assert_bad(r, "prompt")
    r = srv.post("/v1/completions", {"model": STORIES_ID, "prompt": "Once", "max_tokens": 600})
    assert_bad(r, "max_tokens")


def test_chat_without_template_is_clear_400(srv):
    r = srv.post("/v1/chat/completions",
                 {"model": STORIES_ID, "messages": [{"role": "user", "content": "hi"}]})
    e = assert_bad(r, "messages", named=False)
    assert "chat template" in e["message"] and "/v1/completions" in e["message"]


def test_unknown_model_is_404(srv):
    r = srv.post("/v1/completions", {"model": "no-such-adapter", "prompt": "x", "max_tokens": 2})
    assert r.status == 404, r
    e = r.error()
    assert e["code"] == "model_not_found"
    assert "no-such-adapter" in e["message"]
    r = srv.stream("/v1/completions", {"model": "no-such-adapter", "prompt": "x"})
    assert r.status == 404
    r.close()


def test_routes_and_methods(srv):
    assert srv.get("/v1/nope").status == 404
    assert srv.get("/nope").status == 404
    r = srv.get("/v1/completions")
    assert r.status == 405, r
    assert srv.post("/v1/models", {}).status == 405


# ---- chat ----

HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello!"}]


def test_chat_shape(chat_srv, run, models):
    o = chat_srv.chat(messages=HELLO, max_tokens=8, ignore_eos=True, **greedy())
    assert re.fullmatch(r"chatcmpl-[A-Za-z0-9_-]+", o["id"]), o["id"]
    assert o["object"] == "chat.completion"
    assert o["model"] == models.chat.name
    c = o["choices"][0]
    assert c["index"] == 0
    assert c["message"]["role"] == "assistant"
    assert isinstance(c["message"]["content"], str)
    assert c["finish_reason"] == "length"
    rendered = ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello!"
                "<|im_end|>\n<|im_start|>assistant\n")
    assert o["usage"]["prompt_tokens"] == len(tokenize(run, models.chat, rendered))
    assert o["usage"]["completion_tokens"] == 8


def test_chat_renders_chatml(chat_srv):
    # the same greedy tokens as a completion of the rendered ChatML prompt
    rendered = ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello!"
                "<|im_end|>\n<|im_start|>assistant\n")
    a = chat_srv.chat(messages=HELLO, max_tokens=12, ignore_eos=True, **greedy())
    b = chat_srv.completion(prompt=rendered, max_tokens=12, ignore_eos=True, **greedy())
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["text"]
    assert a["usage"] == b["usage"]
    # developer = system; content may be a list of text parts
    c = chat_srv.chat(messages=[{"role": "developer", "content": "You are terse."},
                                {"role": "user", "content": [{"type": "text", "text": "Hel"},
                                                             {"type": "text", "text": "lo!"}]}],
                      max_tokens=12, ignore_eos=True, **greedy())
    assert c["choices"][0]["message"]["content"] == a["choices"][0]["message"]["content"]


def test_chat_streaming(chat_srv):
    full = chat_srv.chat(messages=HELLO, max_tokens=16, ignore_eos=True, **greedy())
    st = chat_srv.stream("/v1/chat/completions",
                         dict(messages=HELLO, max_tokens=16, ignore_eos=True,
                              stream_options={"include_usage": True}, **greedy())).read_all()
    assert st.status == 200 and st.done
    for ev in st.events:
        assert ev["object"] == "chat.completion.chunk"
        assert ev["id"].startswith("chatcmpl-")
    first = st.choice_events()[0]
    assert first["delta"].get("role") == "assistant"
    assert all("role" not in c["delta"] for c in st.choice_events()[1:])
    assert st.text() == full["choices"][0]["message"]["content"]
    assert st.finish_reason() == "length"
    assert st.events[-1]["choices"] == [] and st.events[-1]["usage"] == full["usage"]


def test_chat_logprobs(chat_srv):
    o = chat_srv.chat(messages=HELLO, max_tokens=6, ignore_eos=True, logprobs=True,
                      top_logprobs=2, **greedy())
    lp = o["choices"][0]["logprobs"]
    assert len(lp["content"]) == 6
    for t in lp["content"]:
        assert isinstance(t["token"], str) and t["logprob"] <= 0
        assert all(isinstance(b, int) and 0 <= b < 256 for b in t["bytes"])
        assert len(t["top_logprobs"]) == 2
        assert t["logprob"] == pytest.approx(t["top_logprobs"][0]["logprob"], abs=1e-4)
        assert t["top_logprobs"][0]["logprob"] >= t["top_logprobs"][1]["logprob"]
    # OpenAI: the tokens' bytes, concatenated, are the UTF-8 of the content
    assert b"".join(bytes(t["bytes"]) for t in lp["content"]) == \
        o["choices"][0]["message"]["content"].encode("utf-8")
    o = chat_srv.chat(messages=HELLO, max_tokens=6, ignore_eos=True, logprobs=True, **greedy())
    assert all(t["top_logprobs"] == [] for t in o["choices"][0]["logprobs"]["content"])
    o = chat_srv.chat(messages=HELLO, max_tokens=6, **greedy())
    assert o["choices"][0]["logprobs"] is None


def test_streaming_utf8_and_token_bytes(chat_srv):
    # sampled tokens of a byte-level BPE include pieces of multi-byte characters: streamed
    # chunks must still be whole UTF-8 and add up to the non-streamed text
    body = dict(prompt="h\u00e9llo w\u00f6rld \U0001F600 \u65e5\u672c", max_tokens=150,
                temperature=1.0, seed=3, ignore_eos=True)
    o = chat_srv.completion(**body)
    text = o["choices"][0]["text"]
    assert any(ord(ch) > 127 for ch in text)  # the test means something
    st = chat_srv.stream("/v1/completions", body).read_all()
    assert st.done and st.text() == text
    e = chat_srv.completion(echo=True, **body)
    assert e["choices"][0]["text"] == body["prompt"] + text


def test_chat_logprob_bytes_spell_the_content(chat_srv):
    # OpenAI: token bytes concatenate to the content's UTF-8, also when a character is split
    # over several tokens
    o = chat_srv.chat(messages=HELLO, max_tokens=150, temperature=1.0, seed=3,
                      ignore_eos=True, logprobs=True)
    content = o["choices"][0]["message"]["content"]
    lp = o["choices"][0]["logprobs"]["content"]
    assert len(lp) == 150
    assert b"".join(bytes(t["bytes"]) for t in lp) == content.encode("utf-8")


def test_chat_max_completion_tokens_and_n(chat_srv):
    o = chat_srv.chat(messages=HELLO, max_completion_tokens=4, ignore_eos=True, n=2,
                      temperature=1.0, seed=5)
    assert len(o["choices"]) == 2
    assert all(c["finish_reason"] == "length" for c in o["choices"])
    assert o["usage"]["completion_tokens"] == 8


def test_chat_errors(chat_srv, models):
    mid = models.chat.name

    def post(body):
        return chat_srv.post("/v1/chat/completions", {"model": mid, **body})

    assert_bad(post({"messages": []}), "messages")
    assert_bad(post({}), "messages")
    assert_bad(post({"messages": "hi"}), "messages")
    assert_bad(post({"messages": [{"role": "wizard", "content": "x"}]}), "messages[0].role")
    assert_bad(post({"messages": [{"role": "user", "content": "x"}, {"content": "y"}]}),
               "messages[1].role")
    assert_bad(post({"messages": [{"role": "user", "content": 5}]}), "messages[0].content")
    assert_bad(post({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
               "messages[0].content")
    assert_bad(post({"messages": HELLO, "top_logprobs": 2}), "top_logprobs")
    assert_bad(post({"messages": HELLO, "logprobs": 2}), "logprobs")
    assert_bad(post({"messages": HELLO, "prompt": "x"}), "prompt")
    assert_bad(post({"messages": HELLO, "echo": True}), "echo")
