"""Slow and idle clients, against the gateway and Debian's nginx in the same run, both with the
same short client timeouts (nginx's directive names are the gateway's `[limits]` keys):

  client_header_timeout 2s; client_body_timeout 1s; send_timeout 1s; keepalive_timeout 3s;

Each case measures when the server ends the connection and what the client got. A trickling
header, a silent connection, an idle keep-alive connection and an idle HTTP/2 connection are cut
at their timeout; a stalled request body gets 408; a client that stops reading is cut; and
normal clients keep being served while dozens of slow ones are held. The figures are printed
for both servers; the bounds asserted are wide (the timeouts are seconds, the slack is seconds)."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from conftest import start_nginx
from policy_harness import PolicyGateway, start_upstream

HEADER_T, BODY_T, SEND_T, KEEPALIVE_T = 2.0, 1.0, 1.0, 3.0

LIMITS = f"""
[limits]
client_header_timeout = "{HEADER_T:g}s"
client_body_timeout = "{BODY_T:g}s"
send_timeout = "{SEND_T:g}s"
keepalive_timeout = "{KEEPALIVE_T:g}s"
"""

NGINX_HTTP = (f"client_header_timeout {HEADER_T:g}s; client_body_timeout {BODY_T:g}s; "
              f"send_timeout {SEND_T:g}s; keepalive_timeout {KEEPALIVE_T:g}s;")
NGINX_SERVER = """
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location / { proxy_pass http://up; }
"""


def timed_gateway(procs, tmp_path, up_port: int, tls=None, extra: str = "") -> PolicyGateway:
    """The gateway with the short timeouts, everything routed to one upstream; `extra` adds
    sections to the config."""
    return PolicyGateway(procs, tmp_path, f"""
{LIMITS}
{extra}
[pools.u]
servers = ["127.0.0.1:{up_port}"]

[[routes]]
path = "/"
pool = "u"
""", tls=tls)


def wait_close(s: socket.socket, limit: float) -> tuple[float | None, bytes]:
    """Reads until the server closes (returns the time it took and what arrived), or gives up
    after `limit` seconds (None)."""
    t0 = time.monotonic()
    got = b""
    while time.monotonic() - t0 < limit:
        s.settimeout(max(0.05, limit - (time.monotonic() - t0)))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return time.monotonic() - t0, got
        if not chunk:
            return time.monotonic() - t0, got
        got += chunk
    return None, got


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def trickled_header(port: int) -> tuple[float | None, bytes]:
    """A request line, then one header line every 0.4 s, never the blank line."""
    s = connect(port)
    t0 = time.monotonic()
    s.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n")
    got = b""
    try:
        for i in range(40):  # 16 s at most
            time.sleep(0.4)
            try:
                s.sendall(b"X-Trickle-%d: y\r\n" % i)
            except OSError:
                return time.monotonic() - t0, got
            closed, more = wait_close(s, 0.01)
            got += more
            if closed is not None:
                return time.monotonic() - t0, got
        return None, got
    finally:
        s.close()


def silent(port: int) -> tuple[float | None, bytes]:
    s = connect(port)
    try:
        return wait_close(s, 12)
    finally:
        s.close()


def idle_keepalive(port: int) -> tuple[float | None, bytes]:
    """One request, its response, then silence: the time from the response to the close."""
    s = connect(port)
    try:
        s.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        first = s.recv(65536)
        closed, more = wait_close(s, 12)
        return closed, first + more
    finally:
        s.close()


def reused_keepalive(port: int, n: int = 3, gap: float = KEEPALIVE_T * 0.6) -> list[bytes]:
    """`n` requests on one connection, `gap` apart (inside keepalive_timeout, longer than the
    header timeout's share): every one is answered."""
    s = connect(port)
    out = []
    try:
        for _ in range(n):
            s.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            out.append(s.recv(65536).split(b"\r\n")[0])
            time.sleep(gap)
    finally:
        s.close()
    return out


def stalled_body(port: int) -> tuple[float | None, bytes]:
    s = connect(port)
    try:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        return wait_close(s, 12)
    finally:
        s.close()


def stalled_reader(port: int, size: int = 40_000_000) -> tuple[int, bool]:
    """Asks for `size` bytes with a tiny receive window and reads nothing for 4 send_timeouts;
    then reads what is left. Returns (bytes received, whether the body ended short)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    try:
        s.sendall(b"GET /big?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        time.sleep(SEND_T * 4)
        total = 0
        s.settimeout(3)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(1 << 20)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            total += len(chunk)
        return total, total < size
    finally:
        s.close()


def status_of(first_bytes: bytes) -> int | None:
    if not first_bytes.startswith(b"HTTP/"):
        return None
    return int(first_bytes.split(b" ")[1])


def within(t: float | None, timeout: float, slack: float = 2.5) -> bool:
    return t is not None and timeout * 0.75 <= t <= timeout + slack


def test_slow_and_idle_clients_are_cut_like_nginx(procs, tmp_path):
    up_port = start_upstream(procs, "u")
    nginx_port = start_nginx(procs, tmp_path / "nginx", f"server 127.0.0.1:{up_port};",
                             NGINX_SERVER, NGINX_HTTP)
    gw = timed_gateway(procs, tmp_path, up_port)
    cases = {
        "trickled_header": trickled_header,
        "silent_connection": silent,
        "idle_keepalive": idle_keepalive,
        "stalled_body": stalled_body,
    }
    results: dict[str, dict[str, tuple[float | None, bytes]]] = {}
    for name, fn in cases.items():
        with_both = {}
        threads = []
        for server, port in (("gateway", gw.http_port), ("nginx", nginx_port)):
            def run(server=server, port=port, fn=fn):
                with_both[server] = fn(port)
            threads.append(threading.Thread(target=run))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results[name] = with_both
    reused = {srv: reused_keepalive(port) for srv, port in
              (("gateway", gw.http_port), ("nginx", nginx_port))}
    stalled = {srv: stalled_reader(port) for srv, port in
               (("gateway", gw.http_port), ("nginx", nginx_port))}

    def fmt(r: tuple[float | None, bytes]) -> str:
        t, got = r
        when = "still open" if t is None else f"closed after {t:.2f}s"
        return f"{when}, status {status_of(got)}"
    table = "\n".join(f"  {name:18} gateway: {fmt(r['gateway']):34} nginx: {fmt(r['nginx'])}"
                      for name, r in results.items())
    table += (f"\n  {'reused_keepalive':18} gateway: {reused['gateway']}  nginx: {reused['nginx']}"
              f"\n  {'stalled_reader':18} gateway: {stalled['gateway']}  nginx: {stalled['nginx']}")
    print("\n" + table)

    for server in ("gateway", "nginx"):
        t, got = results["trickled_header"][server]
        assert within(t, HEADER_T), f"{server}: trickled header\n{table}"
        assert status_of(got) in (None, 408), f"{server}: trickled header was served\n{table}"
        t, got = results["silent_connection"][server]
        assert within(t, HEADER_T) and not got, f"{server}: silent connection\n{table}"
        t, got = results["idle_keepalive"][server]
        assert status_of(got) == 200 and within(t, KEEPALIVE_T), f"{server}: idle\n{table}"
        assert all(line.endswith(b"200 OK") for line in reused[server]), \
            f"{server}: keep-alive reuse\n{table}"
        received, short = stalled[server]
        assert short, f"{server}: a client that stopped reading was not cut\n{table}"
    # The gateway answers a stalled body with its 408 envelope (nginx: 408 or a close).
    t, got = results["stalled_body"]["gateway"]
    assert status_of(got) == 408 and b'"REQUEST_TIMEOUT"' in got and within(t, BODY_T), table
    t, got = results["stalled_body"]["nginx"]
    assert within(t, BODY_T) and status_of(got) in (None, 408), table

    metrics = gw.metrics_text()
    for which in ("client_header", "keepalive", "client_body", "send"):
        assert gw.metric("gateway_client_timeouts_total", timeout=which) >= 1, (which, metrics)


def test_normal_clients_are_served_while_slow_ones_are_held(procs, tmp_path):
    up_port = start_upstream(procs, "u")
    gw = timed_gateway(procs, tmp_path, up_port)
    slow: list[tuple[float | None, bytes]] = []
    lock = threading.Lock()

    def one_slow(fn):
        r = fn(gw.http_port)
        with lock:
            slow.append(r)
    threads = [threading.Thread(target=one_slow, args=(fn,))
               for fn in [trickled_header] * 30 + [silent] * 30]
    for t in threads:
        t.start()
    time.sleep(0.5)
    # Meanwhile: normal requests, each on a new connection, all answered promptly.
    served = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < HEADER_T:
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.http_port}/whoami", timeout=2) as r:
            assert r.status == 200
            served += 1
    for t in threads:
        t.join()
    print(f"\n  {served} normal requests served while {len(threads)} slow clients were held")
    assert served >= 20
    assert len(slow) == 60
    assert all(within(t, HEADER_T) for t, _ in slow), slow
    assert gw.metric("gateway_client_timeouts_total", timeout="client_header") >= 60


def test_idle_http2_connection_is_closed_at_keepalive_timeout(procs, tmp_path, tls_cert):
    up_port = start_upstream(procs, "u")
    gw = timed_gateway(procs, tmp_path, up_port, tls=tls_cert)
    # The HTTP/2 client preface and an empty SETTINGS frame, then nothing: an idle connection.
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
    p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{gw.https_port}",
                          "-alpn", "h2", "-quiet"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        p.stdin.write(preface)
        p.stdin.flush()
        try:
            p.wait(timeout=KEEPALIVE_T + 10)
            closed = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            closed = None
        out = p.stdout.read() if closed is not None else b""
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    print(f"\n  idle HTTP/2 connection closed after {closed}")
    # The server's SETTINGS frame (type 4) arrived: it was an HTTP/2 connection.
    assert len(out) >= 9 and out[3] == 4, out
    assert within(closed, KEEPALIVE_T), closed


def tls_client(port: int) -> tuple[socket.socket, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A TLS client over memory BIOs, so the test decides which records go out in one send."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    s = connect(port)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            if out.pending:
                s.sendall(out.read())
            chunk = s.recv(65536)
            assert chunk, "the server closed during the TLS handshake"
            inc.write(chunk)
    if out.pending:
        s.sendall(out.read())  # the client's Finished
    return s, obj, inc, out


def tls_read_until(s, obj, inc, count: int, limit: float) -> tuple[bytes, bool]:
    """Plaintext until `count` response heads arrived (True), or `limit` seconds or the
    server's close ended the wait first (False)."""
    got = b""
    deadline = time.monotonic() + limit
    while got.count(b"HTTP/1.1 ") < count:
        try:
            while chunk := obj.read(65536):
                got += chunk
            return got, False  # the server's close_notify
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            return got, False
        if got.count(b"HTTP/1.1 ") >= count:
            break
        if time.monotonic() >= deadline:
            return got, False
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return got, False
        if not chunk:
            return got, False
        inc.write(chunk)
    return got, True


def test_tls_keepalive_wait_serves_records_read_ahead_and_expires(procs, tmp_path, tls_cert):
    """An idle TLS keep-alive connection waits for its next request's bytes on the socket
    before the gateway allocates a header buffer, unless OpenSSL already holds them
    (SSL_has_pending). Two requests sent as two TLS records in one TCP send are read ahead
    together by OpenSSL (SSL_CTX_set_read_ahead). The first is exactly as long as the
    gateway's first header read (1 KiB), so that read ends with it and the second stays in
    OpenSSL's buffer. The first is answered by the gateway itself and keeps the connection
    (the RFC 9728 metadata), so no read of the connection runs while it is answered (a
    proxied request's idle read would take the second along). The second, never on the
    socket, must be served without waiting for more bytes. A third request after a pause
    wakes the wait, and the idle connection is then cut at keepalive_timeout."""
    up_port = start_upstream(procs, "u")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    gw = timed_gateway(procs, tmp_path, up_port, tls=tls_cert, extra=f"""
[auth.oauth]
resource = "https://localhost/mcp"
authorization_servers = ["https://issuer.example"]
jwks_file = "{tmp_path / 'jwks.json'}"
""")
    s, obj, inc, out = tls_client(gw.https_port)
    try:
        time.sleep(0.3)  # the gateway is past the handshake and waits for a request
        req = b"GET /whoami HTTP/1.1\r\nHost: localhost\r\n\r\n"
        meta = b"GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nHost: localhost\r\n"
        first = meta + b"X-Pad: " + b"p" * (1024 - len(meta) - 11) + b"\r\n\r\n"
        assert len(first) == 1024
        obj.write(first)
        obj.write(req)  # a second record
        records = out.read()
        s.sendall(records)  # both records in one send
        got, both = tls_read_until(s, obj, inc, 2, 5.0)
        print(f"\n  two pipelined TLS records: {got.count(b'HTTP/1.1 ')} answers "
              f"({len(records)} bytes sent at once)")
        assert both, got[:400]
        assert got.count(b"HTTP/1.1 200") == 2 and b"authorization_servers" in got, got[:400]
        # Idle again: a third request, after a pause, wakes the wait and is served.
        time.sleep(0.3)
        obj.write(req)
        s.sendall(out.read())
        got, third = tls_read_until(s, obj, inc, 1, 5.0)
        assert third, got[:400]
        closed, _ = wait_close(s, KEEPALIVE_T + 10)
        print(f"  idle TLS keep-alive closed after {closed}")
        assert within(closed, KEEPALIVE_T), closed
    finally:
        s.close()
