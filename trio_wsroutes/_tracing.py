"""OpenTelemetry spans of a server (the ``tracing`` option of
:class:`~trio_wsroutes.WebSocketServer`), with ``opentelemetry-api`` only.

This module is imported only when tracing is on; nothing else in the package imports
``opentelemetry``. Where a server with tracing off would trace, it checks one attribute
(``None``) and goes on.

* An upgrade: a ``SERVER`` span (``WS upgrade /chat/:room``) over admission and
  ``authenticate``, the child of the trace context of the request's headers (the
  configured propagator: W3C ``traceparent``/``tracestate`` by default).
* A handled message: a ``SERVER`` span (``WS message /chat/:room send``), the root of a
  trace of its own, *linked* to its connection's upgrade span: a connection lives for
  hours, its messages are separate requests.
* A publish through :class:`~trio_wsroutes.RedisBroker` while a span is current: a
  ``PRODUCER`` span (``WS publish topic``) whose context goes with the message to the
  other processes, where its delivery is a ``CONSUMER`` span (``WS deliver topic``), its
  child.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import Token
from typing import TYPE_CHECKING, Any, Final, Protocol, Self, TypeVar

import trio

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import (
        Link,
        NonRecordingSpan,
        Span,
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        TraceFlags,
        TracerProvider,
        TraceState,
    )
except ImportError as exc:
    raise ImportError(
        "the tracing option needs opentelemetry-api: pip install 'trio-wsroutes[tracing]'",
        name="opentelemetry",
    ) from exc

from ._broker.redis._wire import wire_extensions
from ._codes import HANDLER_TIMEOUT
from ._version import __version__

if TYPE_CHECKING:
    from ._broker._base import Subscriber
    from ._envelope import Envelope
    from ._frames import Frame
    from ._history import HistoryPolicy
    from ._request import Request
    from ._spec import RouteSpec

__all__ = ["MessageTracing", "Tracing", "TracedMessage"]

INSTRUMENTATION: Final = "trio_wsroutes"
"""The instrumentation scope's name (the tracer's)."""
MAX_REQUEST_ID: Final = 128
"""Characters of a request id kept in a span attribute."""

_ROOT: Final = otel_context.Context()  # no current span: a new trace
_DENIED: Final = "denied"
_OUTCOME: Final = "wsroutes.outcome"

Denied = Callable[[int, str, "Request", str | None], None]


class _Admitted(Protocol):
    """What admission lets in (``_admission.Admitted``: this module does not import
    admission, which the engine must not reach)."""

    @property
    def spec(self) -> RouteSpec: ...

    def traced(self, tracing: MessageTracing) -> Self: ...


AdmittedT = TypeVar("AdmittedT", bound=_Admitted)
Publish = Callable[[str, "Frame", "Subscriber | None"], Awaitable[int]]


class Tracing:
    """A server's tracer, and the spans of its upgrades and its broker."""

    __slots__ = ("tracer",)

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.tracer: trace.Tracer = trace.get_tracer(
            INSTRUMENTATION, __version__, tracer_provider=provider
        )
        """Spans of this server (of the global tracer provider unless one was given;
        set late, it is used from then on)."""

    @classmethod
    def of(cls, option: object, broker: object) -> Tracing | None:
        """The ``tracing`` option: ``True`` (the global tracer provider), a
        ``TracerProvider``, or ``False``/``None`` (off). A broker that carries trace
        contexts (``configure_tracing``) is told."""
        if option is None or option is False:
            return None
        if option is True:
            tracing = cls()
        elif isinstance(option, TracerProvider):
            tracing = cls(option)
        else:
            raise TypeError("tracing takes True, False or an opentelemetry TracerProvider")
        configure = getattr(broker, "configure_tracing", None)
        if configure is not None:
            configure(tracing)
        return tracing

    # -- upgrades --------------------------------------------------------------------------

    @asynccontextmanager
    async def admission(
        self, admit: AbstractAsyncContextManager[AdmittedT | None], request: Request
    ) -> AsyncGenerator[AdmittedT | None]:
        """``admit`` (the admission of ``request``) inside an upgrade span, current while
        it runs so that spans ``authenticate`` starts are its children. It ends when
        admission has decided; what is admitted carries the connection's
        :class:`MessageTracing`."""
        parent = propagate.extract(request.headers)
        span = self.tracer.start_span(
            "WS upgrade",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "url.path": request.path,
                "url.scheme": request.scheme,
                "network.protocol.name": "websocket",
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        deciding = True
        try:
            async with admit as admitted:
                if request.client is not None:
                    span.set_attribute("client.address", request.client[0])
                if admitted is not None:
                    route = admitted.spec.path
                    span.update_name(f"WS upgrade {route}")
                    span.set_attributes(
                        {
                            "http.route": route,
                            "http.response.status_code": 101,
                            _OUTCOME: "accepted",
                        }
                    )
                    link = Link(span.get_span_context())
                    admitted = admitted.traced(MessageTracing(self.tracer, route, link))
                span.end()
                otel_context.detach(token)
                deciding = False
                yield admitted
        finally:
            if deciding:  # admission itself did not finish (cancelled)
                span.set_attribute(_OUTCOME, "cancelled")
                span.end()
                otel_context.detach(token)

    def on_denied(self, then: Denied) -> Denied:
        """The admission's hook for a refused upgrade: record it on the upgrade span
        (current then), then call ``then``."""

        def denied(status: int, code: str, request: Request, route: str | None) -> None:
            span = trace.get_current_span()
            if span.is_recording():
                if route is not None:
                    span.update_name(f"WS upgrade {route}")
                    span.set_attribute("http.route", route)
                span.set_attributes(
                    {
                        "http.response.status_code": status,
                        "error.type": code,
                        _OUTCOME: _DENIED,
                    }
                )
                if status >= 500:  # a client's mistake (4xx) is not the server's error
                    span.set_status(Status(StatusCode.ERROR, code))
            then(status, code, request, route)

        return denied

    # -- the broker ------------------------------------------------------------------------

    async def publish(
        self,
        publish: Publish,
        topic: str,
        frame: Frame,
        exclude: Subscriber | None,
        policy: HistoryPolicy | None,
    ) -> int:
        """``publish(topic, frame, exclude)`` inside a ``PRODUCER`` span when a span is
        current (the publication then carries its context), else as it is."""
        if not trace.get_current_span().get_span_context().is_valid:
            return await publish(topic, frame, exclude)
        pattern = topic_pattern(topic, policy)
        with self.tracer.start_as_current_span(
            f"WS publish {pattern}",
            kind=SpanKind.PRODUCER,
            attributes=_messaging("publish", "send", topic, pattern, frame),
        ) as span:
            delivered = await publish(topic, frame, exclude)
            span.set_attribute("wsroutes.local_deliveries", delivered)
            return delivered

    def wire_extensions(self) -> bytes:
        """The extension fields of a message published now: its publish time and the
        current span's context, if any."""
        now = time.time_ns() // 1_000_000
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return wire_extensions(now)
        traceparent = b"00-%032x-%016x-%02x" % (
            context.trace_id,
            context.span_id,
            context.trace_flags,
        )
        state = context.trace_state.to_header() if context.trace_state else ""
        return wire_extensions(now, traceparent, state.encode("ascii", "replace"))

    def deliver(
        self,
        topic: str,
        trace_context: tuple[bytes, bytes | None],
        frame: Frame,
        policy: HistoryPolicy | None,
    ) -> Span:
        """Start the ``CONSUMER`` span of a publication received from Redis with a
        trace context (checked by the wire format's parser), the publish span's child.
        The caller ends it."""
        traceparent, tracestate = trace_context
        _, trace_id, span_id, flags = traceparent.split(b"-")
        remote = SpanContext(
            int(trace_id, 16),
            int(span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(int(flags, 16)),
            trace_state=TraceState.from_header([tracestate.decode()]) if tracestate else None,
        )
        pattern = topic_pattern(topic, policy)
        return self.tracer.start_span(
            f"WS deliver {pattern}",
            context=trace.set_span_in_context(NonRecordingSpan(remote), _ROOT),
            kind=SpanKind.CONSUMER,
            attributes=_messaging("deliver", "process", topic, pattern, frame),
        )


class MessageTracing:
    """The spans of one connection's handled messages: each the root of its own trace,
    linked to the connection's upgrade span."""

    __slots__ = ("_links", "_route", "_tracer")

    def __init__(self, tracer: trace.Tracer, route: str, upgrade: Link) -> None:
        self._tracer = tracer
        self._route = route
        self._links: Sequence[Link] = (upgrade,)

    def started(self, connection_id: str, envelope: Envelope) -> TracedMessage:
        """Start the span of a message of a declared type, current until it ends."""
        kind = envelope.type
        attributes: dict[str, str] = {
            "http.route": self._route,
            "network.protocol.name": "websocket",
            "wsroutes.message.type": kind,
            "wsroutes.connection.id": connection_id,
        }
        if envelope.id is not None:
            attributes["wsroutes.request.id"] = str(envelope.id)[:MAX_REQUEST_ID]
        span = self._tracer.start_span(
            f"WS message {self._route} {kind}",
            context=_ROOT,
            kind=SpanKind.SERVER,
            links=self._links,
            attributes=attributes,
        )
        return TracedMessage(span, otel_context.attach(trace.set_span_in_context(span)))


class TracedMessage:
    """The span of one message being handled."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span, token: Token[otel_context.Context]) -> None:
        self._span = span
        self._token = token

    def end(self, outcome: str | BaseException | None) -> None:
        """End it with what handling the message came to: ``None`` (the handler returned),
        the error code the client got, or the exception that ended it."""
        span = self._span
        if outcome is None:
            span.set_attribute(_OUTCOME, "ok")
        elif isinstance(outcome, trio.Cancelled):
            span.set_attribute(_OUTCOME, "cancelled")  # the connection is closing
        elif isinstance(outcome, BaseException):
            kind = type(outcome)
            span.set_attributes(
                {_OUTCOME: "exception", "error.type": f"{kind.__module__}.{kind.__qualname__}"}
            )
            span.record_exception(outcome)
            span.set_status(Status(StatusCode.ERROR, kind.__qualname__))
        elif outcome == HANDLER_TIMEOUT:
            span.set_attributes({_OUTCOME: "timeout", "error.type": outcome})
            span.set_status(Status(StatusCode.ERROR, "handler timeout"))
        else:
            # The client's error (VALIDATION_ERROR, a MessageError's code): not the server's.
            span.set_attributes({_OUTCOME: outcome, "error.type": outcome})
        span.end()
        otel_context.detach(self._token)


def topic_pattern(topic: str, policy: HistoryPolicy | None) -> str:
    """The history pattern ``topic`` matches (``room:*``), else ``"topic"``: a span name
    without the topic itself (span names are meant to be few)."""
    if policy is not None:
        for pattern, _ in policy.rules:
            if fnmatch.fnmatchcase(topic, pattern):
                return pattern
    return "topic"


def _messaging(name: str, kind: str, topic: str, pattern: str, frame: Frame) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "redis",
        "messaging.operation.name": name,
        "messaging.operation.type": kind,
        "messaging.destination.name": topic,
        "messaging.message.body.size": len(frame.payload),
    }
    if pattern != "topic":
        attributes["messaging.destination.template"] = pattern
    return attributes
