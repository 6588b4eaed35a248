"""Purpose-built HTTP/1.1 upstreams for the gateway tests: real peers on loopback whose timing
we control (the gateway under test is never mocked).

    python upstreams.py --port P [--name N] [--mode normal|stall] [--tls-cert C --tls-key K]

With --tls-cert/--tls-key the normal mode speaks HTTPS (HTTP/1.1 over TLS) instead of plain HTTP.

normal mode routes:
  GET  /healthz                  200 {"ok":true} (503 after POST /admin/unhealthy)
  ANY  /whoami                   {"name": N, "port": P}
  ANY  /echo                     request line, headers (and their names as spelled) and body size as JSON
  GET  /names                    a response whose header names are spelled oddly
  ANY  /sse?n=5&gap_ms=300       text/event-stream, n events `data: {"i":i,"t":...}` spaced gap_ms
  ANY  /ndjson?n=5&gap_ms=300    application/x-ndjson lines spaced gap_ms
  ANY  /hold?ms=60000            SSE that stays open ms (comment every second) or until the client goes
  ANY  /big?size=5000            application/json body of about size bytes
  ANY  /slow?ms=500              answers after ms
  GET  /stats                    {"open_streams", "closed_by_client", "requests", "connections"}
  GET  /tls                      {"tls": version negotiated on this connection or null, "sni": last SNI}
  POST /admin/unhealthy|healthy  flip /healthz
stall mode: accepts TCP connections and never answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import time
from urllib.parse import parse_qs, urlsplit

STATS = {"open_streams": 0, "closed_by_client": 0, "requests": 0, "connections": 0}
HEALTHY = {"ok": True}
# The SNI name the last TLS client sent (None = none sent), for /tls.
TLS_SEEN = {"sni": None}


async def read_request(reader: asyncio.StreamReader):
    line = await reader.readline()
    if not line:
        return None
    method, target, _version = line.decode("latin-1").strip().split(" ", 2)
    headers: dict[str, str] = {}
    names: list[str] = []
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        names.append(k.strip())
        headers[k.strip().lower()] = v.strip()
    # The names as spelled on the wire, in order (the dict above is lower case).
    headers["\0names"] = names
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).strip().split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readline()
    return method, target, headers, body


def head(status: int, ctype: str, length: int | None, extra: str = "") -> bytes:
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}.get(status, "OK")
    framing = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n{framing}"
            f"Server: upstream/9.9\r\n{extra}\r\n").encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def send_json(writer, status: int, obj) -> None:
    body = json.dumps(obj).encode()
    writer.write(head(status, "application/json", len(body)) + body)
    await writer.drain()


async def stream(writer, reader, ctype: str, n: int, gap: float, line) -> bool:
    """Write n chunks spaced by gap; False when the client went away."""
    STATS["open_streams"] += 1
    try:
        writer.write(head(200, ctype, None, "Cache-Control: no-cache\r\n"))
        await writer.drain()
        for i in range(n):
            if i:
                await asyncio.sleep(gap)
            writer.write(chunk(line(i)))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True
    except (ConnectionError, OSError):
        STATS["closed_by_client"] += 1
        return False
    finally:
        STATS["open_streams"] -= 1


async def hold(writer, reader, ms: int) -> bool:
    STATS["open_streams"] += 1
    try:
        writer.write(head(200, "text/event-stream", None, "Cache-Control: no-cache\r\n"))
        writer.write(chunk(b": open\n\n"))
        await writer.drain()
        deadline = time.monotonic() + ms / 1000
        while time.monotonic() < deadline:
            # Reading tells us at once when the peer closes; a ping write confirms it.
            try:
                data = await asyncio.wait_for(reader.read(1), timeout=1.0)
                if data == b"":
                    raise ConnectionResetError("peer closed")
            except asyncio.TimeoutError:
                pass
            writer.write(chunk(b": ping\n\n"))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True
    except (ConnectionError, OSError):
        STATS["closed_by_client"] += 1
        return False
    finally:
        STATS["open_streams"] -= 1


async def handle(reader, writer, name: str, port: int) -> None:
    STATS["connections"] += 1
    try:
        while True:
            req = await read_request(reader)
            if req is None:
                break
            method, target, headers, body = req
            raw_names = headers.pop("\0names")
            STATS["requests"] += 1
            url = urlsplit(target)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            path = url.path
            if path == "/healthz":
                await send_json(writer, 200 if HEALTHY["ok"] else 503, {"ok": HEALTHY["ok"]})
            elif path == "/admin/unhealthy":
                HEALTHY["ok"] = False
                await send_json(writer, 200, {"ok": False})
            elif path == "/admin/healthy":
                HEALTHY["ok"] = True
                await send_json(writer, 200, {"ok": True})
            elif path == "/whoami":
                await send_json(writer, 200, {"name": name, "port": port})
            elif path == "/stats":
                await send_json(writer, 200, STATS)
            elif path == "/tls":
                tls = writer.get_extra_info("ssl_object")
                await send_json(writer, 200, {"tls": tls.version() if tls else None,
                                              "sni": TLS_SEEN["sni"], "name": name})
            elif path == "/echo":
                await send_json(writer, 200, {"method": method, "target": target,
                                              "headers": headers, "raw_names": raw_names,
                                              "body_len": len(body), "name": name})
            elif path == "/names":
                # Header names in odd spellings, to see what the proxy sends on.
                payload = b'{"ok":true}'
                writer.write(head(200, "application/json", len(payload),
                                  "x-lower-name: 1\r\nX-UPPER-NAME: 2\r\nmCp-SeSsIoN-iD: s\r\n")
                             + payload)
                await writer.drain()
            elif path == "/big":
                size = int(q.get("size", "5000"))
                payload = json.dumps({"name": name, "data": "x" * size}).encode()
                writer.write(head(200, "application/json", len(payload)) + payload)
                await writer.drain()
            elif path == "/slow":
                await asyncio.sleep(int(q.get("ms", "500")) / 1000)
                await send_json(writer, 200, {"name": name, "slept_ms": int(q.get("ms", "500"))})
            elif path == "/sse":
                n, gap = int(q.get("n", "5")), int(q.get("gap_ms", "300")) / 1000
                ok = await stream(writer, reader, "text/event-stream", n, gap,
                                  lambda i: f'data: {{"i":{i},"t":{time.time()}}}\n\n'.encode())
                if not ok:
                    break
            elif path == "/ndjson":
                n, gap = int(q.get("n", "5")), int(q.get("gap_ms", "300")) / 1000
                ok = await stream(writer, reader, "application/x-ndjson", n, gap,
                                  lambda i: (json.dumps({"i": i, "t": time.time()}) + "\n").encode())
                if not ok:
                    break
            elif path == "/hold":
                if not await hold(writer, reader, int(q.get("ms", "60000"))):
                    break
            else:
                await send_json(writer, 404, {"error": "no such path", "path": path})
            if headers.get("connection", "").lower() == "close":
                break
    except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def stall(reader, writer) -> None:
    # Accept and never answer: the connection stays open until the peer gives up.
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="upstream")
    ap.add_argument("--mode", choices=["normal", "stall"], default="normal")
    ap.add_argument("--tls-cert", help="PEM certificate: serve HTTPS instead of HTTP")
    ap.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = ap.parse_args()
    tls_ctx = None
    if args.tls_cert:
        tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_ctx.load_cert_chain(args.tls_cert, args.tls_key)

        def remember_sni(_obj, server_name, _ctx):
            TLS_SEEN["sni"] = server_name

        tls_ctx.sni_callback = remember_sni
    if args.mode == "stall":
        server = await asyncio.start_server(stall, "127.0.0.1", args.port)
    else:
        server = await asyncio.start_server(
            lambda r, w: handle(r, w, args.name, args.port), "127.0.0.1", args.port,
            ssl=tls_ctx)
    scheme = "https" if tls_ctx else "http"
    print(f"listening on 127.0.0.1:{args.port} ({args.mode}, {scheme})", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
