"""Shared fixtures for the end-to-end tests: the built binaries, the third-party fixtures,
synthetic models and adapters, and a factory that runs `loramux serve` on a free port.

Only the Python standard library is used (Debian's pytest, no requests).
"""
import contextlib
import http.client
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


# ---- binaries and fixtures ----

@pytest.fixture(scope="session")
def binary():
    path = os.environ.get("LORAMUX_BIN", str(ROOT / "build" / "loramux"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not built; run `make` first")
    return path


@pytest.fixture(scope="session")
def fixtures():
    path = pathlib.Path(os.environ.get("LORAMUX_FIXTURES", ROOT.parent / "shared" / "fixtures"))
    if not path.is_dir():
        pytest.fail(f"fixtures not found at {path} (set LORAMUX_FIXTURES)")
    return path


@pytest.fixture
def run(binary):
    def _run(*args, timeout=120):
        return subprocess.run([binary, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout)
    return _run


# ---- models and adapters (made once per session, lazily) ----

class Models:
    """Model and adapter directories. Synthetic ones are written on first use, by
    `loramux synth-model` / `loramux synth-adapter` (binary is the loramux executable)."""

    def __init__(self, fixtures, binary, tmp):
        self.fixtures = fixtures
        self.binary = binary
        self.tmp = tmp
        self._made = {}

    def _synth(self, what, *args):
        """Runs `loramux synth-<what> args...` (what: "model" or "adapter")."""
        cmd = [self.binary, f"synth-{what}", *map(str, args)]
        env = dict(os.environ, LORAMUX_FIXTURES=str(self.fixtures))
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr}"

    @property
    def stories(self):
        """Karpathy's stories260K (trained; no chat template; vocab 512, context 512)."""
        return self.fixtures / "stories260K-hf"

    @property
    def stories_eos1(self):
        """stories260K with token 1 as an extra EOS: llama2.c's models end a story with BOS
        (1), never with </s> (2), so this copy is the one that stops on its own."""
        if "stories_eos1" not in self._made:
            d = self.tmp / "stories-eos1"
            d.mkdir()
            for f in self.stories.iterdir():
                if f.name != "config.json":
                    (d / f.name).symlink_to(f)
            cfg = json.loads((self.stories / "config.json").read_text())
            cfg["eos_token_id"] = [2, 1]
            (d / "config.json").write_text(json.dumps(cfg))
            self._made["stories_eos1"] = d
        return self._made["stories_eos1"]

    @property
    def chat(self):
        """Tiny synthetic model with SmolLM's tokenizer and ChatML template (meaningless,
        deterministic output; context 1024)."""
        if "chat" not in self._made:
            d = self.tmp / "chat-tiny"
            self._synth("model", "--out", d, "--shape", "tiny", "--tokenizer-from",
                        self.fixtures / "smollm-135m-instruct-lora-qv-r16")
            self._made["chat"] = d
        return self._made["chat"]

    @property
    def big(self):
        """SmolLM-135M-shaped synthetic model (about 540 MB of fp32): slow enough to load and
        to generate that start-up, queueing and shutdown can be observed."""
        if "big" not in self._made:
            d = self.tmp / "big-smollm"
            self._synth("model", "--out", d, "--shape", "smollm-135m", "--vocab", 49152,
                        "--tokenizer-from", self.fixtures / "smollm-135m-instruct-lora-qv-r16")
            self._made["big"] = d
        return self._made["big"]

    def adapter(self, base, method="lora", rank=8, seed=1, targets="all", name=None):
        """Random adapter for base (a model directory); cached by its parameters."""
        key = (str(base), method, rank, seed, targets)
        if key not in self._made:
            d = self.tmp / "adapters" / (name or f"{pathlib.Path(base).name}-{method}-r{rank}-s{seed}-{targets.replace(',', '')}")
            d.parent.mkdir(parents=True, exist_ok=True)
            self._synth("adapter", "--base", base, "--out", d, "--method", method, "--rank", rank,
                        "--targets", targets, "--seed", seed)
            self._made[key] = d
        return self._made[key]

    def adapter_dir(self, base, specs, name):
        """A directory of adapters for --adapter-dir: specs maps adapter name -> dict of
        adapter() arguments. Each subdirectory is a symlink to the cached adapter."""
        d = self.tmp / "adapter-dirs" / name
        if not d.exists():
            d.mkdir(parents=True)
            for n, kw in specs.items():
                (d / n).symlink_to(self.adapter(base, **kw))
        return d


@pytest.fixture(scope="session")
def models(fixtures, binary, tmp_path_factory):
    return Models(fixtures, binary, tmp_path_factory.mktemp("models"))


# ---- HTTP helpers ----

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict, lower-case names
        self.body = body        # bytes

    @property
    def text(self):
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body)

    def error(self):
        """The OpenAI error object of an error response, after checking its shape."""
        o = self.json()
        assert set(o) == {"error"}, o
        e = o["error"]
        assert isinstance(e.get("message"), str) and e["message"], e
        assert isinstance(e.get("type"), str) and e["type"], e
        assert "param" in e and "code" in e, e
        return e

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r}>"


class Stream:
    """A server-sent-events response read incrementally: `data:` lines until [DONE]."""

    def __init__(self, conn, resp, sock=None):
        self.conn = conn
        self.resp = resp
        self.sock = sock or conn.sock
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        self.events = []    # parsed JSON chunks
        self.done = False   # [DONE] received
        self.eof = False    # connection ended (with or without [DONE])
        self.lines = []     # every non-empty line, for diagnostics

    def next_event(self):
        """Returns the next JSON chunk, or None at [DONE] or end of stream."""
        if self.done or self.eof:
            return None
        while True:
            try:
                line = self.resp.readline()
            except (http.client.IncompleteRead, ConnectionError, OSError):
                line = b""
            if not line:
                self.eof = True
                return None
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            self.lines.append(line)
            assert line.startswith(b"data: "), f"not an SSE data line: {line!r}"
            payload = line[6:]
            if payload == b"[DONE]":
                self.done = True
                return None
            ev = json.loads(payload)
            self.events.append(ev)
            return ev

    def read_all(self):
        while self.next_event() is not None:
            pass
        return self

    def close(self):
        """Hangs up (as a client that goes away mid-stream)."""
        with contextlib.suppress(Exception):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self.resp.close()
        with contextlib.suppress(Exception):
            self.conn.close()
        with contextlib.suppress(Exception):
            self.sock.close()

    # ---- views over the events ----

    def choice_events(self, index=0):
        return [c for ev in self.events for c in ev.get("choices", []) if c["index"] == index]

    def text(self, index=0):
        """Concatenated text (completions) or delta content (chat) of one choice."""
        out = []
        for c in self.choice_events(index):
            if "text" in c:
                out.append(c["text"])
            elif c.get("delta", {}).get("content") is not None:
                out.append(c["delta"]["content"])
        return "".join(out)

    def finish_reason(self, index=0):
        reasons = [c["finish_reason"] for c in self.choice_events(index) if c.get("finish_reason")]
        assert len(reasons) <= 1, reasons
        return reasons[0] if reasons else None

    def tokens(self, index=0):
        """Per-token strings from the logprobs of the chunks (completions or chat)."""
        out = []
        for c in self.choice_events(index):
            lp = c.get("logprobs")
            if not lp:
                continue
            if "tokens" in lp:
                out.extend(lp["tokens"])
            else:
                out.extend(t["token"] for t in lp["content"])
        return out

    def usage(self):
        us = [ev["usage"] for ev in self.events if ev.get("usage")]
        assert len(us) <= 1, us
        return us[0] if us else None


def parse_metrics(text):
    """Prometheus text format 0.0.4 -> (samples, types): samples maps
    (name, frozenset of (label, value)) to a float; types maps family name to its type."""
    samples, types = {}, {}
    label_re = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            types[name] = typ.strip()
            continue
        if line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\d+)?$', line)
        assert m, f"bad metrics line: {line!r}"
        name, labels_s, value = m.group(1), m.group(2), m.group(3)
        labels = {}
        if labels_s:
            body = labels_s[1:-1]
            pos = 0
            while pos < len(body):
                lm = label_re.match(body, pos)
                assert lm, f"bad labels in {line!r}"
                labels[lm.group(1)] = lm.group(2).replace('\\"', '"').replace("\\n", "\n") \
                    .replace("\\\\", "\\")
                pos = lm.end()
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"duplicate series {line!r}"
        samples[key] = float(value)
    return samples, types


class Metrics:
    def __init__(self, text):
        self.text = text
        self.samples, self.types = parse_metrics(text)

    def get(self, name, default=None, **labels):
        """The value of the one series name{labels} (exact label set), or default."""
        return self.samples.get((name, frozenset(labels.items())), default)

    def series(self, name):
        """[(labels dict, value)] of every sample called name."""
        return [(dict(k[1]), v) for k, v in self.samples.items() if k[0] == name]

    def sum(self, name, **match):
        return sum(v for lab, v in self.series(name)
                   if all(lab.get(k) == str(x) for k, x in match.items()))

    def label_values(self, name, label):
        return {lab.get(label) for lab, _ in self.series(name)}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `loramux serve` process on a free port."""

    def __init__(self, binary, model, args, env, log_dir, name):
        self.binary = binary
        self.model = pathlib.Path(model)
        self.args = [str(a) for a in args]
        self.env = env
        self.port = free_port()
        self.host = "127.0.0.1"
        self.url = f"http://{self.host}:{self.port}"
        self.stderr_path = pathlib.Path(log_dir) / f"{name}-{self.port}.stderr"
        self.api_key = None
        if "--api-key" in self.args:
            self.api_key = self.args[self.args.index("--api-key") + 1]
        self.t_start = None
        self.returncode = None
        cmd = [binary, "serve", "--model", str(model), "--host", self.host,
               "--port", str(self.port), *self.args]
        self.cmd = cmd
        self._err = open(self.stderr_path, "wb")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._err, env=env)

    # ---- life cycle ----

    def log(self):
        if not self._err.closed:
            self._err.flush()
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"loramux serve exited with {self.proc.returncode} before "
                                     f"ready:\n{self.log()}")
            try:
                r = self.get("/ready", timeout=2)
                if r.status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"loramux serve not ready after {timeout} s:\n{self.log()}")

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=30):
        """Waits for the process; kills it on timeout (and then fails). Returns the code."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
            raise AssertionError(f"loramux serve did not exit within {timeout} s (killed):\n"
                                 f"{self.log()}")
        finally:
            self._err.close()
        return self.returncode

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit code (kills and fails on timeout)."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    # ---- HTTP ----

    def headers(self, extra=None, auth=True):
        h = {}
        if auth and self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        if extra:
            h.update(extra)
        return h

    def connection(self, timeout=120):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=120, auth=True):
        conn = self.connection(timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode("utf-8")
            h = self.headers(headers, auth)
            if body is not None:
                h.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def completion(self, **body):
        """POST /v1/completions, asserting 200; returns the parsed body."""
        body.setdefault("model", self.model_id)
        r = self.post("/v1/completions", body)
        assert r.status == 200, r
        return r.json()

    def chat(self, **body):
        body.setdefault("model", self.model_id)
        r = self.post("/v1/chat/completions", body)
        assert r.status == 200, r
        return r.json()

    def stream(self, path, body, headers=None, timeout=120, auth=True):
        """Starts a streaming POST; returns a Stream (status checked by the caller)."""
        body = dict(body)
        body.setdefault("model", self.model_id)
        body.setdefault("stream", True)
        conn = self.connection(timeout)
        h = self.headers(headers, auth)
        h["Content-Type"] = "application/json"
        conn.request("POST", path, body=json.dumps(body).encode(), headers=h)
        sock = conn.sock
        return Stream(conn, conn.getresponse(), sock)

    def raw(self, data, timeout=30, read=True):
        """Sends raw bytes on a new socket; returns (status, headers dict, body bytes) parsed
        from what the server answers (the connection is closed by us after reading)."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(data)
            if not read:
                return None
            buf = b""
            s.settimeout(timeout)
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                buf += chunk
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if sep:
                    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                    if m and len(rest) >= int(m.group(1)):
                        break
            head, _, rest = buf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1]) if lines and lines[0] else None
            hdrs = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(b":")
                hdrs[k.decode().strip().lower()] = v.decode().strip()
            return status, hdrs, rest

    def metrics(self):
        r = self.get("/metrics")
        assert r.status == 200, r
        return Metrics(r.text)

    @property
    def model_id(self):
        if "--model-name" in self.args:
            return self.args[self.args.index("--model-name") + 1]
        return self.model.name


class ServerFactory:
    def __init__(self, binary, log_dir):
        self.binary = binary
        self.log_dir = log_dir
        self.servers = []
        self.n = 0

    def __call__(self, model, *args, env=None, wait=True, timeout=120):
        """Starts `loramux serve --model MODEL --port P ARGS...`; waits for /ready unless
        wait is false. env: extra environment variables."""
        e = {k: v for k, v in os.environ.items() if not k.startswith("LORAMUX_")
             or k in ("LORAMUX_FIXTURES", "LORAMUX_BIN")}
        if env:
            e.update(env)
        self.n += 1
        for attempt in range(3):
            s = Server(self.binary, model, args, e, self.log_dir, f"serve{self.n}")
            self.servers.append(s)
            if not wait:
                return s
            try:
                return s.wait_ready(timeout)
            except AssertionError:
                if "cannot listen" in s.log() and attempt < 2:  # port taken in between
                    s.wait_exit(10)
                    self.servers.remove(s)
                    continue
                raise

    def close(self):
        """SIGTERM every server still running; each must exit 0."""
        failures = []
        for s in self.servers:
            if s.returncode is not None:
                continue
            try:
                rc = s.stop(timeout=30)
                if rc != 0:
                    failures.append(f"{s.cmd}: exit code {rc}\n{s.log()[-3000:]}")
            except AssertionError as ex:
                failures.append(str(ex)[-3000:])
        self.servers = []
        assert not failures, "\n".join(failures)


@pytest.fixture
def server(binary, tmp_path):
    """Factory: server(model_dir, *flags, env=None, wait=True) -> Server (ready). On teardown
    every server gets SIGTERM and must exit 0 (killed after 30 s)."""
    f = ServerFactory(binary, tmp_path)
    yield f
    f.close()


@pytest.fixture(scope="module")
def module_server(binary, tmp_path_factory):
    """The same factory, for servers shared by the tests of one module."""
    f = ServerFactory(binary, tmp_path_factory.mktemp("serve"))
    yield f
    f.close()


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def eventually(check, timeout=3.0, interval=0.05):
    """Calls check() (which asserts) until it passes; after timeout, its last failure is
    raised. For counters a request updates just after the client has its response."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)


# ---- adapter registry: uploads and the on-disk layout (srv_store.h) ----

import hashlib  # noqa: E402  (kept with the helpers that use it)
import struct  # noqa: E402
import uuid  # noqa: E402

UPLOAD_PARTS = ("adapter_config.json", "adapter_model.safetensors")


def adapter_files(d):
    """(config bytes, weights bytes) of an adapter directory."""
    d = pathlib.Path(d)
    return (d / "adapter_config.json").read_bytes(), (d / "adapter_model.safetensors").read_bytes()


def adapter_version(config, weights):
    """The registry's version of an adapter, computed independently:
    "sha256:" + sha256(le64(len(config)) || config || weights)."""
    h = hashlib.sha256()
    h.update(struct.pack("<Q", len(config)))
    h.update(config)
    h.update(weights)
    return "sha256:" + h.hexdigest()


def adapter_dir_version(d):
    return adapter_version(*adapter_files(d))


class FilePart:
    """A multipart part whose body is read from a file in pieces (never whole in memory)."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __len__(self):
        return self.path.stat().st_size

    def pieces(self, size=1 << 20):
        with open(self.path, "rb") as f:
            while True:
                b = f.read(size)
                if not b:
                    return
                yield b


def multipart(parts, boundary=None):
    """multipart/form-data for parts, a list of (field name, body): body is bytes, str or a
    FilePart; file-like parts get a filename. Returns (content type, total length, iterator of
    byte pieces) so that large files are streamed."""
    boundary = boundary or "loramux-" + uuid.uuid4().hex
    segs = []
    for name, body in parts:
        if isinstance(body, str):
            body = body.encode("utf-8")
        disp = f'form-data; name="{name}"'
        if name != "name":
            disp += f'; filename="{name}"'
        head = (f"--{boundary}\r\nContent-Disposition: {disp}\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode("utf-8")
        segs += [head, body, b"\r\n"]
    segs.append(f"--{boundary}--\r\n".encode())
    total = sum(len(s) for s in segs)

    def gen():
        for s in segs:
            if isinstance(s, FilePart):
                yield from s.pieces()
            elif s:
                yield s
    return f"multipart/form-data; boundary={boundary}", total, gen()


def upload_parts(name, adapter=None, config=None, weights=None, weights_first=False):
    """The parts of a normal upload: name, then the two files (from the adapter directory
    unless config / weights bytes are given)."""
    if adapter is not None:
        d = pathlib.Path(adapter)
        config = config if config is not None else FilePart(d / "adapter_config.json")
        weights = weights if weights is not None else FilePart(d / "adapter_model.safetensors")
    files = [("adapter_config.json", config), ("adapter_model.safetensors", weights)]
    if weights_first:
        files.reverse()
    return [("name", name)] + files


def upload(srv, name=None, adapter=None, config=None, weights=None, parts=None,
           weights_first=False, chunked=False, timeout=300, headers=None, piece_size=1 << 20,
           on_piece=None):
    """POST /v1/adapters (multipart, streamed from the files) over a raw socket, so that an
    early answer (413 before the body is read) is still read after the server stops reading.
    parts overrides the usual three; chunked sends Transfer-Encoding: chunked instead of a
    Content-Length; on_piece(bytes sent so far) is called before each piece of the body.
    Returns a Response (status not checked)."""
    if parts is None:
        parts = upload_parts(name, adapter, config, weights, weights_first)
    ctype, total, body = multipart(parts)
    h = srv.headers(headers)
    h["Host"] = f"{srv.host}:{srv.port}"
    h["Content-Type"] = ctype
    h["Connection"] = "close"
    if chunked:
        h["Transfer-Encoding"] = "chunked"
    else:
        h["Content-Length"] = str(total)
    head = "POST /v1/adapters HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
    sock = socket.create_connection((srv.host, srv.port), timeout=timeout)
    try:
        sock.sendall(head.encode() + b"\r\n")
        sent = 0
        try:
            for piece in body:
                for i in range(0, len(piece), piece_size):
                    p = piece[i:i + piece_size]
                    if on_piece:
                        on_piece(sent)
                    sock.sendall(b"%x\r\n%s\r\n" % (len(p), p) if chunked else p)
                    sent += len(p)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before reading everything, and closed
        resp = http.client.HTTPResponse(sock, method="POST")
        resp.begin()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        sock.close()


def upload_ok(srv, name, adapter, **kw):
    """Uploads and asserts 200/201; returns the descriptor."""
    r = upload(srv, name, adapter, **kw)
    assert r.status in (200, 201), r
    return r.json()


def registry_state(root):
    """What the registry directory holds: {"names": {name: (version, pinned)}, "blobs":
    {hex: sorted file names}, "tmp": sorted entries of tmp/}."""
    root = pathlib.Path(root)
    names = {}
    for p in sorted((root / "names").iterdir()) if (root / "names").is_dir() else []:
        lines = p.read_text().splitlines()
        names[p.name] = (lines[0] if lines else "", "pinned" in lines[1:])
    blobs = {}
    for p in sorted((root / "blobs").iterdir()) if (root / "blobs").is_dir() else []:
        blobs[p.name] = sorted(q.name for q in p.iterdir()) if p.is_dir() else None
    tmp = sorted(p.name for p in (root / "tmp").iterdir()) if (root / "tmp").is_dir() else []
    return {"names": names, "blobs": blobs, "tmp": tmp}


def check_registry_consistent(root, rehash=True):
    """Asserts the invariants of srv_store.h on a registry directory that no process has
    open: every name points at a complete blob whose files hash to its version, and no blob
    is half written. Returns registry_state(root)."""
    root = pathlib.Path(root)
    st = registry_state(root)
    for name, (version, _) in st["names"].items():
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", version), (name, version)
        hexd = version[7:]
        assert hexd in st["blobs"], f"name {name} points at missing blob {version}"
    for hexd, files in st["blobs"].items():
        assert files is not None and re.fullmatch(r"[0-9a-f]{64}", hexd), (hexd, files)
        assert {"manifest", *UPLOAD_PARTS} <= set(files), (hexd, files)
        b = root / "blobs" / hexd
        man = (b / "manifest").read_text()
        assert f"version sha256:{hexd}" in man, man
        cs = int(re.search(r"config_bytes (\d+)", man).group(1))
        ws = int(re.search(r"weights_bytes (\d+)", man).group(1))
        assert (b / UPLOAD_PARTS[0]).stat().st_size == cs, (hexd, man)
        assert (b / UPLOAD_PARTS[1]).stat().st_size == ws, (hexd, man)
        if rehash:
            h = hashlib.sha256(struct.pack("<Q", cs))
            for part in UPLOAD_PARTS:
                with open(b / part, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            assert h.hexdigest() == hexd, f"blob {hexd} does not hash to its name"
    return st
