"""A seeded generator of hostile HTTP/1.1 requests for the lab's services.

``case(seed, index, role)`` is a pure function: the same seed and index give the same bytes, in
both architectures (only the arch in the path differs), so a case is reproducible from its
number and the sync and async answers can be compared. Each case has a ``kind`` (what it
exercises: body, content type, query, headers, framing, method, path) used by the histogram
and by the failure report.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field

MAX_BODY_BYTES = 64 * 1024  # Settings.max_body_bytes (the fuzzed services run the default)
MAX_HEADER_BYTES = 64 * 1024  # Settings.max_header_bytes
MAX_FIELD_BYTES = 8192  # services/async_app/protocol.py (meinheld's)
MAX_VALUES = 1024  # Settings.max_values

VALID_BODY = b"[5.1,3.5,1.4,0.2]"


@dataclass
class Case:
    index: int
    kind: str
    method: str
    target: str  # with "{arch}" where the architecture goes
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # How the body is framed: "length" (true Content-Length), "none", "chunked",
    # "chunked_trailers", "lie_long" (declares more than sent: incomplete), "lie_short"
    # (declares less: the rest is a second, garbage request), "cl_and_te".
    framing: str = "length"
    cut_at: int | None = None  # send only the first N bytes of the message, then wait
    raw: bytes | None = None  # a message given as bytes (garbage request lines)
    incomplete: bool = False  # the server must time the request out (408) or close

    def message(self, arch: str) -> bytes:
        if self.raw is not None:
            return self.raw.replace(b"{arch}", arch.encode())
        target = self.target.replace("{arch}", arch)
        head = [f"{self.method} {target} HTTP/1.1", "Host: 127.0.0.1"]
        head += [f"{name}: {value}" for name, value in self.headers]
        body = self.body
        if self.framing == "length":
            if body or self.method in ("POST", "PUT", "PATCH"):
                head.append(f"Content-Length: {len(body)}")
        elif self.framing in ("chunked", "chunked_trailers", "cl_and_te"):
            head.append("Transfer-Encoding: chunked")
            if self.framing == "cl_and_te":
                head.append(f"Content-Length: {len(body)}")
            body = _chunk_encode(body, trailers=self.framing == "chunked_trailers")
        elif self.framing == "lie_long":
            head.append(f"Content-Length: {len(body) + 10}")
        elif self.framing == "lie_short":
            head.append(f"Content-Length: {max(0, len(body) - 3)}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        return data if self.cut_at is None else data[: self.cut_at]


def _chunk_encode(body: bytes, trailers: bool = False, size: int = 7) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                   for i in range(0, len(body), size))
    return out + (b"0\r\nX-Trailer: t\r\n\r\n" if trailers else b"0\r\n\r\n")


# ------------------------------------------------------------------------------ building blocks

def _number(rng: random.Random) -> str:
    return rng.choice([
        lambda: str(rng.uniform(-1e6, 1e6)),
        lambda: str(rng.randint(-10**6, 10**6)),
        lambda: "1" + "0" * rng.randint(300, 800),  # float() overflow
        lambda: "-" + "9" * rng.randint(300, 5000),
        lambda: f"{rng.random()}e{rng.randint(-400, 400)}",
        lambda: rng.choice(["0", "-0", "0.0", "1E5", "1e-400", "1.7976931348623157e308"]),
    ])()


def _json_value(rng: random.Random, depth: int = 0) -> str:
    pick = rng.random()
    if depth > 3 or pick < 0.5:
        return rng.choice([
            lambda: _number(rng),
            lambda: json.dumps("".join(rng.choices(string.printable, k=rng.randint(0, 20)))),
            lambda: rng.choice(["true", "false", "null", "NaN", "Infinity", "-Infinity"]),
        ])()
    if pick < 0.8:
        return "[" + ",".join(_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))) + "]"
    items = (f"{json.dumps(str(rng.randint(0, 9)))}:{_json_value(rng, depth + 1)}"
             for _ in range(rng.randint(0, 3)))
    return "{" + ",".join(items) + "}"


def body(rng: random.Random) -> bytes:
    """A request body: mostly JSON lists of numbers, broken in every way we could think of."""
    generators = [
        lambda: VALID_BODY,
        lambda: ("[" + ",".join(_number(rng) for _ in range(rng.randint(1, 20))) + "]").encode(),
        lambda: ("[" + ",".join(_json_value(rng) for _ in range(rng.randint(0, 6))) + "]").encode(),
        lambda: _json_value(rng).encode(),
        lambda: b"[" * (d := rng.randint(900, 20000)) + b"1" + b"]" * d,  # RecursionError
        lambda: b"[" * rng.randint(100, 20000),  # deep and unterminated
        lambda: b"{\"a\":" * (d := rng.randint(900, 5000)) + b"1" + b"}" * d,
        lambda: ("[" + ",".join(["1"] * rng.randint(MAX_VALUES - 2, MAX_VALUES + 50)) + "]")
        .encode(),
        lambda: b"[" + b"1," * (MAX_BODY_BYTES // 2) + b"1]",  # over the body limit
        lambda: b"",
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))),
        lambda: VALID_BODY[: rng.randint(0, len(VALID_BODY) - 1)],
        lambda: b"\xef\xbb\xbf" + VALID_BODY,  # BOM
        lambda: "[1.0, \"\u00e9\\ud800\"]".encode(),
        lambda: b"[1]" + b" " * rng.randint(0, 100) + rng.choice([b"", b"x", b"[2]"]),
    ]
    return rng.choice(generators)()


CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
    " application/json ", "application/json;", "text/plain", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/jsonx", "application", "", "*/*",
    "application/json, text/plain", "application/problem+json", "text/json",
    "application/json; charset=latin-1", "application/json\t",
]


def _token(rng: random.Random, alphabet: str, low: int = 1, high: int = 12) -> str:
    return "".join(rng.choices(alphabet, k=rng.randint(low, high)))


def query(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 4)):
        key = rng.choice(["entity", "entity", "Entity", "e", "entity[]", _token(rng, "abc%&=")])
        value = rng.choice([
            str(rng.randint(0, 60)), "0", "", "404404", "a" * rng.randint(60, 300),
            _token(rng, string.ascii_letters + string.digits + "_.:-"),
            _token(rng, "%2F%00%ff%e9%zz/\\'\"<>;+ "), "..%2F..%2Fetc", "%" + "41" * 70,
        ])
        parts.append(rng.choice([f"{key}={value}", key, f"{key}=", f"={value}"]))
    text = "&".join(parts)
    return ("?" + text) if text or rng.random() < 0.3 else ""


def extra_headers(rng: random.Random) -> list[tuple[str, str]]:
    choices = [
        lambda: ("X-" + _token(rng, string.ascii_letters + "-"),
                 _token(rng, string.printable[:94])),
        lambda: ("Accept", rng.choice(["application/json", "*/*", "text/html", ""])),
        lambda: ("Connection", rng.choice(["close", "keep-alive", "Keep-Alive, foo"])),
        lambda: ("X-Big", "a" * rng.randint(1000, MAX_FIELD_BYTES - 100)),
        lambda: ("Expect", "100-continue"),
        lambda: ("Accept-Encoding", rng.choice(["gzip", "br, deflate", "identity;q=0"])),
        lambda: ("Cookie", "; ".join(f"c{i}=v" for i in range(rng.randint(1, 50)))),
        lambda: ("Host", rng.choice(["evil.example", "127.0.0.1:1", ""])),
        lambda: ("X-Forwarded-For", "1.2.3.4"),
        lambda: ("Transfer-Encoding", rng.choice(["identity", "gzip"])),
    ]
    return [rng.choice(choices)() for _ in range(rng.randint(1, 4))]


SCORING_PATHS = [
    "/api/v1/ml/{arch}/predict", "/api/v1/ml/{arch}/predict/", "//api/v1/ml/{arch}/predict",
    "/api/v1/healthcheck", "/api/v1/healthcheck/", "//api/v1/healthcheck", "/",
    "/api/v1/ml/{arch}/predict/../predict", "/api/v1/ml/%7Barch%7D/predict",
    "/API/V1/HEALTHCHECK", "/api/v1/ml/{arch}/predict%00", "/%2e%2e/%2e%2e/etc/passwd",
    "/api/v1/healthcheck;x", "/api/v1/ml/{arch}/predict?", "/nope", "/" + "a" * 4000,
    "/api/v1/ml/{arch}/predict#frag", "/api/v1/%ZZ", "/\u00e9".encode().decode("latin-1"),
    "*", "http://127.0.0.1/api/v1/healthcheck",
]
PREDICT = "/api/v1/ml/{arch}/predict"
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO", "get",
           "PROPFIND"]


def case(seed: int, index: int, role: str) -> Case:
    """Case ``index`` of the run ``seed`` for a ``role`` (model, scoring, or jobs: the scoring
    services' job endpoints) endpoint."""
    rng = random.Random(f"{seed}/{role}/{index}")
    table = JOB_KINDS if role == "jobs" else KINDS
    kind = rng.choices(list(table), weights=[w for w, _ in table.values()])[0]
    made = table[kind][1](rng, role)
    made.index, made.kind = index, made.kind or kind  # a builder may name a sub-kind
    return made


def _post(rng, role, data=None, **extra) -> Case:
    target = PREDICT + (query(rng) if role == "scoring" and rng.random() < 0.3 else "")
    return Case(0, "", "POST", target, [("Content-Type", "application/json")],
                VALID_BODY if data is None else data, **extra)


def _valid(rng, role):
    made = _post(rng, role)
    if role == "scoring":
        made.target = PREDICT + f"?entity={rng.randint(0, 49)}"
    return made


def _body(rng, role):
    return _post(rng, role, body(rng))


def _content_type(rng, role):
    made = _post(rng, role, rng.choice([VALID_BODY, body(rng)]))
    made.headers = [("Content-Type", rng.choice(CONTENT_TYPES))
                    for _ in range(rng.choice([0, 1, 1, 1, 2]))]
    return made


def _query(rng, role):
    made = _post(rng, role)
    made.target = PREDICT + query(rng)
    return made


def _headers(rng, role):
    made = _post(rng, role, rng.choice([VALID_BODY, body(rng)]))
    made.headers += extra_headers(rng)
    return made


def _oversize_header(rng, role):
    made = _post(rng, role)
    pick = rng.random()
    if pick < 0.4:
        made.headers.append(("X-Long", "a" * rng.randint(MAX_FIELD_BYTES + 1, 40_000)))
    elif pick < 0.7:
        made.headers += [(f"X-{i}", "v") for i in range(rng.randint(130, 300))]
    else:
        made.target = PREDICT + "?entity=1&pad=" + "a" * rng.randint(MAX_FIELD_BYTES, 40_000)
    return made


def _huge_header(rng, role):
    # Past its read buffer (~64 KiB) meinheld closes without an answer; uvicorn answers 431.
    made = _post(rng, role)
    made.headers.append(("X-Huge", "a" * rng.randint(MAX_HEADER_BYTES + 1024, 1024 * 1024)))
    return made


def _method(rng, role):
    method = rng.choice(METHODS)
    target = rng.choice([PREDICT, "/api/v1/healthcheck", "/"])
    data = rng.choice([b"", VALID_BODY])
    return Case(0, "", method, target, [("Content-Type", "application/json")], data)


def _path(rng, role):
    return Case(0, "", rng.choice(["GET", "POST"]), rng.choice(SCORING_PATHS),
                [("Content-Type", "application/json")], VALID_BODY)


def _chunked(rng, role):
    return _post(rng, role, rng.choice([VALID_BODY, body(rng)]), framing="chunked")


def _chunked_oversize(rng, role):
    return _post(rng, role, b"[" + b"1," * (MAX_BODY_BYTES * rng.randint(1, 8)) + b"1]",
                 framing="chunked")


def _trailers(rng, role):
    # meinheld 1.0.2 crashes (SIGSEGV) on chunked trailers: fixed on the meinheld branch.
    return _post(rng, role, framing="chunked_trailers")


def _lie_long(rng, role):
    return _post(rng, role, framing="lie_long", incomplete=True)


def _lie_short(rng, role):
    return _post(rng, role, framing="lie_short")


def _cl_and_te(rng, role):
    return _post(rng, role, framing="cl_and_te")


def _truncated(rng, role):
    made = _post(rng, role, rng.choice([VALID_BODY, body(rng)]))
    full = len(made.message("sync"))
    made.cut_at = rng.randint(1, max(1, full - 1))
    made.incomplete = True
    if len(made.body) > MAX_BODY_BYTES and made.cut_at > len(made.message("sync")) - len(made.body):
        # A documented difference: uvicorn refuses a declared length over the limit at once
        # (413), meinheld waits for the whole body before the app runs (408 when it stops).
        made.kind = "truncated_oversize"
    return made


def _garbage(rng, role):
    lines = [
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost x\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"POST {path} HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST {path} HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST {path} HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST {path} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\x00\r\n\r\n", b"GET /\x7f HTTP/1.1\r\n\r\n",
        b"X" + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))) + b"\r\n\r\n",
        b"G\xc3\xa9T / HTTP/1.1\r\n\r\n",
    ]
    raw = rng.choice(lines).replace(b"{path}", PREDICT.encode())
    return Case(0, "", "GET", "", raw=raw)


def _version(rng, role):
    version = rng.choice(["HTTP/1.0", "HTTP/1.1", "http/1.1", "HTTP/1", "HTTP/01.1", "HTTP/0.9"])
    target = rng.choice([PREDICT, "/api/v1/healthcheck"]).replace("{arch}", "{arch}")
    method = "POST" if "predict" in target else "GET"
    data = b"" if method == "GET" else VALID_BODY
    head = (f"{method} {target} {version}\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n")
    return Case(0, "", method, target, raw=head.encode() + data)


def _version_other(rng, role):
    # A documented difference: meinheld serves any HTTP/x.y as HTTP/1.1 (the app cannot
    # tell: SERVER_PROTOCOL says 1.1); the async server refuses all but 1.0 and 1.1 (400).
    version = rng.choice(["HTTP/2.0", "HTTP/1.2", "HTTP/9.9", "HTTP/3.0", "HTTP/1.10"])
    return Case(0, "", "GET", "", raw=f"GET /api/v1/healthcheck {version}\r\nHost: x\r\n\r\n"
                .encode())


def _empty_lines(rng, role):
    # A documented difference: uvicorn's parser skips empty lines before a request (RFC 9112
    # allows it) and times the request out (408); meinheld's answers 400.
    return Case(0, "", "GET", "", raw=b"\r\n" * rng.randint(1, 3))


def _lf_only(rng, role):
    # A documented difference (docs/services.md, "Errors and limits"): meinheld's parser accepts
    # bare LF line endings, uvicorn's refuses them (400); run.EXPECTED_DIFFERENCES holds the pair.
    return Case(0, "", "GET", "", raw=b"GET /api/v1/healthcheck HTTP/1.1\nHost: x\n\n")


def _connect_upgrade(rng, role):
    # After these meinheld 1.0.2 answers the next request of the worker with a 500: fixed on
    # the meinheld branch.
    if rng.random() < 0.5:
        return Case(0, "", "CONNECT", "127.0.0.1:1", [], b"", framing="none")
    made = _post(rng, role)
    made.headers += [("Connection", "Upgrade"), ("Upgrade", rng.choice(["h2c", "foo"]))]
    return made


# kind -> (weight, builder). Kinds named meinheld_* are the meinheld engineer's defects.
KINDS = {
    "valid": (10, _valid),
    "body": (20, _body),
    "content_type": (8, _content_type),
    "query": (8, _query),
    "headers": (8, _headers),
    "oversize_header": (1, _oversize_header),
    "method": (6, _method),
    "path": (6, _path),
    "chunked": (5, _chunked),
    "chunked_oversize": (1, _chunked_oversize),
    "lie_long": (1, _lie_long),
    "lie_short": (3, _lie_short),
    "cl_and_te": (2, _cl_and_te),
    "truncated": (2, _truncated),
    "garbage": (4, _garbage),
    "lf_only": (1, _lf_only),
    "empty_lines": (1, _empty_lines),
    "version": (2, _version),
    "version_other": (1, _version_other),
    "meinheld_chunked_trailers": (1, _trailers),
    "meinheld_huge_header": (1, _huge_header),
    "meinheld_connect_upgrade": (1, _connect_upgrade),
}


# ------------------------------------------------------------------------ the job endpoints
# Role "jobs": the scoring services' job queue (services/jobs.py). A table of its own, so the
# cases of the other roles stay the same for a given seed.

JOBS = "/api/v1/ml/{arch}/jobs"


def _job_id(rng: random.Random) -> str:
    return rng.choice([
        lambda: f"{rng.getrandbits(128):032x}",  # well formed, unknown
        lambda: f"{rng.getrandbits(128):032X}",
        lambda: f"{rng.getrandbits(124):031x}",
        lambda: f"{rng.getrandbits(132):033x}",
        lambda: _token(rng, string.ascii_letters + string.digits + "-_.:~", 1, 80),
        lambda: rng.choice(["..", ".", "%2e%2e", "%2F", "a%2Fb", "%00", "%ZZ", "%C3%A9",
                            "predict", "jobs", "x" * rng.randint(100, 3000), ";x", "%20"]),
    ])()


def _job_submit(rng, role):
    made = _post(rng, "scoring", rng.choice([VALID_BODY, VALID_BODY, body(rng)]))
    made.target = JOBS + rng.choice([f"?entity={rng.randint(0, 49)}", "", query(rng)])
    # Extra headers or chunked framing, never both (as the predict kinds): a Transfer-Encoding
    # among the headers plus the chunked one is a difference of the servers' parsers, not of the
    # job endpoints.
    pick = rng.random()
    if pick < 0.3:
        made.headers += extra_headers(rng)
    elif pick < 0.5:
        made.framing = "chunked"
    return made


def _job_content_type(rng, role):
    made = _job_submit(rng, role)
    made.headers = [("Content-Type", rng.choice(CONTENT_TYPES))
                    for _ in range(rng.choice([0, 1, 1, 2]))]
    return made


def _job_poll(rng, role):
    method = rng.choice(["GET", "GET", "GET", "HEAD", "POST", "DELETE", "PUT"])
    target = JOBS + "/" + _job_id(rng) + rng.choice(["", "", "", "/", "?x=1", "/x", _wait(rng)])
    data = VALID_BODY if method in ("POST", "PUT") else b""
    return Case(0, "", method, target, [("Content-Type", "application/json")], data)


def _wait(rng) -> str:
    """A long poll's ?wait=: valid ones short (a pending job holds the request that long), and
    every kind of bad value (422 invalid_wait)."""
    return "?wait=" + rng.choice(["0.05", "0.2", "0", "-1", "abc", "nan", "inf", "1e3", "11",
                                  "", "0.1&wait=0.1", "%00", "1.", ".5", "9" * 40,
                                  "0.1" + "0" * 200])


def _job_path(rng, role):
    target = rng.choice([JOBS, JOBS + "/", "/" + JOBS, JOBS + "s", "/API/V1/ML/{arch}/JOBS",
                         "/api/v1/ml/%7Barch%7D/jobs", f"{JOBS}//{rng.getrandbits(128):032x}"])
    return Case(0, "", rng.choice(["GET", "POST", "HEAD", "OPTIONS"]), target,
                [("Content-Type", "application/json")], VALID_BODY)


JOB_KINDS = {
    "job_submit": (10, _job_submit),
    "job_content_type": (3, _job_content_type),
    "job_poll": (10, _job_poll),
    "job_path": (3, _job_path),
}
