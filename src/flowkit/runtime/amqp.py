"""Why RabbitMQ could not be used, in words: the one translation of connection errors.

pika reports a failed connection as a chain of its own classes
(``AMQPConnectionError`` around ``AMQPConnectorSocketConnectError`` around
``ConnectionRefusedError``; ``ProbableAccessDeniedError`` for an unknown
vhost) and logs each step of it with a traceback. Every place flowkit
connects (the publisher, ``flowkit worker``'s start-up check, ``health``,
the queue depths of ``status`` and the dashboard, the scheduler's retries)
turns the failure into one :class:`~flowkit.BrokerError` through
:func:`broker_unreachable`, naming the masked URL, the cause and what to check::

    RabbitMQ at amqp://guest:***@127.0.0.1:5672/ is unreachable: connection refused
    — is RabbitMQ running, and is the URL right? (FLOWKIT_BROKER_URL / --broker-url)

.. versionadded:: 0.2
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import dramatiq

from ..config import broker_urls, mask_url
from ..errors import BrokerError, ConfigurationError
from ..redact import redact

__all__ = [
    "broker_unreachable",
    "connect",
    "connected",
    "describe",
    "is_broker_failure",
    "queue_type_mismatch",
    "quiet_pika",
]

_WHERE = "(FLOWKIT_BROKER_URL / --broker-url)"
_RUNNING = "is RabbitMQ running, and is the URL right?"


def _leaf(exc: BaseException) -> BaseException:
    """The innermost cause of a Dramatiq or pika wrapper (each wraps differently)."""
    for _ in range(10):
        inner: Any = None
        message = getattr(exc, "message", None)  # dramatiq's ConnectionClosed(pika error)
        if isinstance(exc, dramatiq.errors.DramatiqError) and isinstance(message, BaseException):
            inner = message
        elif isinstance(getattr(exc, "exception", None), BaseException):  # pika connector phase
            inner = exc.exception  # type: ignore[attr-defined]
        elif getattr(exc, "exceptions", None):  # pika's AMQPConnectionWorkflowFailed
            inner = exc.exceptions[-1]  # type: ignore[attr-defined]
        elif exc.args and isinstance(exc.args[0], BaseException):  # AMQPConnectionError(phase)
            inner = exc.args[0]
        if inner is None:
            return exc
        exc = inner
    return exc


def _url_parts(url: str) -> tuple[str, str, str]:
    """``(host, user, vhost)`` of an AMQP URL (the first of a list), as RabbitMQ sees them."""
    try:
        parts = urlsplit((broker_urls(url) or [url])[0])
        host, user = parts.hostname or "localhost", unquote(parts.username or "guest")
    except ValueError:
        return "?", "?", "/"
    return host, user, unquote(parts.path[1:]) if len(parts.path) > 1 else "/"


def _broker_words(exc: BaseException) -> str:
    """RabbitMQ's reason: ``(530) 'NOT_ALLOWED - vhost x not found'`` → ``vhost x not found``."""
    text = str(getattr(exc, "reply_text", "") or (exc.args[0] if exc.args else "") or "")
    return text.split(" - ", 1)[-1].strip("'\" ")


def _tls_words(exc: ssl.SSLError) -> str:
    """``[SSL: WRONG_VERSION_NUMBER] wrong version (_ssl.c:1006)`` → ``wrong version``."""
    text = str(getattr(exc, "verify_message", None) or (exc.args[-1] if exc.args else exc))
    return re.sub(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", text) or "no reason given"


def _vhost(url: str, exc: BaseException) -> tuple[str, str]:
    _, user, vhost = _url_parts(url)
    words = _broker_words(exc)
    why = "it does not exist" if "not found" in words else f"user {user!r} has no permissions on it"
    return (
        f"refused access to vhost {vhost!r}: {why}",
        f"create it (rabbitmqctl add_vhost {vhost}) and give {user} permissions on it, "
        "or fix the URL's path",
    )


def _cause(exc: BaseException, url: str) -> tuple[str, str]:
    """``(what happened, what to check)`` for a failure to connect to ``url``."""
    import pika  # the RabbitMQ client: loaded with the broker
    from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout as StackTimeout
    from pika.exceptions import AMQPHeartbeatTimeout as HeartbeatTimeout

    leaf = _leaf(exc)
    closed = isinstance(leaf, pika.exceptions.ConnectionClosedByBroker)
    code = getattr(leaf, "reply_code", None) if closed else None
    login = (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)
    if isinstance(leaf, login) or code == 403:
        _, user, _ = _url_parts(url)
        return (
            f"refused the login of user {user!r}: wrong user name or password",
            "check the credentials in the URL",
        )
    if isinstance(leaf, pika.exceptions.ProbableAccessDeniedError) or code == 530:
        return _vhost(url, leaf)
    if isinstance(leaf, ssl.SSLError):  # before OSError: it is one
        return (
            f"is unreachable: the TLS handshake failed ({_tls_words(leaf)})",
            "does the port speak TLS (amqps:// is usually port 5671), "
            "and is the server's certificate trusted?",
        )
    if isinstance(leaf, socket.gaierror):
        host, _, _ = _url_parts(url)
        return f"is unreachable: host {host!r} not found", "is the host name in the URL right?"
    if isinstance(leaf, ConnectionRefusedError):
        return "is unreachable: connection refused", _RUNNING
    if isinstance(leaf, pika.exceptions.ConnectionBlockedTimeout):
        return (
            "blocked the connection for too long (a memory or disk alarm)",
            "check RabbitMQ's free memory and disk (rabbitmq-diagnostics alarms)",
        )
    if isinstance(leaf, (TimeoutError, socket.timeout, StackTimeout, HeartbeatTimeout)):
        return (
            "is unreachable: the connection timed out",
            "is the host reachable from here (firewall, port), and is RabbitMQ answering?",
        )
    if isinstance(leaf, (pika.exceptions.IncompatibleProtocolError, ConnectionResetError)):
        return (
            "closed the connection during the handshake",
            "is this RabbitMQ's AMQP port (5672, or 5671 for amqps://)?",
        )
    if isinstance(leaf, OSError) and leaf.strerror:
        return f"is unreachable: {leaf.strerror.lower()}", _RUNNING
    return _protocol_cause(leaf)


def _protocol_cause(leaf: BaseException) -> tuple[str, str]:
    """What RabbitMQ did on an open connection, in words (pika's classes named otherwise)."""
    import pika  # the RabbitMQ client: loaded with the broker

    errors = pika.exceptions
    if isinstance(leaf, errors.ConnectionClosedByBroker) and _broker_words(leaf):
        return f"closed the connection: {_broker_words(leaf)}", _RUNNING
    if isinstance(leaf, (errors.StreamLostError, errors.ConnectionClosed)):
        return "closed the connection (connection lost)", _RUNNING
    if isinstance(leaf, errors.ChannelClosedByBroker) and _broker_words(leaf):
        return f"refused the operation: {_broker_words(leaf)}", "see RabbitMQ's log"
    if isinstance(leaf, errors.UnroutableError):
        return "could not route a message to its queue", "was the queue deleted?"
    if isinstance(leaf, errors.NackError):
        return "did not accept a message", "is a queue at its length limit, or a disk full?"
    words = redact(str(leaf)).strip()
    return f"could not be used{': ' + words if words else ''}", _RUNNING


_MISMATCH = re.compile(
    r"inequivalent arg 'x-queue-type' for queue '(?P<queue>[^']*)' in vhost '(?P<vhost>[^']*)'"
    r": received (?P<received>.*) but current is (?P<current>.*)$"
)


def _queue_type_words(value: str) -> str:
    """``the value 'quorum' of type 'longstr'`` → ``quorum``; ``none`` → ``classic``."""
    m = re.search(r"'([^']*)'", value)
    return m.group(1) if m else "classic"


def queue_type_mismatch(exc: BaseException, queue_type: str | None = None) -> BrokerError | None:
    """The :class:`~flowkit.BrokerError` for a declare RabbitMQ refused because the queue
    exists with another type (``406 inequivalent arg 'x-queue-type'``), naming the queue
    and how to migrate; ``None`` for any other error.
    """
    leaf = _leaf(exc)
    if getattr(leaf, "reply_code", None) != 406:
        return None
    m = _MISMATCH.search(str(getattr(leaf, "reply_text", "") or ""))
    if m is None:
        return None
    queue, vhost = m.group("queue"), m.group("vhost")
    wanted = queue_type or _queue_type_words(m.group("received"))
    current = _queue_type_words(m.group("current"))
    base = re.sub(r"\.(DQ|XQ)$", "", queue)
    return BrokerError(
        f"RabbitMQ refused to declare queue {queue!r} (vhost {vhost!r}) as a {wanted} queue: "
        f"it exists as a {current} queue, and a queue's type cannot change — to migrate, "
        f"stop submitting and let the workers drain {base} and {base}.DQ, delete {base}, "
        f"{base}.DQ and {base}.XQ (rabbitmqctl delete_queue -p {vhost} NAME) and start the "
        f"workers with the new type; or use a new vhost (FLOWKIT_QUEUE_TYPE / "
        "App(queue_type=); docs/operations.md, Running on a RabbitMQ cluster)"
    )


def describe(exc: BaseException, url: str) -> str:
    """One line: RabbitMQ at the masked ``url``, what went wrong in words, what to check.

    An error this module already translated is described as it is.
    """
    if isinstance(exc, BrokerError):
        return str(exc)
    mismatch = queue_type_mismatch(exc)
    if mismatch is not None:
        return str(mismatch)
    what, check = _cause(exc, url)
    return f"RabbitMQ at {mask_url(url)} {what} — {check} {_WHERE}"


def broker_unreachable(url: str, exc: BaseException) -> BrokerError:
    """The :class:`~flowkit.BrokerError` for a failure to connect to (or use) ``url``."""
    if isinstance(exc, BrokerError):
        return exc
    return BrokerError(describe(exc, url))


def is_broker_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the broker could not be reached or used (not a bug of ours).

    Dramatiq's broker errors, pika's (including its connection workflow's, which
    derive from neither) and socket errors.
    """
    if isinstance(exc, (dramatiq.errors.BrokerError, OSError, BrokerError)):
        return True
    module = type(exc).__module__ or ""
    return module == "pika" or module.startswith("pika.")


class _PikaQuiet:
    """Counts the threads that want pika silent, so overlapping users restore it once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.saved = 0


_QUIET = _PikaQuiet()


@contextmanager
def quiet_pika() -> Iterator[None]:
    """Silence pika's logger meanwhile: it logs each failed step of a connection, with
    tracebacks, that :func:`describe` says once."""
    log = logging.getLogger("pika")
    with _QUIET.lock:
        if _QUIET.users == 0:
            _QUIET.saved = log.level
            log.setLevel(logging.CRITICAL)
        _QUIET.users += 1
    try:
        yield
    finally:
        with _QUIET.lock:
            _QUIET.users -= 1
            if _QUIET.users == 0:
                log.setLevel(_QUIET.saved)


def connect(url: str, *, timeout: float | None = None) -> Any:
    """A new ``pika.BlockingConnection`` to ``url`` (one attempt when ``timeout`` is set).

    Several URLs (joined by ``;``) are tried in turn, as Dramatiq's broker does.

    Raises:
        ConfigurationError: ``url`` is not a valid AMQP URL.
        BrokerError: RabbitMQ cannot be reached or refused the connection (in words).
    """
    import pika  # the RabbitMQ client: only connecting needs it

    try:
        params = [pika.URLParameters(u) for u in broker_urls(url) or [url]]
    except Exception as exc:
        raise ConfigurationError(f"broker URL {mask_url(url)} is not valid: {exc}") from None
    for p in params if timeout is not None else []:
        p.socket_timeout = timeout
        p.stack_timeout = timeout
        p.connection_attempts = 1
    with quiet_pika():
        try:
            return pika.BlockingConnection(params if len(params) > 1 else params[0])
        except Exception as exc:
            if not is_broker_failure(exc):
                raise
            raise broker_unreachable(url, exc) from exc


def connected(broker: Any, url: str) -> None:
    """Open (or check) a Dramatiq RabbitMQ broker's connection for this thread, the one its
    publishes reuse; a connection found closed is replaced.

    Raises:
        BrokerError: RabbitMQ at ``url`` cannot be reached or refused the connection.
    """
    with quiet_pika():
        try:
            if not broker.connection.is_open:
                del broker.connection
                broker.connection  # noqa: B018 - connecting is the point
        except Exception as exc:
            if not is_broker_failure(exc):
                raise
            raise broker_unreachable(url, exc) from exc
