"""Delivers one Standard Webhooks request, safely: I/O, blocking, stdlib only.

The receiver URL comes from a TranscodeJob spec, i.e. from a tenant, so every delivery is a server-side request
forgery risk. post() therefore resolves the host once, refuses the whole delivery if any resolved address is
internal (refusal()), and connects to the checked address itself, so a second DNS answer (rebinding) cannot
redirect the request. TLS still verifies the certificate against the URL's host name. Redirects are never followed,
one deadline bounds the whole exchange, and only a capped prefix of an error response body is read.
post() never raises: every outcome is a DeliveryResult with a stable CamelCase reason.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

USER_AGENT = "transkube-webhooks/1"
# Every DeliveryResult.reason, for callers that map them to conditions or metrics labels.
REASONS = ("Delivered", "HttpError", "Gone", "AddressNotAllowed", "InvalidUrl", "ResolveFailed", "ConnectFailed",
           "Timeout", "ResponseTooLarge")
_MESSAGE_MAX = 512
_SNIPPET_BYTES = 256  # of an error response body, for the message: receivers often say why they refused


@dataclass(frozen=True)
class DeliveryPolicy:
    # Networks allowed although private/loopback/etc. (operator config); metadata addresses need an exact /32, /128.
    allowed_cidrs: tuple[str, ...] = ()
    allow_http: bool = False  # plain http:// (tests, in-cluster receivers); otherwise https only
    connect_timeout: float = 5.0
    total_timeout: float = 10.0
    max_response_bytes: int = 65536

    def __post_init__(self) -> None:
        # Operator config: fail at startup on a bad CIDR rather than on the first delivery.
        object.__setattr__(self, "allowed_cidrs", tuple(self.allowed_cidrs))
        _networks(self.allowed_cidrs)
        if self.connect_timeout <= 0 or self.total_timeout <= 0 or self.max_response_bytes < 0:
            raise ValueError("timeouts must be positive and max_response_bytes non-negative")


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool  # 2xx
    status: int | None  # HTTP status, None when there was no (valid) response
    # Delivered, HttpError, Gone (410), AddressNotAllowed, InvalidUrl, ResolveFailed, ConnectFailed, Timeout,
    # ResponseTooLarge (a response header line beyond http.client's limit).
    reason: str
    message: str  # short human detail (<= 512 chars); never the secret, never the URL's path or query


# --- address policy (pure) ----------------------------------------------------------------------------------------

# Cloud instance metadata and similar agent endpoints: refused even inside allowed_cidrs unless listed exactly,
# because they hand out node credentials. 168.63.129.16 (Azure WireServer) is public-looking, hence listed here.
_METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle IMDS
    "169.254.170.2",  # AWS ECS task metadata and credentials
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",  # Azure WireServer
))


def _table(*rows: tuple[str, str]) -> tuple[tuple[Network, str], ...]:
    return tuple((ipaddress.ip_network(net), why) for net, why in rows)


# The IANA special-purpose registries written out, rather than ipaddress.is_private/is_global, whose meaning has
# changed between Python patch releases. Order matters: the first match names the reason.
_V4_SPECIAL = _table(
    ("0.0.0.0/8", "unspecified (this network)"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved (6to4 relay anycast)"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)
_V6_SPECIAL = _table(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
    ("64:ff9b:1::/48", "reserved (local-use NAT64)"),
    ("100::/64", "reserved (discard-only)"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("2001:2::/48", "benchmarking"),
    ("2001::/23", "reserved (IETF protocol assignments, incl. Teredo)"),
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_V6_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible; :: and ::1 are matched first
_V6_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@lru_cache(maxsize=32)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a v6 address carries traffic to: mapped, IPv4-compatible, 6to4 or NAT64 (well-known)."""
    if ip in _V6_MAPPED or ip in _V6_NAT64 or (ip in _V6_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour  # 2002::/16, else None


def _special(ip: IPAddress) -> str | None:
    """Why this address is not a plain public unicast address, ignoring policy (None: it is one)."""
    if ip in _METADATA:
        return "cloud metadata endpoint"
    for net, why in _V4_SPECIAL if ip.version == 4 else _V6_SPECIAL:
        if ip in net:
            return why
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:  # the wrapper is only as good as the IPv4 address it reaches
            carried = _special(inner)
            return f"embeds {inner}: {carried}" if carried else None
        if ip not in _V6_GLOBAL_UNICAST:
            return "reserved"
    return None


def refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: DeliveryPolicy) -> str | None:
    """Why `ip` may not be contacted (None: allowed). Pure."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(int(ip))  # fe80::1%eth0: judge the address, not the zone
    why = _special(ip)
    if why is None:
        return None
    nets = _networks(policy.allowed_cidrs)
    inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    forms: list[IPAddress] = [ip] if inner is None else [ip, inner]
    if any(f in _METADATA for f in forms):
        # A broad allowed range (169.254.0.0/16 for a node-local receiver) must not open the metadata service too.
        exact = any(n.prefixlen == n.max_prefixlen and n.network_address == f for n in nets for f in forms)
        return None if exact else why
    return None if any(f in n for n in nets for f in forms) else why


# --- signing (pure) -----------------------------------------------------------------------------------------------


def _key(secret: str) -> bytes:
    encoded = secret.strip().removeprefix("whsec_")
    try:
        # Padding is optional in the wild (the reference library appends "==" too).
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:
        raise ValueError("webhook secret is not valid base64") from None  # never echo the secret
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks v1 signature: base64 HMAC-SHA256 of "<id>.<timestamp>.<body>" with the decoded secret."""
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": sign(secret, msg_id, int(timestamp), body),
        "user-agent": USER_AGENT,
    }


# --- delivery (I/O) -----------------------------------------------------------------------------------------------


class _Outcome(Exception):
    """Control flow, not an error: carries the final result out of the nested steps."""

    def __init__(self, reason: str, message: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.result = _result(reason, message, status)


def _result(reason: str, message: str, status: int | None = None) -> DeliveryResult:
    text = "".join(c if c.isprintable() else " " for c in message).strip()
    if len(text) > _MESSAGE_MAX:
        text = text[: _MESSAGE_MAX - 3] + "..."
    return DeliveryResult(ok=reason == "Delivered", status=status, reason=reason, message=text)


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # ASCII (IDNA) name or IP literal without brackets: resolved, and the TLS server_hostname
    port: int
    host_header: str  # host[:port] as written in the URL
    path: str  # path?query


_HOSTNAME = re.compile(r"[a-z0-9_.-]+")


def _ascii_host(raw: str) -> str | None:
    """An IP literal in canonical form, or the IDNA (ASCII) form of a name; None if neither."""
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        pass
    try:
        name = raw.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return name if _HOSTNAME.fullmatch(name) else None


def _parse(url: str, policy: DeliveryPolicy) -> _Target:
    def bad(why: str) -> _Outcome:
        return _Outcome("InvalidUrl", why)

    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise bad("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise bad(f"unparseable URL: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise bad(f"scheme {parts.scheme!r} is not allowed; use https")
    if parts.scheme == "http" and not policy.allow_http:
        raise bad("plain http is not allowed; use https")
    if "@" in parts.netloc:
        raise bad("credentials in the URL are not allowed")
    raw_host = parts.hostname
    if not raw_host:
        raise bad("the URL has no host")
    if port == 0:
        raise bad("port 0 is not allowed")
    host = _ascii_host(raw_host)
    if host is None:
        raise bad("the host is not a valid domain name or IP address")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not path.isascii():
        raise bad("the path must be ASCII (percent-encode it)")
    bracketed = f"[{host}]" if ":" in host else host
    return _Target(scheme=parts.scheme, host=host, port=port or (443 if parts.scheme == "https" else 80),
                   host_header=bracketed if port is None else f"{bracketed}:{port}", path=path)


def _left(deadline: float, doing: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Outcome("Timeout", f"deadline passed before {doing}")
    return left


def _resolve(target: _Target, resolver: Callable[..., list[Any]], deadline: float
             ) -> list[tuple[int, tuple[Any, ...], IPAddress]]:
    """(family, sockaddr, address) for every distinct address of the host, resolved once."""
    answer: list[list[Any]] = []
    failure: list[Exception] = []

    def run() -> None:
        try:
            answer.append(resolver(target.host, target.port, type=socket.SOCK_STREAM))
        except Exception as e:  # reported below, in the caller's thread
            failure.append(e)

    # getaddrinfo cannot be interrupted and may block for many seconds on dead name servers: wait for it in a
    # daemon thread only as long as the deadline allows.
    worker = threading.Thread(target=run, name="transkube-webhook-resolve", daemon=True)
    worker.start()
    worker.join(_left(deadline, "resolving"))
    if worker.is_alive():
        raise _Outcome("Timeout", f"resolving {target.host} took too long")
    if failure:
        raise _Outcome("ResolveFailed", f"cannot resolve {target.host}: {_describe(failure[0])}")
    out: list[tuple[int, tuple[Any, ...], IPAddress]] = []
    seen: set[str] = set()
    for family, _type, _proto, _canon, sockaddr in answer[0] if answer else []:
        if family not in (socket.AF_INET, socket.AF_INET6) or sockaddr[0] in seen:
            continue
        seen.add(sockaddr[0])
        try:
            ip = ipaddress.ip_address(sockaddr[0])
        except ValueError:
            raise _Outcome("ResolveFailed", f"{target.host} resolved to an unusable address") from None
        # Our port, not whatever the resolver echoed; keep IPv6 flowinfo and scope.
        out.append((family, (sockaddr[0], target.port, *sockaddr[2:4]), ip))
    if not out:
        raise _Outcome("ResolveFailed", f"{target.host} has no IPv4 or IPv6 address")
    return out


class _Watchdog:
    """Cuts the connection at the deadline. Socket timeouts bound each recv only, so a receiver dripping one byte at
    a time could hold a delivery open for ever; shutting the socket down wakes any blocked read or handshake."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.fired:
                _cut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._sock is not None:
                _cut(self._sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _cut(sock: socket.socket) -> None:
    # OSError: not connected yet, or already closed.
    with contextlib.suppress(OSError):
        # The plain socket method even for an SSLSocket: it acts on the descriptor without touching TLS state.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _describe(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate rejected: {e.verify_message}"
    if isinstance(e, ssl.SSLError):
        return f"TLS error: {e.reason or e}"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _connect(target: _Target, addrs: list[tuple[int, tuple[Any, ...], IPAddress]], policy: DeliveryPolicy,
             deadline: float, watchdog: _Watchdog) -> socket.socket:
    """A TCP connection to the first checked address that answers, TLS on top for https."""
    errors: list[str] = []
    sock: socket.socket | None = None
    for family, sockaddr, ip in addrs:
        candidate = socket.socket(family, socket.SOCK_STREAM)
        watchdog.watch(candidate)
        try:
            candidate.settimeout(min(policy.connect_timeout, _left(deadline, f"connecting to {ip}")))
            candidate.connect(sockaddr)
        except OSError as e:
            candidate.close()
            errors.append(f"{ip}: {'timed out' if isinstance(e, TimeoutError) else _describe(e)}")
            continue
        except BaseException:
            candidate.close()
            raise
        sock = candidate
        break
    if sock is None:
        raise _Outcome("ConnectFailed", f"cannot connect to {target.host}: " + "; ".join(errors))
    if target.scheme == "http":
        return sock
    try:
        # Verified against the URL's name (SNI too), although the socket goes to the address checked above.
        tls = ssl.create_default_context().wrap_socket(sock, server_hostname=target.host,
                                                       do_handshake_on_connect=False)
        watchdog.watch(tls)  # before the handshake, which a slow server can drag out as well
        tls.settimeout(_left(deadline, "the TLS handshake"))
        tls.do_handshake()
    except TimeoutError:
        sock.close()
        raise _Outcome("Timeout", f"TLS handshake with {target.host} timed out") from None
    except OSError as e:
        sock.close()
        if watchdog.fired:
            raise _Outcome("Timeout", f"TLS handshake with {target.host} timed out") from None
        raise _Outcome("ConnectFailed", f"TLS with {target.host} failed: {_describe(e)}") from None
    except BaseException:
        sock.close()
        raise
    return tls


class _PinnedConnection(http.client.HTTPConnection):
    """http.client's request writing and response parsing over a socket we connected ourselves."""

    def __init__(self, sock: socket.socket, target: _Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._pinned = sock

    def connect(self) -> None:
        self.sock = self._pinned


_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def _exchange(target: _Target, sock: socket.socket, body: bytes, hdrs: Mapping[str, str],
              policy: DeliveryPolicy, deadline: float) -> DeliveryResult:
    sock.settimeout(_left(deadline, "sending"))  # each op; the watchdog bounds the total
    conn = _PinnedConnection(sock, target, timeout=policy.total_timeout)
    try:
        send = {k: v for k, v in hdrs.items() if k.lower() not in _OWN_HEADERS}
        send.update({"Host": target.host_header, "Connection": "close"})
        conn.request("POST", target.path, body=body, headers=send)
        resp = conn.getresponse()  # never follows redirects: http.client does not
        status = resp.status
        if 200 <= status < 300:
            # The body means nothing to us: do not read it (a receiver may stream forever).
            return _result("Delivered", f"HTTP {status} from {target.host}", status)
        detail = f"HTTP {status} {resp.reason}".strip()
        if 300 <= status < 400:
            detail += " (redirects are not followed)"
        try:
            snippet = resp.read(min(_SNIPPET_BYTES, policy.max_response_bytes))
        except (OSError, http.client.HTTPException):
            snippet = b""  # the status is what counts
        text = snippet.decode("utf-8", "replace").strip()
        return _result("Gone" if status == 410 else "HttpError", f"{detail}: {text}" if text else detail, status)
    finally:
        conn.close()


def post(url: str, body: bytes, hdrs: Mapping[str, str], policy: DeliveryPolicy,
         resolver: Callable[..., list[Any]] = socket.getaddrinfo) -> DeliveryResult:
    """POST `body` to `url` once, under `policy`. Never raises."""
    deadline = time.monotonic() + policy.total_timeout
    watchdog: _Watchdog | None = None
    try:
        target = _parse(url, policy)
        addrs = _resolve(target, resolver, deadline)
        # Every address, not just the one we would use: a mixed answer is a rebinding or misconfiguration sign.
        for _family, _sockaddr, ip in addrs:
            why = refusal(ip, policy)
            if why is not None:
                raise _Outcome("AddressNotAllowed", f"{target.host} resolves to {ip}: {why}")
        watchdog = _Watchdog(_left(deadline, "connecting"))
        sock = _connect(target, addrs, policy, deadline, watchdog)
        try:
            return _exchange(target, sock, body, hdrs, policy, deadline)
        except TimeoutError:
            raise _Outcome("Timeout", f"{target.host} did not answer within {policy.total_timeout:g}s") from None
        except http.client.LineTooLong as e:
            raise _Outcome("ResponseTooLarge", f"response from {target.host} too large: {e}") from None
        except (OSError, http.client.HTTPException) as e:
            if watchdog.fired:
                raise _Outcome("Timeout", f"{target.host} did not answer within {policy.total_timeout:g}s") from None
            if isinstance(e, http.client.HTTPException):
                raise _Outcome("HttpError", f"no valid HTTP response from {target.host}: {_describe(e)}") from None
            raise _Outcome("ConnectFailed", f"connection to {target.host} failed: {_describe(e)}") from None
        finally:
            sock.close()
    except _Outcome as outcome:
        return outcome.result
    except Exception as e:  # never raise: the caller records the attempt and retries on its schedule
        return _result("ConnectFailed", f"delivery failed: {type(e).__name__}: {_describe(e)}")
    finally:
        if watchdog is not None:
            watchdog.cancel()

