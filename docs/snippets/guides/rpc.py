"""Snippets for the "Replies and errors" guide."""

from __future__ import annotations

import logging

import attrs

from trio_wsroutes import (
    Connection,
    Context,
    MessageError,
    ValidationError,
    create_websocket_route,
    message,
)

log = logging.getLogger(__name__)


@attrs.frozen
class Transfer:
    to: str
    amount: int


@message("transferred")
@attrs.frozen
class Transferred:
    balance: int


balances: dict[str, int] = {"ada": 100}
bank = create_websocket_route("/bank").server_messages(Transferred)


# [reply]
@bank.on("transfer", Transfer)
async def transfer(ws: Connection[Transferred], data: Transfer, ctx: Context[None]) -> Transferred:
    if data.amount <= 0:
        raise MessageError("Amount must be positive", code="BAD_AMOUNT")
    if balances.get("ada", 0) < data.amount:
        raise MessageError("Insufficient funds", code="INSUFFICIENT_FUNDS")
    balances["ada"] -= data.amount
    return Transferred(balance=balances["ada"])  # sent with the request's "id"


# [/reply]


# [on-error]
@bank.on_error
async def report(ws: Connection[Transferred], error: Exception, ctx: Context[None]) -> None:
    # The error envelope has already been sent. Log, count, or give up on the client.
    if isinstance(error, ValidationError):
        strikes = int(str(ctx.data.get("strikes", 0))) + 1
        ctx.data["strikes"] = strikes
        if strikes >= 3:
            await ws.close(1008, "too many invalid messages")
    elif not isinstance(error, MessageError):
        log.error("transfer handler crashed", exc_info=error)


# [/on-error]
