# SPDX-License-Identifier: MIT
"""The memguard wire protocol (docs/protocol.md), the client's side.

Every message is one datagram: a 16-byte header ``{u16 type, u16 version,
u32 length, u32 seq, u32 flags}`` and a body, integers little-endian,
strings a u16 count and that many bytes.  Encoders write field by field;
decoders check the length of a body before they read a field, accept a
longer body than they know (fields are appended in later revisions) and
refuse a shorter one.  A message that breaks a rule raises
:class:`MalformedError`.
"""
import struct
from collections import namedtuple

VERSION = 1
HEADER_SIZE = 16
MSG_MAX = 4096          # bytes, the largest datagram, header included
NAME_MAX = 255          # bytes of a name
TEXT_MAX = 1024         # bytes of a text
THROTTLE_MAX = 1000     # per mille
RELEASE_ALL = 2 ** 64 - 1

# Message types.
HELLO = 0x0001
REPORT = 0x0002
RELEASED = 0x0003
PONG = 0x0004
BYE = 0x0005
WELCOME = 0x0101
DIRECTIVE = 0x0102
PING = 0x0103
ERROR = 0x0104

TYPE_NAMES = {HELLO: "HELLO", REPORT: "REPORT", RELEASED: "RELEASED", PONG: "PONG",
              BYE: "BYE", WELCOME: "WELCOME", DIRECTIVE: "DIRECTIVE", PING: "PING",
              ERROR: "ERROR"}

# HELLO capabilities.
CAP_GC_HOOK = 0x1
CAP_RELEASE_HOOK = 0x2
CAP_ADMIT = 0x4
CAP_HEAP = 0x8

# Levels.
NORMAL, WARN, CRITICAL, EMERGENCY = 0, 1, 2, 3
LEVEL_NAMES = ("NORMAL", "WARN", "CRITICAL", "EMERGENCY")

# BYE reasons.
BYE_NORMAL = 0
BYE_SHUTDOWN = 1

# ERROR codes.
ERR_PROTOCOL = 1
ERR_VERSION = 2
ERR_SERVICE = 3
ERR_PERMISSION = 4
ERR_NO_SERVICE = 5
ERR_INTERNAL = 8
ERROR_NAMES = {0: "success", 1: "protocol error", 2: "protocol version not supported",
               3: "service does not match the peer's cgroup", 4: "permission denied",
               5: "no such service", 6: "invalid value", 7: "busy", 8: "internal error",
               9: "configuration error"}

_HEADER = struct.Struct("<HHIII")
_DIRECTIVE = struct.Struct("<BHHQQI")         # 25 bytes
_WELCOME_FIXED = struct.Struct("<QQI")        # 20 bytes, then the service
_REPORT = struct.Struct("<QQQQQQQQH")         # 66 bytes
_RELEASED = struct.Struct("<IQQ")             # 20 bytes
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


class MalformedError(ValueError):
    """A datagram from the daemon that breaks docs/protocol.md."""


Header = namedtuple("Header", "type version length seq flags")

Directive = namedtuple("Directive", "level gc_percent throttle soft_limit release deadline_ms")
Directive.__doc__ = """What the daemon asks of the client from now on (DIRECTIVE)."""

Welcome = namedtuple("Welcome", "client_id budget report_interval_ms service")
Welcome.__doc__ = """The daemon's answer to an accepted HELLO."""

Error = namedtuple("Error", "code text")
Error.__doc__ = """Why the daemon closes the connection."""

Message = namedtuple("Message", "type seq body")
Message.__doc__ = """A decoded datagram: its type, header seq and body (a
namedtuple, or an int for PING's cookie and BYE's reason)."""

NORMAL_DIRECTIVE = Directive(NORMAL, 0, 0, 0, 0, 0)


def is_name(b):
    """True if the bytes `b` are a valid name: at most 255 printable ASCII."""
    return len(b) <= NAME_MAX and all(0x20 <= c <= 0x7E for c in b)


def _string(b):
    return _U16.pack(len(b)) + b


def _header(type_, seq, body):
    return _HEADER.pack(type_, VERSION, len(body), seq, 0) + body


def encode_hello(seq, capabilities, service, process):
    """HELLO; `service` and `process` are names as bytes (may be empty)."""
    if not is_name(service) or not is_name(process):
        raise ValueError("a name must be at most 255 printable ASCII bytes")
    return _header(HELLO, seq, _U32.pack(capabilities) + _string(service) + _string(process))


def encode_report(seq, heap_sys, heap_inuse, heap_idle, heap_released, external,
                  admitted, rejected, released_total, gc_percent):
    """REPORT; every figure is clamped to its field's width."""
    def c64(v):
        return max(0, min(int(v), 2 ** 64 - 1))
    return _header(REPORT, seq, _REPORT.pack(
        c64(heap_sys), c64(heap_inuse), c64(heap_idle), c64(heap_released), c64(external),
        c64(admitted), c64(rejected), c64(released_total), max(0, min(int(gc_percent), 65535))))


def encode_released(seq, directive_seq, nbytes, usec):
    """RELEASED: the answer to the DIRECTIVE whose header seq is `directive_seq`."""
    return _header(RELEASED, seq, _RELEASED.pack(directive_seq, max(0, min(nbytes, 2 ** 64 - 1)),
                                                 max(0, min(usec, 2 ** 64 - 1))))


def encode_pong(seq, cookie):
    """PONG echoing a PING's cookie."""
    return _header(PONG, seq, _U64.pack(cookie))


def encode_bye(seq, reason=BYE_NORMAL):
    """BYE: the client is leaving."""
    return _header(BYE, seq, _U32.pack(reason))


def _need(body, n, what):
    if len(body) < n:
        raise MalformedError("%s body of %d bytes, at least %d expected" % (what, len(body), n))


def _read_string(body, off, maximum, what, name):
    _need(body, off + 2, what)
    (n,) = _U16.unpack_from(body, off)
    if n > maximum:
        raise MalformedError("%s: a string of %d bytes, at most %d allowed" % (what, n, maximum))
    _need(body, off + 2 + n, what)
    s = bytes(body[off + 2:off + 2 + n])
    if b"\0" in s:
        raise MalformedError("%s: a string holds a NUL byte" % what)
    if name and not is_name(s):
        raise MalformedError("%s: a name holds a byte that is not printable ASCII" % what)
    return s, off + 2 + n


def decode_directive(body):
    """The body of a DIRECTIVE, as a :class:`Directive`."""
    _need(body, _DIRECTIVE.size, "DIRECTIVE")
    d = Directive(*_DIRECTIVE.unpack_from(body, 0))
    if d.level > EMERGENCY:
        raise MalformedError("DIRECTIVE: level %d out of range" % d.level)
    if d.throttle > THROTTLE_MAX:
        raise MalformedError("DIRECTIVE: throttle %d out of range" % d.throttle)
    return d


def decode(data):
    """Decode one datagram from the daemon into a :class:`Message`.

    Raises :class:`MalformedError` for anything docs/protocol.md calls
    malformed, a version other than 1, and a type a daemon does not send
    to a client.
    """
    if len(data) < HEADER_SIZE:
        raise MalformedError("a datagram of %d bytes, shorter than a header" % len(data))
    h = Header(*_HEADER.unpack_from(data, 0))
    if h.length != len(data) - HEADER_SIZE:
        raise MalformedError("header length %d, body of %d bytes" %
                             (h.length, len(data) - HEADER_SIZE))
    if h.version != VERSION:
        raise MalformedError("protocol version %d, not %d" % (h.version, VERSION))
    body = memoryview(data)[HEADER_SIZE:]
    if h.type == WELCOME:
        _need(body, _WELCOME_FIXED.size, "WELCOME")
        client_id, budget, interval = _WELCOME_FIXED.unpack_from(body, 0)
        service, _ = _read_string(body, _WELCOME_FIXED.size, NAME_MAX, "WELCOME", True)
        return Message(h.type, h.seq, Welcome(client_id, budget, interval,
                                              service.decode("ascii")))
    if h.type == DIRECTIVE:
        return Message(h.type, h.seq, decode_directive(body))
    if h.type == PING:
        _need(body, 8, "PING")
        return Message(h.type, h.seq, _U64.unpack_from(body, 0)[0])
    if h.type == ERROR:
        _need(body, 4, "ERROR")
        (code,) = _U32.unpack_from(body, 0)
        text, _ = _read_string(body, 4, TEXT_MAX, "ERROR", False)
        return Message(h.type, h.seq, Error(code, text.decode("latin-1")))
    if h.type == BYE:
        _need(body, 4, "BYE")
        return Message(h.type, h.seq, _U32.unpack_from(body, 0)[0])
    raise MalformedError("message type 0x%04x is not one a daemon sends to a client" % h.type)
