"""transkube_operator.delivery: the address policy, Standard Webhooks signing, and post() against real local servers.

No socket mocks: post() talks to a ThreadingHTTPServer on 127.0.0.1 (plain or TLS with a throwaway CA); only name
resolution is replaced where a test needs a name to resolve to a particular address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from transkube_dev.pki import CertificateAuthority
from transkube_operator.delivery import DeliveryPolicy, headers, post, refusal, sign

LOCAL = DeliveryPolicy(allowed_cidrs=("127.0.0.0/8",), allow_http=True, connect_timeout=2.0, total_timeout=3.0)
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BODY = b'{"type":"transcodejob.succeeded","data":{"name":"movie"}}'


# --- a real local receiver ----------------------------------------------------------------------------------------


class Receiver(ThreadingHTTPServer):
    """Records what reaches it; the handler's behaviour is chosen by the request path."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.connections = 0
        self.stop = threading.Event()  # lets slow handlers end at teardown

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up on purpose (huge bodies, deadlines) are expected here


class TlsReceiver(Receiver):
    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self.server_names: list[str | None] = []
        context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:  # the handshake in the request's thread, so a failing client cannot stall the accept loop
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class Handler(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes = b"", extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def stream(self, status: int) -> None:
        """Claims a gigabyte and sends until the client goes away."""
        self.send_response(status)
        self.send_header("Content-Length", str(1 << 30))
        self.end_headers()
        chunk = b"x" * 65536
        while not self.server.stop.is_set():
            self.wfile.write(chunk)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        route = self.path.split("?")[0]
        if route.startswith("/status/"):
            status = int(route.removeprefix("/status/"))
            self.reply(status, b"nope: " + str(status).encode(), {"Location": "/ok"} if status // 100 == 3 else None)
        elif route == "/slow":
            self.server.stop.wait(10)
            self.reply(200)
        elif route == "/drip":  # one byte well within any socket timeout, for ever: only a total deadline helps
            for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 1000:
                if self.server.stop.wait(0.05):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        elif route == "/huge":
            self.stream(200)
        elif route == "/huge-error":
            self.stream(500)
        elif route == "/long-header":
            self.reply(200, extra={"X-Big": "a" * 70000})
        else:
            self.reply(200, b"thanks")


def _serve(server: Receiver) -> Iterator[Receiver]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve(Receiver())


@pytest.fixture
def tls_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TlsReceiver]:
    """A TLS receiver for hooks.example.test whose CA the default SSL context trusts (via SSL_CERT_FILE)."""
    ca = CertificateAuthority("delivery-test-ca")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.pair.cert_pem)
    crt, key = ca.issue("hooks.example.test", server=True, dns_names=("hooks.example.test",)).write(tmp_path, "srv")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # read by OpenSSL each time a default context loads
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    yield from _serve(TlsReceiver(context))


def resolving_to(*ips: str) -> tuple[Callable[..., list[Any]], list[str]]:
    """A resolver answering every name with `ips` (in order), and the names it was asked for."""
    asked: list[str] = []

    def resolve(host: str, port: int, *_args: Any, **_kwargs: Any) -> list[Any]:
        asked.append(host)
        out: list[Any] = []
        for ip in ips:
            if ipaddress.ip_address(ip).version == 4:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
            else:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
        return out

    return resolve, asked


def url(server: Receiver, path: str = "/ok", host: str = "127.0.0.1", scheme: str = "http") -> str:
    return f"{scheme}://{host}:{server.port}{path}"


# --- post(): outcomes -----------------------------------------------------------------------------------------


def test_a_2xx_is_delivered_with_verifiable_headers(receiver: Receiver) -> None:
    sent = headers(SECRET, "msg_1", int(time.time()), BODY)
    result = post(url(receiver, "/ok?tenant=a"), BODY, sent, LOCAL)
    assert (result.ok, result.status, result.reason) == (True, 200, "Delivered")
    [(path, got, body)] = receiver.requests
    assert (path, body) == ("/ok?tenant=a", BODY)
    assert got["host"] == f"127.0.0.1:{receiver.port}"
    assert got["content-type"] == "application/json" and got["user-agent"] == "transkube-webhooks/1"
    assert got["content-length"] == str(len(BODY)) and got["connection"] == "close"
    # The reference implementation accepts what actually arrived on the wire.
    assert Webhook(SECRET).verify(body, got) == {"type": "transcodejob.succeeded", "data": {"name": "movie"}}


def test_caller_headers_cannot_override_host_or_framing(receiver: Receiver) -> None:
    sent = {**headers(SECRET, "msg_1", int(time.time()), BODY), "Host": "evil.example", "Content-Length": "1"}
    assert post(url(receiver), BODY, sent, LOCAL).ok
    [(_, got, body)] = receiver.requests
    assert got["host"] == f"127.0.0.1:{receiver.port}" and body == BODY


@pytest.mark.parametrize(("status", "reason"), [(500, "HttpError"), (400, "HttpError"), (410, "Gone"),
                                                (204, "Delivered"), (202, "Delivered")])
def test_status_codes(receiver: Receiver, status: int, reason: str) -> None:
    result = post(url(receiver, f"/status/{status}"), BODY, {}, LOCAL)
    assert (result.ok, result.status, result.reason) == (status < 300, status, reason)
    if status >= 300:
        assert result.message.startswith(f"HTTP {status}") and "nope" in result.message  # the receiver's why


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    result = post(url(receiver, "/status/302"), BODY, {}, LOCAL)
    assert (result.ok, result.status, result.reason) == (False, 302, "HttpError")
    assert "not followed" in result.message
    assert [r[0] for r in receiver.requests] == ["/status/302"]


def test_a_slow_receiver_times_out_within_the_deadline(receiver: Receiver) -> None:
    start = time.monotonic()
    result = post(url(receiver, "/slow"), BODY, {}, DeliveryPolicy(("127.0.0.0/8",), True, 1.0, 0.5))
    assert (result.ok, result.status, result.reason) == (False, None, "Timeout")
    assert time.monotonic() - start < 1.5


def test_a_dripping_receiver_is_cut_at_the_deadline(receiver: Receiver) -> None:
    # Every byte arrives long before a socket timeout: only the overall deadline ends this.
    start = time.monotonic()
    result = post(url(receiver, "/drip"), BODY, {}, DeliveryPolicy(("127.0.0.0/8",), True, 1.0, 0.6))
    assert result.reason == "Timeout"
    assert time.monotonic() - start < 1.5


@pytest.mark.parametrize(("path", "reason"), [("/huge", "Delivered"), ("/huge-error", "HttpError")])
def test_a_huge_response_body_is_not_read(receiver: Receiver, path: str, reason: str) -> None:
    start = time.monotonic()
    result = post(url(receiver, path), BODY, {}, LOCAL)
    assert result.reason == reason and len(result.message) <= 512
    assert time.monotonic() - start < 1.0


def test_an_oversized_response_header_is_refused(receiver: Receiver) -> None:
    result = post(url(receiver, "/long-header"), BODY, {}, LOCAL)
    assert (result.ok, result.status, result.reason) == (False, None, "ResponseTooLarge")


def test_nothing_listening_is_connect_failed() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = post(f"http://127.0.0.1:{port}/", BODY, {}, LOCAL)
    assert (result.ok, result.status, result.reason) == (False, None, "ConnectFailed")
    assert "refused" in result.message.lower()


def test_https_to_a_plain_http_server_fails_cleanly(receiver: Receiver) -> None:
    result = post(url(receiver, scheme="https"), BODY, {}, LOCAL)
    assert (result.ok, result.status, result.reason) == (False, None, "ConnectFailed")
    assert "TLS" in result.message and receiver.requests == []


# --- post(): the connection goes to the checked address, TLS is checked against the name ----------------------


def test_connects_to_the_resolved_address_with_the_original_host_header(receiver: Receiver) -> None:
    resolver, asked = resolving_to("127.0.0.1")
    assert post(url(receiver, host="hooks.example.test"), BODY, {}, LOCAL, resolver).ok
    assert asked == ["hooks.example.test"]  # resolved once
    assert receiver.requests[0][1]["host"] == f"hooks.example.test:{receiver.port}"


def test_https_verifies_the_certificate_against_the_url_name(tls_receiver: TlsReceiver) -> None:
    resolver, _ = resolving_to("127.0.0.1")
    policy = DeliveryPolicy(allowed_cidrs=("127.0.0.0/8",), total_timeout=3.0)
    result = post(url(tls_receiver, host="hooks.example.test", scheme="https"), BODY, {}, policy, resolver)
    assert (result.ok, result.status, result.reason) == (True, 200, "Delivered")
    assert tls_receiver.server_names == ["hooks.example.test"]  # SNI carries the name, not the IP
    assert tls_receiver.requests[0][1]["host"] == f"hooks.example.test:{tls_receiver.port}"

    # Same address, another name: the certificate does not match it.
    result = post(url(tls_receiver, host="other.example.test", scheme="https"), BODY, {}, policy, resolver)
    assert (result.ok, result.reason) == (False, "ConnectFailed")
    assert "certificate" in result.message and len(tls_receiver.requests) == 1
    # And the bare IP is not in the certificate either.
    assert post(url(tls_receiver, scheme="https"), BODY, {}, policy).reason == "ConnectFailed"


# --- post(): refusals before any connection -------------------------------------------------------------------


def test_one_internal_address_among_public_ones_refuses_the_delivery(receiver: Receiver) -> None:
    # 127.0.0.1 is allowed by LOCAL and is where the receiver listens; 10.1.2.3 is not allowed.
    resolver, _ = resolving_to("127.0.0.1", "10.1.2.3")
    result = post(url(receiver, host="hooks.example.test"), BODY, {}, LOCAL, resolver)
    assert (result.ok, result.status, result.reason) == (False, None, "AddressNotAllowed")
    assert "10.1.2.3" in result.message and "private" in result.message
    assert receiver.connections == 0

    resolver, _ = resolving_to("8.8.8.8", "169.254.169.254")
    result = post("https://hooks.example.test/", BODY, {}, DeliveryPolicy(), resolver)
    assert result.reason == "AddressNotAllowed" and "metadata" in result.message


def test_localhost_is_refused_without_allowed_cidrs(receiver: Receiver) -> None:
    result = post(url(receiver, host="localhost"), BODY, {}, DeliveryPolicy(allow_http=True))
    assert (result.ok, result.reason) == (False, "AddressNotAllowed")
    assert "loopback" in result.message and receiver.connections == 0
    result = post(url(receiver, host="[::ffff:127.0.0.1]"), BODY, {}, DeliveryPolicy(allow_http=True))
    assert result.reason == "AddressNotAllowed" and receiver.connections == 0


@pytest.mark.parametrize("bad", [
    "ftp://hooks.example.test/",
    "file:///etc/passwd",
    "hooks.example.test/path",
    "",
    "https:///path",
    "https://user:pw@hooks.example.test/",
    "https://token@hooks.example.test/",
    "https://hooks.example.test:99999/",
    "https://hooks.example.test:0/",
    "https://hooks.example.test:http/",
    "https://hooks example.test/",
    "https://hooks.example.test/a\r\nX-Injected: 1",
    "https://[::1/",
    "https://hooks.example.test/caf\u00e9",
    "https://bad_host!.example/",
])
def test_invalid_urls(bad: str) -> None:
    resolver, asked = resolving_to("8.8.8.8")
    result = post(bad, BODY, {}, DeliveryPolicy(), resolver)
    assert (result.ok, result.status, result.reason) == (False, None, "InvalidUrl")
    assert asked == []


def test_plain_http_needs_allow_http(receiver: Receiver) -> None:
    result = post(url(receiver), BODY, {}, DeliveryPolicy(allowed_cidrs=("127.0.0.0/8",)))
    assert result.reason == "InvalidUrl" and "http" in result.message and receiver.connections == 0


def test_a_url_token_does_not_leak_into_messages(receiver: Receiver) -> None:
    result = post(url(receiver, "/status/500?token=s3cr3t"), BODY, {}, LOCAL)
    assert result.reason == "HttpError" and "s3cr3t" not in result.message


# --- post(): resolution ---------------------------------------------------------------------------------------


def test_resolution_failures() -> None:
    def fails(*_args: Any, **_kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def explodes(*_args: Any, **_kwargs: Any) -> list[Any]:
        raise RuntimeError("resolver bug")

    def empty(*_args: Any, **_kwargs: Any) -> list[Any]:
        return []

    for resolver in (fails, explodes, empty):
        result = post("https://hooks.example.test/", BODY, {}, DeliveryPolicy(), resolver)
        assert (result.ok, result.status, result.reason) == (False, None, "ResolveFailed")


def test_a_hanging_resolver_is_bounded_by_the_deadline() -> None:
    release = threading.Event()

    def hangs(*_args: Any, **_kwargs: Any) -> list[Any]:
        release.wait(10)
        return []

    start = time.monotonic()
    try:
        result = post("https://hooks.example.test/", BODY, {}, DeliveryPolicy(total_timeout=0.3), hangs)
    finally:
        release.set()
    assert result.reason == "Timeout" and time.monotonic() - start < 1.0


# --- refusal() ------------------------------------------------------------------------------------------------

REFUSALS: list[tuple[str, str | None]] = [
    # public: allowed
    ("8.8.8.8", None), ("93.184.216.34", None), ("172.32.0.1", None), ("100.128.0.1", None), ("192.0.3.1", None),
    ("2606:4700:4700::1111", None), ("2001:4860:4860::8888", None),
    # IPv4 special purpose
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"), ("172.16.0.1", "private"), ("172.31.255.255", "private"), ("192.168.1.1", "private"),
    ("169.254.1.1", "link-local"), ("100.64.0.1", "CGNAT"), ("100.127.255.255", "CGNAT"),
    ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"),  # noqa: S104 - an address under test, not a bind
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "broadcast"), ("192.0.0.8", "reserved"), ("192.88.99.1", "reserved"),
    ("192.0.2.1", "documentation"), ("198.51.100.7", "documentation"), ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"), ("198.19.255.255", "benchmarking"),
    # metadata endpoints
    ("169.254.169.254", "metadata"), ("169.254.170.2", "metadata"), ("100.100.100.200", "metadata"),
    ("168.63.129.16", "metadata"), ("fd00:ec2::254", "metadata"),
    # IPv6 special purpose
    ("::", "unspecified"), ("::1", "loopback"), ("fc00::1", "private"), ("fd12:3456::1", "private"),
    ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"), ("fec0::1", "site-local"), ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"), ("3fff::1", "documentation"), ("2001:2::1", "benchmarking"),
    ("2001::1", "reserved"), ("100::1", "reserved"), ("64:ff9b:1::1", "reserved"), ("4000::1", "reserved"),
    # IPv6 carrying IPv4: judged by the IPv4 address they reach
    ("::ffff:127.0.0.1", "embeds 127.0.0.1: loopback"), ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "metadata"), ("::ffff:8.8.8.8", None),
    ("::127.0.0.1", "loopback"), ("::8.8.8.8", None),
    ("2002:7f00:1::", "embeds 127.0.0.1: loopback"), ("2002:a9fe:a9fe::1", "metadata"), ("2002:808:808::1", None),
    ("64:ff9b::a00:1", "embeds 10.0.0.1: private"), ("64:ff9b::169.254.169.254", "metadata"),
    ("64:ff9b::808:808", None),
]


@pytest.mark.parametrize(("address", "why"), REFUSALS)
def test_refusal_by_default(address: str, why: str | None) -> None:
    got = refusal(ipaddress.ip_address(address), DeliveryPolicy())
    assert got is None if why is None else (got is not None and why in got), got


ALLOWED: list[tuple[tuple[str, ...], str, bool]] = [
    (("127.0.0.0/8",), "127.0.0.1", True),
    (("127.0.0.0/8",), "::ffff:127.0.0.1", True),  # the same address, written as IPv6
    (("127.0.0.0/8",), "::1", False),  # another address family is another address
    (("127.0.0.0/8",), "10.0.0.1", False),
    (("127.0.0.0/8",), "8.8.8.8", True),  # public stays allowed
    (("10.0.0.0/8", "192.168.0.0/16"), "192.168.4.4", True),
    (("10.0.0.0/8",), "64:ff9b::a00:1", True),
    (("169.254.0.0/16",), "169.254.1.1", True),
    (("169.254.0.0/16",), "169.254.169.254", False),  # metadata is never opened by a range
    (("0.0.0.0/0",), "169.254.169.254", False),
    (("0.0.0.0/0",), "10.9.8.7", True),
    (("169.254.169.254/32",), "169.254.169.254", True),  # ... only by itself
    (("169.254.169.254",), "169.254.169.254", True),
    (("169.254.169.254/32",), "::ffff:169.254.169.254", True),
    (("169.254.169.254/32",), "169.254.170.2", False),
    (("fd00::/8",), "fd00::1", True),
    (("fd00::/8",), "fd00:ec2::254", False),
    (("fd00:ec2::254/128",), "fd00:ec2::254", True),
    (("fe80::/10",), "fe80::1%eth0", True),
]


@pytest.mark.parametrize(("cidrs", "address", "allowed"), ALLOWED)
def test_refusal_with_allowed_cidrs(cidrs: tuple[str, ...], address: str, allowed: bool) -> None:
    assert (refusal(ipaddress.ip_address(address), DeliveryPolicy(allowed_cidrs=cidrs)) is None) is allowed


def test_a_bad_allowed_cidr_fails_at_configuration() -> None:
    with pytest.raises(ValueError, match="not-a-network"):
        DeliveryPolicy(allowed_cidrs=("not-a-network",))


# --- signing --------------------------------------------------------------------------------------------------


def test_signature_matches_an_independent_hmac() -> None:
    key = b"0123456789abcdef0123456789abcdef"
    expected = base64.b64encode(hmac.new(key, b"msg_1.1700000000." + BODY, hashlib.sha256).digest()).decode()
    assert sign(SECRET, "msg_1", 1_700_000_000, BODY) == f"v1,{expected}"
    assert sign(SECRET.removeprefix("whsec_"), "msg_1", 1_700_000_000, BODY) == f"v1,{expected}"  # prefix optional


def test_signature_of_the_standard_webhooks_example() -> None:
    # The example in the Standard Webhooks specification.
    got = sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
               b'{"test": 2432232314}')
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_verify_with_the_reference_library() -> None:
    now = int(time.time())
    hdrs = headers(SECRET, "msg_2", now, BODY)
    assert hdrs["webhook-id"] == "msg_2" and hdrs["webhook-timestamp"] == str(now)
    assert hdrs["content-type"] == "application/json" and hdrs["user-agent"] == "transkube-webhooks/1"
    Webhook(SECRET).verify(BODY, hdrs)
    unpadded = "whsec_" + base64.b64encode(b"sixteen byte key").decode().rstrip("=")
    Webhook(unpadded).verify(BODY, headers(unpadded, "msg_3", now, BODY))


def test_a_bad_secret_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as err:
        sign("whsec_not*base64!", "msg_1", 1, BODY)
    assert "not*base64" not in str(err.value)
    with pytest.raises(ValueError, match="empty"):
        sign("whsec_", "msg_1", 1, BODY)
