#!/usr/bin/env python3
"""EC2 test proxy in front of a moto server (standard library only).

Forwards every request unchanged to moto (method, path, query, body bytes and
all end-to-end headers, including Host and Authorization, so moto's optional
SigV4 check still passes) and adds what moto lacks:

* DescribeInstanceTypes paging (moto returns all ~1263 types in one answer and
  ignores MaxResults/NextToken): moto's full answer is cut into pages sorted by
  instanceType, with an opaque NextToken.
* Scripted faults (EC2 XML errors or delays) and a call log, via a control API
  under /_proxy/ on the same port.

Usage:
    ec2_proxy.py --moto http://127.0.0.1:5000 [--port 0] [--host 127.0.0.1]
                 [--snapshot-pages] [--verbose]

Prints "LISTENING <port>" on stdout once ready. See README.md next to it.
"""

from __future__ import annotations

import argparse
import base64
import copy
import binascii
import gzip
import http.client
import json
import secrets
import signal
import socket
import struct
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

EC2_API_VERSION = "2016-11-15"

# Hop-by-hop headers (RFC 9110 7.6.1) are never relayed; Content-Length is
# recomputed for every response.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
}

MIN_MAX_RESULTS = 5
MAX_MAX_RESULTS = 100

DEFAULT_FAULT_CODES = {
    400: "InvalidParameterValue",
    401: "AuthFailure",
    403: "UnauthorizedOperation",
    500: "InternalError",
    503: "RequestLimitExceeded",
}
DEFAULT_FAULT_MESSAGES = {
    "AuthFailure": "AWS was not able to validate the provided access credentials",
    "InternalError": "An internal error has occurred",
    "RequestLimitExceeded": "Request limit exceeded.",
    "Unavailable": "The server is overloaded and can't handle the request.",
    "UnauthorizedOperation": "You are not authorized to perform this operation.",
}

VERBOSE = False


def log(msg: str) -> None:
    if VERBOSE:
        sys.stderr.write(f"[ec2_proxy {time.strftime('%H:%M:%S')}] {msg}\n")
        sys.stderr.flush()


class ProxyError(Exception):
    """An EC2-style error the proxy answers itself."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def ec2_error_body(code: str, message: str, request_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{escape(code)}</Code>"
        f"<Message>{escape(message)}</Message></Error></Errors>"
        f"<RequestID>{escape(request_id)}</RequestID></Response>"
    ).encode("utf-8")


def parse_sigv4(headers, query: dict[str, list[str]]) -> dict[str, str | None]:
    """Access key / region / service from the SigV4 credential scope."""
    cred = None
    auth = headers.get("Authorization") or ""
    if "Credential=" in auth:
        cred = auth.split("Credential=", 1)[1].split(",", 1)[0].strip()
    elif query.get("X-Amz-Credential"):
        cred = query["X-Amz-Credential"][0]
    out: dict[str, str | None] = {"access_key": None, "region": None, "service": None}
    if cred:
        parts = cred.split("/")
        if len(parts) >= 4:
            out["access_key"], out["region"], out["service"] = parts[0], parts[2], parts[3]
        elif parts:
            out["access_key"] = parts[0]
    return out


# --------------------------------------------------------------------------
# Shared state (faults, call log, page snapshots)
# --------------------------------------------------------------------------


class State:
    def __init__(self, snapshot_pages: bool):
        self.lock = threading.Lock()
        self.faults: list[dict] = []
        self.calls: list[dict] = []
        self.salt = secrets.token_hex(8)  # per process: old tokens become invalid
        self.snapshot_pages = snapshot_pages
        self.snapshots: OrderedDict[str, dict] = OrderedDict()
        # instance types that exist only in some regions: {"region", "copy_of", "as"}
        self.regional_types: list[dict] = []

    # faults ---------------------------------------------------------------
    def add_fault(self, spec: dict) -> dict:
        fault = validate_fault(spec)
        with self.lock:
            self.faults.append(fault)
            return {"queued": len(self.faults), "faults": [dict(f) for f in self.faults]}

    def take_fault(self, action: str | None, region: str | None, access_key: str | None):
        with self.lock:
            for i, f in enumerate(self.faults):
                if f["action"] not in (None, "*", action):
                    continue
                if f["region"] is not None and f["region"] != region:
                    continue
                if f["access_key"] is not None and f["access_key"] != access_key:
                    continue
                f["count"] -= 1
                if f["count"] <= 0:
                    del self.faults[i]
                return dict(f)
        return None

    # regional instance types ----------------------------------------------
    def regional_types_for(self, region: str | None) -> list[dict]:
        with self.lock:
            return [dict(t) for t in self.regional_types if t["region"] == region]

    # calls ----------------------------------------------------------------
    def add_call(self, entry: dict) -> None:
        with self.lock:
            self.calls.append(entry)

    # page snapshots (only with --snapshot-pages) ----------------------------
    def put_snapshot(self, snap: dict) -> str:
        sid = secrets.token_hex(4)
        with self.lock:
            self.snapshots[sid] = snap
            while len(self.snapshots) > 4:  # a parsed full answer is ~tens of MB
                self.snapshots.popitem(last=False)
        return sid

    def get_snapshot(self, sid: str):
        with self.lock:
            return self.snapshots.get(sid)

    # tokens -----------------------------------------------------------------
    def make_token(self, offset: int, sid: str = "") -> str:
        raw = f"{self.salt}:{offset}:{sid}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def parse_token(self, token: str) -> tuple[int, str]:
        bad = ProxyError(400, "InvalidNextToken", "The specified NextToken is not valid.")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            salt, off, sid = raw.split(":")
            offset = int(off)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise bad from None
        if salt != self.salt or offset < 0:
            raise bad
        return offset, sid


def validate_fault(spec) -> dict:
    if not isinstance(spec, dict):
        raise ValueError("fault must be a JSON object")
    unknown = set(spec) - {
        "action", "region", "access_key", "status", "code", "message", "count", "delay_ms", "reset",
    }
    if unknown:
        raise ValueError(f"unknown fault fields: {sorted(unknown)}")
    status = spec.get("status")
    delay_ms = spec.get("delay_ms", 0) or 0
    count = spec.get("count", 1)
    if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
        raise ValueError("status must be an integer in 400..599")
    if not isinstance(delay_ms, (int, float)) or delay_ms < 0:
        raise ValueError("delay_ms must be a non-negative number")
    if not isinstance(count, int) or count < 1:
        raise ValueError("count must be an integer >= 1")
    reset = spec.get("reset", False)
    if not isinstance(reset, bool):
        raise ValueError("reset must be a boolean")
    if reset and status is not None:
        raise ValueError("a reset fault closes the connection: it has no status")
    if status is None and not delay_ms and not reset:
        raise ValueError(
            "a fault needs a status (error), delay_ms (slow response) and/or reset (connection reset)"
        )
    for key in ("action", "region", "access_key", "code", "message"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise ValueError(f"{key} must be a string")
    code = spec.get("code")
    if status is not None and not code:
        code = DEFAULT_FAULT_CODES.get(status, "InternalError" if status >= 500 else "InvalidRequest")
    message = spec.get("message")
    if status is not None and not message:
        message = DEFAULT_FAULT_MESSAGES.get(code, f"Injected fault {code}")
    return {
        "action": spec.get("action"),
        "region": spec.get("region"),
        "access_key": spec.get("access_key"),
        "status": status,
        "code": code if status is not None else None,
        "message": message if status is not None else None,
        "count": count,
        "delay_ms": delay_ms,
        "reset": reset,
    }


# --------------------------------------------------------------------------
# DescribeInstanceTypes paging
# --------------------------------------------------------------------------


def parse_max_results(params: dict[str, list[str]]) -> int | None:
    if "MaxResults" not in params:
        return None
    raw = params["MaxResults"][0]
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not MIN_MAX_RESULTS <= value <= MAX_MAX_RESULTS:
        raise ProxyError(
            400,
            "InvalidParameterValue",
            f"Value ( {raw} ) for parameter maxResults is invalid. "
            f"Expecting a value between {MIN_MAX_RESULTS} and {MAX_MAX_RESULTS}.",
        )
    return value


def sorted_snapshot(body: bytes) -> dict:
    """Parse moto's full DescribeInstanceTypes answer; items sorted by instanceType."""
    root = ET.fromstring(body)
    ns_uri = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    q = (lambda t: f"{{{ns_uri}}}{t}") if ns_uri else (lambda t: t)
    type_set = root.find(q("instanceTypeSet"))
    items = list(type_set) if type_set is not None else []
    items.sort(key=lambda e: e.findtext(q("instanceType")) or "")
    return {"root": root, "ns": ns_uri, "items": items}


def add_regional_types(snap: dict, extras: list[dict]) -> None:
    """Append copies of existing items under new names (types only some regions list)."""
    ns_uri = snap["ns"]
    q = (lambda t: f"{{{ns_uri}}}{t}") if ns_uri else (lambda t: t)
    by_name = {e.findtext(q("instanceType")): e for e in snap["items"]}
    for extra in extras:
        source = by_name.get(extra["copy_of"])
        if source is None:
            raise ProxyError(500, "InternalError", f"regional type: no {extra['copy_of']} to copy")
        item = copy.deepcopy(source)
        item.find(q("instanceType")).text = extra["as"]
        snap["items"].append(item)
    snap["items"].sort(key=lambda e: e.findtext(q("instanceType")) or "")


def render_page(state: State, snap: dict, offset: int, max_results, sid: str) -> bytes:
    """Build one page as a new tree (the snapshot itself is never mutated)."""
    root, ns_uri, items = snap["root"], snap["ns"], snap["items"]
    q = (lambda t: f"{{{ns_uri}}}{t}") if ns_uri else (lambda t: t)
    if offset > len(items):
        raise ProxyError(400, "InvalidNextToken", "The specified NextToken is not valid.")
    page_size = max_results if max_results is not None else len(items)
    page = items[offset : offset + page_size]
    next_offset = offset + len(page)

    out = ET.Element(root.tag, dict(root.attrib))
    out.text = root.text
    type_set = None
    for child in root:
        if child.tag == q("nextToken"):
            continue
        if child.tag == q("instanceTypeSet"):
            type_set = ET.SubElement(out, child.tag, dict(child.attrib))
            type_set.extend(page)
        else:
            out.append(child)
    if type_set is None:
        type_set = ET.Element(q("instanceTypeSet"))
        type_set.extend(page)
        out.insert(0, type_set)
    if next_offset < len(items):
        nt = ET.Element(q("nextToken"))
        nt.text = state.make_token(next_offset, sid)
        out.insert(list(out).index(type_set) + 1, nt)
    text = ET.tostring(out, encoding="unicode", default_namespace=ns_uri or None)
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + text).encode("utf-8")


# --------------------------------------------------------------------------
# HTTP handler
# --------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ec2-test-proxy"

    # the server instance carries .state, .moto_host, .moto_port
    def log_message(self, fmt, *args):  # noqa: N802 - stdlib name
        log("%s %s" % (self.address_string(), fmt % args))

    def do_GET(self):  # noqa: N802
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    # body -------------------------------------------------------------------
    def read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537).split(b";", 1)[0].strip()
                size = int(line, 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # responses --------------------------------------------------------------
    def send(self, status: int, headers: list[tuple[str, str]], body: bytes, head_len=None):
        self.send_response_only(status)
        for k, v in headers:
            if k.lower() in HOP_BY_HOP or k.lower() == "content-length":
                continue
            self.send_header(k, v)
        self.send_header("Content-Length", str(head_len if head_len is not None else len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.log_request(status, len(body))

    def send_json(self, status: int, obj) -> None:
        body = (json.dumps(obj, indent=1) + "\n").encode()
        self.send(status, [("Content-Type", "application/json"), ("Date", self.date_time_string())], body)

    def send_ec2_error(self, status: int, code: str, message: str) -> None:
        rid = str(uuid.uuid4())
        self.send(
            status,
            [
                ("Content-Type", "text/xml;charset=UTF-8"),
                ("Date", self.date_time_string()),
                ("x-amzn-RequestId", rid),
                ("Server", "AmazonEC2"),
            ],
            ec2_error_body(code, message, rid),
        )

    # dispatch -----------------------------------------------------------------
    def dispatch(self) -> None:
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self.send(400, [("Content-Type", "text/plain")], b"bad request body\n")
            return
        path = urlsplit(self.path).path
        if path == "/_proxy" or path.startswith("/_proxy/"):
            self.control(path, body)
        else:
            self.proxy(body)

    # control API ----------------------------------------------------------------
    def control(self, path: str, body: bytes) -> None:
        state: State = self.server.state
        m = self.command
        if path == "/_proxy/health" and m == "GET":
            return self.send_json(200, {"ok": True, "moto": self.server.moto_url})
        if path == "/_proxy/faults":
            if m == "GET":
                with state.lock:
                    return self.send_json(200, [dict(f) for f in state.faults])
            if m == "DELETE":
                with state.lock:
                    state.faults.clear()
                return self.send_json(200, {"cleared": True})
            if m == "POST":
                try:
                    spec = json.loads(body or b"null")
                    specs = spec if isinstance(spec, list) else [spec]
                    out = None
                    for s in specs:
                        validate_fault(s)  # validate all before queueing any
                    for s in specs:
                        out = state.add_fault(s)
                except ValueError as e:  # includes json.JSONDecodeError
                    return self.send_json(400, {"error": str(e)})
                return self.send_json(200, out)
        if path == "/_proxy/calls":
            if m == "GET":
                with state.lock:
                    return self.send_json(200, [dict(c) for c in state.calls])
            if m == "DELETE":
                with state.lock:
                    state.calls.clear()
                return self.send_json(200, {"cleared": True})
        if path == "/_proxy/regional-types":
            if m == "GET":
                with state.lock:
                    return self.send_json(200, [dict(t) for t in state.regional_types])
            if m == "POST":
                try:
                    spec = json.loads(body or b"null")
                    if not isinstance(spec, dict) or set(spec) != {"region", "copy_of", "as"} or not all(
                        isinstance(v, str) and v for v in spec.values()
                    ):
                        raise ValueError('expected {"region": ..., "copy_of": ..., "as": ...}')
                except ValueError as e:
                    return self.send_json(400, {"error": str(e)})
                with state.lock:
                    state.regional_types.append(spec)
                    return self.send_json(200, [dict(t) for t in state.regional_types])
        if path == "/_proxy/reset" and m == "POST":
            with state.lock:
                state.calls.clear()
                state.faults.clear()
            return self.send_json(200, {"cleared": True})
        return self.send_json(404, {"error": f"no control endpoint {m} {path}"})

    # proxying -------------------------------------------------------------------
    def forward(self, body: bytes):
        """Send the request to moto unchanged; return (status, headers, body)."""
        conn = http.client.HTTPConnection(
            self.server.moto_host, self.server.moto_port, timeout=self.server.upstream_timeout
        )
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
            for k, v in self.headers.items():
                if k.lower() in HOP_BY_HOP:
                    continue
                if chunked and k.lower() == "content-length":
                    continue
                conn.putheader(k, v)
            if chunked or (body and "Content-Length" not in self.headers):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()

    def proxy(self, body: bytes) -> None:
        state: State = self.server.state
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        params = dict(query)
        ctype = (self.headers.get("Content-Type") or "").lower()
        if body and (ctype.startswith("application/x-www-form-urlencoded") or not ctype):
            try:
                for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items():
                    params.setdefault(k, []).extend(v)
            except UnicodeDecodeError:
                pass
        sig = parse_sigv4(self.headers, query)
        action = (params.get("Action") or [None])[0]
        is_ec2 = action is not None and (
            sig["service"] == "ec2"
            or (sig["service"] is None and (params.get("Version") or [""])[0] == EC2_API_VERSION)
        )
        if not is_ec2:
            return self.relay(body)

        mr_raw = (params.get("MaxResults") or [None])[0]
        try:
            mr_logged = int(mr_raw) if mr_raw is not None else None
        except ValueError:
            mr_logged = None
        entry = {
            "t": time.time(),
            # the SDK's id of one operation call, the same for all its retries, and the attempt
            "invocation": self.headers.get("amz-sdk-invocation-id"),
            "attempt": self.headers.get("amz-sdk-request"),
            "fault": None,
            "action": action,
            "region": sig["region"],
            "access_key": sig["access_key"],
            "status": None,
            "max_results": mr_logged,
            "has_next_token": bool((params.get("NextToken") or [""])[0]),
        }
        state.add_call(entry)  # logged in arrival order; status filled in below

        fault = state.take_fault(action, sig["region"], sig["access_key"])
        if fault:
            log(f"fault for {action}: {fault}")
            entry["fault"] = (
                "reset" if fault["reset"] else f"status_{fault['status']}_{fault['code']}"
                if fault["status"] is not None else "slow"
            )
            if fault["delay_ms"]:
                time.sleep(fault["delay_ms"] / 1000.0)
            if fault["reset"]:
                entry["status"] = "reset"
                # RST instead of FIN: the client sees "connection reset by peer"
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if fault["status"] is not None:
                entry["status"] = fault["status"]
                return self.send_ec2_error(fault["status"], fault["code"], fault["message"])

        if action == "DescribeInstanceTypes":
            return self.describe_instance_types(body, params, entry)
        self.relay(body, entry)

    def relay(self, body: bytes, entry: dict | None = None) -> None:
        try:
            status, headers, data = self.forward(body)
        except (OSError, http.client.HTTPException) as e:
            if entry is not None:
                entry["status"] = 502
            self.close_connection = True
            return self.send(502, [("Content-Type", "text/plain")], f"ec2_proxy: moto unreachable: {e}\n".encode())
        if entry is not None:
            entry["status"] = status
        head_len = None
        if self.command == "HEAD":
            head_len = next((v for k, v in headers if k.lower() == "content-length"), "0")
        self.send(status, headers, data, head_len)

    def describe_instance_types(self, body: bytes, params, entry: dict) -> None:
        state: State = self.server.state
        token = (params.get("NextToken") or [""])[0]
        snap = sid = None
        if state.snapshot_pages and token:
            # Continuation page served from the page-1 snapshot, without moto.
            try:
                offset, sid = state.parse_token(token)
                max_results = parse_max_results(params)
            except ProxyError as e:
                entry["status"] = e.status
                return self.send_ec2_error(e.status, e.code, e.message)
            snap = state.get_snapshot(sid) if sid else None
            if snap is not None:
                try:
                    page = render_page(state, snap, offset, max_results, sid)
                except ProxyError as e:
                    entry["status"] = e.status
                    return self.send_ec2_error(e.status, e.code, e.message)
                entry["status"] = 200
                extra = [("Date", self.date_time_string()), ("x-amzn-RequestId", str(uuid.uuid4()))]
                return self.send(200, snap["headers"] + extra, page)

        try:
            status, headers, data = self.forward(body)
        except (OSError, http.client.HTTPException) as e:
            entry["status"] = 502
            self.close_connection = True
            return self.send(502, [("Content-Type", "text/plain")], f"ec2_proxy: moto unreachable: {e}\n".encode())
        if status != 200:  # auth failures, moto validation errors: relayed unchanged
            entry["status"] = status
            return self.send(status, headers, data)
        try:
            max_results = parse_max_results(params)
            offset, _ = state.parse_token(token) if token else (0, "")
            encoding = next((v for k, v in headers if k.lower() == "content-encoding"), "")
            if encoding.lower() == "gzip":
                data = gzip.decompress(data)
                headers = [(k, v) for k, v in headers if k.lower() != "content-encoding"]
            snap = sorted_snapshot(data)
            extras = state.regional_types_for(entry["region"])
            if extras:
                add_regional_types(snap, extras)
            sid = ""
            if state.snapshot_pages:
                snap["headers"] = [
                    (k, v) for k, v in headers if k.lower() in ("content-type", "server")
                ]
                sid = state.put_snapshot(snap)
            page = render_page(state, snap, offset, max_results, sid)
        except ProxyError as e:
            entry["status"] = e.status
            return self.send_ec2_error(e.status, e.code, e.message)
        except ET.ParseError as e:
            entry["status"] = 502
            return self.send(502, [("Content-Type", "text/plain")], f"ec2_proxy: bad XML from moto: {e}\n".encode())
        entry["status"] = 200
        self.send(200, headers, page)


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # e.g. BrokenPipe when a client times out during an injected delay
        if VERBOSE:
            super().handle_error(request, client_address)


def main(argv=None) -> int:
    global VERBOSE
    ap = argparse.ArgumentParser(description="EC2 paging/fault-injection proxy for moto")
    ap.add_argument("--moto", required=True, help="moto server URL, e.g. http://127.0.0.1:5000")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0 = pick a free one)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument(
        "--snapshot-pages",
        action="store_true",
        help="answer DescribeInstanceTypes continuation pages (valid NextToken) from a "
        "snapshot of moto's answer to page 1 instead of asking moto again (moto needs "
        "~2-3 s per full answer). Such pages are logged and faults still apply, but moto "
        "does not see them (no SigV4 check). Off by default.",
    )
    ap.add_argument("--timeout", type=float, default=120.0, help="upstream timeout in seconds")
    ap.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (chain)")
    ap.add_argument("--tls-key", help="PEM private key of --tls-cert")
    ap.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = ap.parse_args(argv)
    VERBOSE = args.verbose

    moto = urlsplit(args.moto)
    if moto.scheme != "http" or not moto.hostname:
        ap.error("--moto must be an http:// URL")

    server = ProxyServer((args.host, args.port), Handler)
    server.state = State(args.snapshot_pages)
    server.moto_url = args.moto
    server.moto_host = moto.hostname
    server.moto_port = moto.port or 80
    server.upstream_timeout = args.timeout
    if args.tls_cert:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)

    stop = threading.Event()

    def on_signal(signum, _frame):
        log(f"signal {signum}, shutting down")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    print(f"LISTENING {server.server_address[1]}", flush=True)
    log(f"forwarding to {args.moto}")
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
