"""Snippets for the "Tracing" guide."""

from __future__ import annotations

import attrs
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from trio_wsroutes import Connection, Context, WebSocketServer, create_websocket_route, message


@attrs.frozen
class Order:
    item: str


@message("placed")
@attrs.frozen
class Placed:
    item: str


shop = create_websocket_route("/shop/:id").server_messages(Placed)


# [setup]
def setup_tracing(exporter: SpanExporter) -> None:
    """Once, at startup: the spans of the server and of the application go to
    ``exporter`` (``OTLPSpanExporter()`` from ``opentelemetry-exporter-otlp``)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


server = WebSocketServer([shop], tracing=True)  # the global tracer provider
# [/setup]

# [handler]
tracer = trace.get_tracer("shop")


@shop.on("order", Order)
async def order(ws: Connection[Placed], data: Order, ctx: Context[None]) -> Placed:
    # The message's span is current here: this one is its child.
    with tracer.start_as_current_span("reserve stock"):
        ...
    return Placed(data.item)


# [/handler]
