"""The per-account supervisor: run sessions forever, reconnecting with back-off.

It gives up only on a final auth error (wrong key or secret): that account stops with one
clear line, the others keep recording. Anything not in the retryable set (a bug) propagates
and stops the process, as structured concurrency intends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from recorder.logs import log_fields
from recorder.store.errors import StoreUnavailable
from recorder.upstream.backoff import Backoff, ConnectionRateLimit
from recorder.upstream.session import Session, SessionOutcome

log = logging.getLogger(__name__)

TOO_MANY_REQUESTS = 429
HEALTHY_AFTER = 30.0  # a session authenticated at least this long resets the back-off


async def supervise(
    account: str,
    make_session: Callable[[], Session],
    *,
    backoff: Backoff,
    rate_limit: ConnectionRateLimit,
    on_outcome: Callable[[SessionOutcome], None] | None = None,
) -> SessionOutcome:
    """Run sessions until one ends with a final error; return that outcome."""
    while True:
        await rate_limit.acquire()
        try:
            outcome = await make_session().run()
        except StoreUnavailable as exc:
            # The session row itself could not be written: wait and retry like a disconnect.
            log_fields(
                log,
                "cannot open session: database unavailable",
                logging.WARNING,
                account=account,
                error=str(exc),
            )
            await trio.sleep(backoff.next())
            continue
        if on_outcome is not None:
            on_outcome(outcome)
        if outcome.final:
            if outcome.auth_code is not None:  # else the session said why (a key that can write)
                log_fields(
                    log,
                    f"account {account} stopped: authentication failed with code "
                    f"{outcome.auth_code} ({outcome.auth_msg}); check its API key and secret",
                    logging.ERROR,
                    account=account,
                    code=outcome.auth_code,
                )
            return outcome
        lasted = (outcome.ended or trio.current_time()) - outcome.started
        if outcome.authenticated and lasted >= HEALTHY_AFTER:
            backoff.reset()
        if outcome.reconnect_now:
            delay = 0.0
        else:
            delay = backoff.next()
            if outcome.handshake_status == TOO_MANY_REQUESTS:
                delay = max(delay, rate_limit.window)
        log_fields(
            log, "reconnecting", account=account, reason=outcome.reason, delay=round(delay, 2)
        )
        await trio.sleep(delay)
