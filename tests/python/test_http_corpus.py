"""HTTP/1.1 strictness and path normalisation against real nginx (Debian's package).

A corpus of malformed, ambiguous and well-formed requests is sent over raw TCP sockets (the
client keeps its side open) to the gateway and to nginx, both in front of their own logging
upstream and with the same location set. Asserted: every case nginx rejects (4xx/5xx, or no
answer), the gateway rejects too; no smuggled or second request ever reaches the gateway's
upstream; pipelined requests are all answered; the upstream only sees normalised paths."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import start_nginx
from policy_harness import PolicyGateway

H = b"Host: x\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def post(headers: bytes, body: bytes, target: bytes = b"/mcp", version: bytes = b"1.1") -> bytes:
    return b"POST " + target + b" HTTP/" + version + b"\r\n" + headers + b"\r\n" + body


def get(target: bytes, headers: bytes = H, version: bytes = b"1.1", method: bytes = b"GET") -> bytes:
    return method + b" " + target + b" HTTP/" + version + b"\r\n" + headers + b"\r\n"


CHUNKED = b"Transfer-Encoding: chunked\r\n"
# name -> (request bytes, responses a well-behaved server gives when it accepts)
CASES: dict[str, bytes] = {
    # framing and smuggling (RFC 9112 section 6)
    "cl_and_te": post(H + b"Content-Length: 4\r\n" + CHUNKED, b"0\r\n\r\n" + SMUGGLED),
    "te_and_cl": post(H + CHUNKED + b"Content-Length: 40\r\n", b"0\r\n\r\n" + SMUGGLED),
    "te_gzip_chunked": post(H + b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
    "te_chunked_gzip": post(H + b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"),
    "te_identity": post(H + b"Transfer-Encoding: identity\r\nContent-Length: 0\r\n", b""),
    "te_xchunked": post(H + b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    "te_space_before_colon": post(H + b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    "te_twice": post(H + CHUNKED + CHUNKED, b"0\r\n\r\n" + SMUGGLED),
    "te_chunked_chunked": post(H + b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"),
    "te_on_http10": post(H + CHUNKED, b"0\r\n\r\n" + SMUGGLED, version=b"1.0"),
    "te_vertical_tab": post(H + b"Transfer-Encoding: \x0bchunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    "te_obs_fold": post(H + b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    "cl_twice_equal": post(H + b"Content-Length: 4\r\nContent-Length: 4\r\n", b"abcd"),
    "cl_twice_differ": post(H + b"Content-Length: 4\r\nContent-Length: 40\r\n", b"abcd" + SMUGGLED),
    "cl_comma_list": post(H + b"Content-Length: 4, 4\r\n", b"abcd"),
    "cl_plus": post(H + b"Content-Length: +4\r\n", b"abcd"),
    "cl_negative": post(H + b"Content-Length: -1\r\n", b"abcd"),
    "cl_hex": post(H + b"Content-Length: 0x4\r\n", b"abcd"),
    "cl_inner_space": post(H + b"Content-Length: 4 4\r\n", b"abcd"),
    "chunk_size_not_hex": post(H + CHUNKED, b"zz\r\nhello\r\n0\r\n\r\n"),
    "chunk_size_negative": post(H + CHUNKED, b"-5\r\nhello\r\n0\r\n\r\n"),
    "chunk_size_overflow": post(H + CHUNKED, b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n"),
    "chunk_missing_crlf": post(H + CHUNKED, b"5\r\nhelloXX0\r\n\r\n" + SMUGGLED),
    # header limits (nginx: large_client_header_buffers 4 8k)
    "header_line_70k": get(b"/mcp", H + b"X-Big: " + b"a" * 70_000 + b"\r\n"),
    "header_line_9k": get(b"/mcp", H + b"X-Big: " + b"a" * 9_000 + b"\r\n"),
    "headers_total_40k": get(b"/mcp", H + b"".join(b"X-H%d: " % i + b"a" * 7_000 + b"\r\n"
                                                  for i in range(6))),
    "request_line_9k": get(b"/mcp/" + b"a" * 9_000),
    "header_nul": get(b"/mcp", H + b"X-A: a\x00b\r\n"),
    "header_name_space": get(b"/mcp", H + b"Bad Name: x\r\n"),
    "header_no_colon": get(b"/mcp", H + b"NoColon\r\n"),
    # request-target forms (RFC 9112 section 3.2) and Host (section 3.2)
    "absolute_form": get(b"http://x/mcp"),
    "absolute_form_no_host": get(b"http://x/mcp", b""),
    "space_in_path": get(b"/mcp a"),
    "space_in_query": get(b"/mcp?a=b c"),
    "ctl_in_path": get(b"/mcp\x01"),
    "del_in_path": get(b"/mcp\x7f"),
    "tab_in_path": get(b"/mcp\tx"),
    "asterisk_form": get(b"*", method=b"OPTIONS"),
    "no_host_http11": get(b"/mcp", b""),
    "empty_host": get(b"/mcp", b"Host: \r\n"),
    "two_hosts": get(b"/mcp", H + b"Host: y\r\n"),
    "host_with_slash": get(b"/mcp", b"Host: x/y\r\n"),
    "no_host_http10": get(b"/mcp", b"", version=b"1.0"),
    "lowercase_method": get(b"/mcp", method=b"get"),
    "bad_version": get(b"/mcp", version=b"1.1x"),
    # pipelining (RFC 9112 section 9.3.2): both must be answered, in order
    "pipelined_gets": get(b"/mcp/1") + get(b"/mcp/2"),
    "pipelined_post_get": post(H + b"Content-Length: 4\r\n", b"abcd") + get(b"/mcp/2"),
    # path normalisation (RFC 3986 section 6.2.2), with the same locations on both sides
    "dotdot_to_internal": get(b"/mcp/../health/metrics"),
    "encoded_dotdot": get(b"/mcp/%2e%2e/health/metrics"),
    "encoded_slash": get(b"/mcp%2F..%2Fhealth%2Fmetrics"),
    "above_root": get(b"/../health"),
    "double_slash": get(b"//health"),
    "prefix_not_segment": get(b"/healthmetrics"),
    "health_metrics": get(b"/health/metrics"),
    "encoded_unreserved": get(b"/%68ealth"),
    "dot_segment": get(b"/mcp/./x"),
    # Expect: 100-continue (RFC 9110 section 10.1.1): a declared length over the limit
    # (client_max_body_size / max_body_size, 1m on both) is refused before any 100 Continue,
    # without waiting for a body the client holds back.
    "expect_over_declared": post(H + b"Expect: 100-continue\r\nContent-Length: 2000000\r\n", b""),
    "over_declared": post(H + b"Content-Length: 2000000\r\n", b""),
}

# Cases every server should serve (200): a regression in either shows here.
SERVED = {"absolute_form", "no_host_http10", "double_slash", "encoded_unreserved",
          "dot_segment", "pipelined_gets", "pipelined_post_get"}


class LoggingUpstream:
    """An HTTP/1.1 upstream that records every request it parses and answers 200 "ok"."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.conn, args=(conn,), daemon=True).start()

    def conn(self, c: socket.socket) -> None:
        f = c.makefile("rb")
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                headers = {}
                while (h := f.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                with self.lock:
                    self.requests.append(line.decode("latin-1").strip())
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    while (size := int(f.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                        f.read(size + 2)
                    f.readline()
                elif "content-length" in headers:
                    f.read(int(headers["content-length"]))
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (OSError, ValueError):
            return
        finally:
            c.close()


def exchange(port: int, data: bytes, idle: float = 0.8) -> list[int]:
    """Sends `data` at once, keeps the socket open, returns the status of every response read
    until the server closes or stays silent for `idle` seconds."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    buf = b""
    try:
        s.sendall(data)
        s.settimeout(idle)
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    return parse_statuses(buf)


def parse_statuses(buf: bytes) -> list[int]:
    out = []
    while buf.startswith(b"HTTP/"):
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        out.append(int(lines[0].split(b" ")[1]))
        length = 0
        for h in lines[1:]:
            k, _, v = h.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        buf = rest[length:]
    return out


def rejected(statuses: list[int]) -> bool:
    return not statuses or statuses[0] >= 400


NGINX_LOCATIONS = """
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location = /mcp { proxy_pass http://up; }
        location /mcp/ { proxy_pass http://up; }
        location = /health { proxy_pass http://up; }
        location = /health/live { proxy_pass http://up; }
        location = /health/ready { proxy_pass http://up; }
        location / { return 404; }
"""


def run_corpus(port: int) -> dict[str, list[int]]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = pool.map(lambda kv: (kv[0], exchange(port, kv[1])), CASES.items())
        return dict(results)


def test_corpus_against_nginx(procs, tmp_path):
    assert len(CASES) >= 40
    gw_up, nginx_up = LoggingUpstream(), LoggingUpstream()
    nginx_port = start_nginx(procs, tmp_path / "nginx",
                             f"server 127.0.0.1:{nginx_up.port}; keepalive 8;", NGINX_LOCATIONS)
    gw = PolicyGateway(procs, tmp_path, f"""
[pools.up]
servers = ["127.0.0.1:{gw_up.port}"]

[[routes]]
path = "/mcp"
pool = "up"

[[routes]]
path = "= /health"
pool = "up"

[[routes]]
path = "= /health/live"
pool = "up"

[[routes]]
path = "= /health/ready"
pool = "up"
""")
    got = run_corpus(gw.http_port)
    expected = run_corpus(nginx_port)
    time.sleep(0.3)  # let the upstreams log the last requests
    table = "\n".join(f"  {name:24} gateway {str(got[name]):12} nginx {expected[name]}"
                      for name in CASES)
    gw_rejects = sum(rejected(got[n]) for n in CASES)
    nginx_rejects = sum(rejected(expected[n]) for n in CASES)
    summary = (f"gateway rejected {gw_rejects} of {len(CASES)}, "
               f"nginx rejected {nginx_rejects} of {len(CASES)}")
    print(f"\n{table}\n{summary}")
    missed = [n for n in CASES if rejected(expected[n]) and not rejected(got[n])]
    assert not missed, f"nginx rejects, the gateway serves: {missed}\n{table}"
    for name in SERVED:
        assert expected[name] and all(s == 200 for s in expected[name]), f"nginx: {name}\n{table}"
        assert got[name] == expected[name], f"gateway: {name}\n{table}"
    seen = list(gw_up.requests)
    assert not [r for r in seen if "smuggled" in r], f"smuggled request upstream: {seen}"
    # Every path the gateway forwards is normalised and routed: no dot segments, no "//",
    # never the backend's internals.
    for r in seen:
        target = r.split(" ")[1]
        assert "/." not in target and "//" not in target and "%2" not in target.lower(), r
        assert not target.startswith("/health/metrics"), r
    # The pipelined requests reached the upstream once each, in order.
    paths = [r.split(" ")[1] for r in seen]
    assert paths.count("/mcp/1") == 1 and paths.count("/mcp/2") == 2, paths
    # No 100 Continue before the refusal of a body the route cannot take.
    assert got["expect_over_declared"] == expected["expect_over_declared"] == [413], table
    # The gateway's own refusals are its JSON envelope.
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=5)
    s.sendall(CASES["cl_and_te"])
    reply = s.recv(65536)
    s.close()
    assert reply.startswith(b"HTTP/1.1 400") and b'"code":"BAD_REQUEST"' in reply, reply
    assert b"connection: close" in reply.lower(), reply


def expect_then_chunks(port: int, total: int) -> tuple[bytes, int, bool]:
    """POST /mcp with `Expect: 100-continue` and a chunked body of `total` bytes sent after the
    100 (or after 1 s without one, as curl does). Returns (first status line, bytes sent before
    the server stopped taking them, whether the connection was reset before a final status)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    # The backend listens on loopback and serves loopback Host names only (DNS rebinding).
    s.sendall(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
    s.settimeout(1)
    got = b""
    try:
        got = s.recv(65536)
    except socket.timeout:
        pass
    sent = 0
    chunk = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
    s.settimeout(10)
    try:
        while sent < total:
            s.sendall(chunk)
            sent += 65536
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    reset = False
    try:
        while b"\r\n\r\n" not in got.split(b"100 Continue\r\n\r\n")[-1]:
            more = s.recv(65536)
            if not more:
                break
            got += more
    except ConnectionResetError:
        reset = True
    except socket.timeout:
        pass
    s.close()
    final = got.split(b"100 Continue\r\n\r\n")[-1]
    return final.split(b"\r\n")[0], sent, reset and not final.startswith(b"HTTP/")


def test_expect_continue_refusal_reaches_the_client(procs, tmp_path, start_backend):
    """The real backend answers `Expect: 100-continue` with a 100; a chunked body over the
    route's limit then gets the 413 envelope, never a reset, as nginx gives its 413."""
    backend = start_backend()
    nginx_port = start_nginx(procs, tmp_path / "nginx", f"server 127.0.0.1:{backend.port};",
                             NGINX_LOCATIONS)
    gw = PolicyGateway(procs, tmp_path, f"""
[pools.up]
servers = ["127.0.0.1:{backend.port}"]

[[routes]]
path = "/mcp"
pool = "up"
""")
    for total in (3_000_000, 6_000_000):
        gw_line, gw_sent, gw_reset = expect_then_chunks(gw.http_port, total)
        ng_line, ng_sent, ng_reset = expect_then_chunks(nginx_port, total)
        print(f"\n  {total} bytes: gateway {gw_line!r} (reset {gw_reset}), "
              f"nginx {ng_line!r} (reset {ng_reset})")
        assert ng_line.startswith(b"HTTP/1.1 413"), ng_line
        assert gw_line.startswith(b"HTTP/1.1 413") and not gw_reset, (gw_line, gw_sent)
