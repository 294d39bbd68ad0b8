# SPDX-License-Identifier: MIT
"""Admission: the share of new work the daemon asks a service to shed.

:func:`admit` is the one check; :class:`WSGIMiddleware`,
:class:`ASGIMiddleware` and :func:`shed` put it in front of a WSGI
application, an ASGI application and a plain function.
"""
import functools
import inspect
import random
import threading

from . import protocol

_lock = threading.Lock()
_throttle = 0           # per mille of admit() calls to reject
_admitted = 0
_rejected = 0


class Rejected(Exception):
    """Raised by a function wrapped with :func:`shed` (without `on_reject`)
    when memguard sheds the call; a task queue can retry it later."""


def set_throttle(permille):
    """Set the share of :func:`admit` calls to reject, 0-1000 (the client
    does this from each directive; tests and local policies may too)."""
    global _throttle
    _throttle = max(0, min(int(permille), protocol.THROTTLE_MAX))


def throttle():
    """The share of :func:`admit` calls being rejected now, per mille."""
    return _throttle


def admit():
    """Whether to take on one new piece of work.

    True unless the daemon asks this service to shed load; then False for
    that share of calls, chosen at random.  Cheap enough for every request,
    safe from any thread, and True whenever memguard is not running.
    """
    global _admitted, _rejected
    share = _throttle
    ok = share == 0 or random.random() * protocol.THROTTLE_MAX >= share
    with _lock:
        if ok:
            _admitted += 1
        else:
            _rejected += 1
    return ok


def counts():
    """(admitted, rejected): :func:`admit` results since the process started."""
    with _lock:
        return _admitted, _rejected


def renew_lock():
    """In a fork() child: a lock of its own, the parent's may have been
    held by a thread the child does not have."""
    global _lock
    _lock = threading.Lock()


def reset_after_fork():
    """In a fork() child: counters from zero (a REPORT counts "since the
    process started") and no throttle until the child's own directive."""
    global _admitted, _rejected, _throttle
    renew_lock()
    _admitted = _rejected = 0
    _throttle = 0


_BODY = b"Service temporarily overloaded; retry later.\n"


class WSGIMiddleware:
    """Wrap a WSGI application: the share of requests memguard sheds gets
    ``503 Service Unavailable`` with a ``Retry-After`` header of
    `retry_after` seconds, without reaching the application.

    ``app = memguard.WSGIMiddleware(app)``
    """

    def __init__(self, app, retry_after=1):
        self.app = app
        self.retry_after = str(int(retry_after))

    def __call__(self, environ, start_response):
        if admit():
            return self.app(environ, start_response)
        start_response("503 Service Unavailable",
                       [("Content-Type", "text/plain; charset=utf-8"),
                        ("Content-Length", str(len(_BODY))),
                        ("Retry-After", self.retry_after)])
        return [_BODY]


class ASGIMiddleware:
    """Wrap an ASGI application: the share of HTTP requests memguard sheds
    gets ``503`` with a ``Retry-After`` header of `retry_after` seconds.
    Lifespan and WebSocket scopes pass through untouched.

    ``app = memguard.ASGIMiddleware(app)``
    """

    def __init__(self, app, retry_after=1):
        self.app = app
        self.retry_after = str(int(retry_after)).encode("ascii")

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http" or admit():
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(_BODY)).encode("ascii")),
                                (b"retry-after", self.retry_after)]})
        await send({"type": "http.response.body", "body": _BODY})


def shed(fn=None, *, on_reject=None):
    """Decorator for plain functions and coroutine functions (task-queue
    workers): a call memguard sheds does not run `fn`; it returns
    ``on_reject(*args, **kwargs)`` when `on_reject` is given, else raises
    :class:`Rejected`.

    ``@memguard.shed`` or ``@memguard.shed(on_reject=lambda *a, **k: None)``
    """
    def wrap(f):
        if inspect.iscoroutinefunction(f):
            @functools.wraps(f)
            async def async_wrapper(*args, **kwargs):
                if admit():
                    return await f(*args, **kwargs)
                if on_reject is None:
                    raise Rejected("%s shed by memguard" % f.__qualname__)
                return on_reject(*args, **kwargs)
            return async_wrapper

        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            if admit():
                return f(*args, **kwargs)
            if on_reject is None:
                raise Rejected("%s shed by memguard" % f.__qualname__)
            return on_reject(*args, **kwargs)
        return wrapper

    return wrap(fn) if fn is not None else wrap
