"""The authenticated REST client (httpx under trio): signed requests, one in flight per key,
paced per endpoint, every request and answer into the log.

The trio layer only moves bytes and time: what an answer means comes from
:mod:`recorder.protocol.rest`. Each request is logged as a ``recorder.rest-request`` marker
(path and body; never the key, nonce or signature), each answer as ``rest.<name>`` (the body
exactly as received) or a ``rest.error`` marker, through the same writer and hash chain as the
socket's frames.

Retries: a rate-limit answer waits at least ``rate_limit_wait`` (60 s on the exchange) with
jitter; an unavailable server, a lost connection, ``nonce: small`` or maintenance are retried
with back-off up to ``attempts`` times; a final error (bad key, bad parameters, permission) is
not retried.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import trio

from recorder.config import AccountConfig, Credentials, Secret
from recorder.logs import log_fields
from recorder.protocol.rest import (
    API_ERROR,
    OK,
    RATE_LIMITED,
    RETRY_CODES,
    UNAVAILABLE,
    Answer,
    Endpoint,
    encode_body,
    read_answer,
    signed_headers,
)
from recorder.store.errors import StoreError
from recorder.store.eventlog import NewEvent, marker
from recorder.upstream.nonces import PersistentNonces

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30.0  # seconds for a whole request and answer (``rest_timeout_s``)
# The longest answer read: a full page of the largest endpoint (2,500 rows of about 300
# bytes) is under 1 MB; 64 MiB is room for servers that ignore ``limit``, and still a bound.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
ERRORS_REMEMBERED = 256  # error answers whose repeats are logged as references
SEND_DEADLINE = 5.0  # seconds the key's lock may be held while a request is being sent
PACE = 60.0 / 90  # seconds between requests to one endpoint: 90 a minute (rest.md §2.3)


class AnswerTooLarge(Exception):
    """An answer longer than ``max_answer_bytes``: not read further, not stored."""

    def __init__(self, size: int, bound: int) -> None:
        super().__init__(f"answer over {bound} bytes (read {size}); not stored")


class RestFailed(Exception):
    """The request could not be answered: a final API error, or retries exhausted."""


class RestClient:
    """REST for one account. ``nonce`` takes the key's next persisted nonce; ``key_lock``
    is held around taking a nonce and sending (shared with the WebSocket ``auth`` of the same
    key, so the exchange never sees a smaller nonce after a larger one)."""

    def __init__(
        self,
        *,
        account: str,
        base_url: str,
        api_key: Secret,
        api_secret: Secret,
        nonce: Callable[[], Awaitable[int]],
        key_lock: trio.Lock,
        emit: Callable[[NewEvent], Awaitable[None]],
        http: httpx.AsyncClient,
        pace: float = PACE,
        rate_limit_wait: float = 60.0,
        attempts: int = 5,
        retry_delay: float = 1.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        timeout: float = REQUEST_TIMEOUT,
        send_deadline: float = SEND_DEADLINE,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.max_answer_bytes = max_answer_bytes
        self.account = account
        self.timeout = timeout
        self.send_deadline = send_deadline
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.api_secret = api_secret
        self.nonce = nonce
        self.answers: dict[str, int] = {}  # answer status -> count (metrics)
        self.key_lock = key_lock
        self.emit = emit
        self.http = http
        self.pace = pace
        self.rate_limit_wait = rate_limit_wait
        self.attempts = int(attempts)
        self.retry_delay = retry_delay
        self.now = now
        self.session_id: int | None = None
        self._last_call: dict[str, float] = {}
        self._errors_logged: OrderedDict[str, None] = OrderedDict()  # digests, latest last
        self.requests = 0

    @classmethod
    def for_account(
        cls,
        account: AccountConfig,
        credentials: Credentials,
        nonces: PersistentNonces,
        emit: Callable[[NewEvent], Awaitable[None]],
        http: httpx.AsyncClient,
        **options: Any,
    ) -> RestClient:
        """The client of a configured account: its REST URL and key, the key's persisted
        nonces and lock (shared with its WebSocket auth)."""
        return cls(
            account=account.name,
            base_url=account.rest_url,
            api_key=credentials.api_key,
            api_secret=credentials.api_secret,
            nonce=nonces.next,
            key_lock=nonces.key_lock,
            emit=emit,
            http=http,
            **{"timeout": account.rest_timeout_s, **options},
        )

    def _marker(self, kind: str, fields: dict[str, Any]) -> NewEvent:
        return marker(self.account, self.session_id, self.now(), kind, fields)

    async def call(self, endpoint: Endpoint, params: dict[str, Any]) -> Answer:
        """One request, retried as the module says; returns an ok answer or raises
        :class:`RestFailed`."""
        delay = self.retry_delay
        last = "no answer"
        for attempt in range(1, self.attempts + 1):
            answer = await self._once(endpoint, params)
            if answer.status == OK:
                return answer
            last = f"{answer.status} {answer.code or ''} {answer.text}".strip()
            if answer.final:
                raise RestFailed(f"{endpoint.path}: {last}")
            if attempt == self.attempts:
                break  # no wait after the last try: the caller's back-off takes over
            if answer.status == RATE_LIMITED:
                wait = self.rate_limit_wait * random.uniform(1.0, 1.5)
            elif answer.status == API_ERROR and answer.code not in RETRY_CODES:
                wait = delay * 10  # an unknown error: a few slow tries (rest.md §2.3)
            else:
                wait = delay
            log_fields(
                log,
                "REST request not answered, retrying",
                logging.WARNING,
                account=self.account,
                path=endpoint.path,
                answer=last[:120],
                retry_in=round(wait, 1),
            )
            await trio.sleep(wait)
            delay = min(delay * 2, 30.0)
        raise RestFailed(f"{endpoint.path}: {last} (after {self.attempts} tries)")

    async def _once(self, endpoint: Endpoint, params: dict[str, Any]) -> Answer:
        since = trio.current_time() - self._last_call.get(endpoint.path, -1e9)
        if since < self.pace:
            await trio.sleep(self.pace - since)
        body = encode_body(params)
        await self.emit(
            self._marker("recorder.rest-request", {"path": endpoint.path, "body": params})
        )
        url = f"{self.base_url}/{endpoint.path}"
        try:
            # One total deadline for the whole exchange (connect, send, every byte of the
            # answer): a host that accepts and never answers, or trickles, costs just this.
            with trio.fail_after(self.timeout):
                response = await self._send_signed(endpoint, url, body)
        except (
            httpx.HTTPError,
            httpx.InvalidURL,
            OSError,
            trio.TooSlowError,
            AnswerTooLarge,
            StoreError,
        ) as exc:
            text = f"{type(exc).__name__}: {exc}"[:300]
            if isinstance(exc, StoreError):
                # The key's nonce could not be persisted (the database is down): nothing was
                # sent; retried like an unreachable host, never an end of the recorder (the
                # writer keeps the frames and waits for the database itself).
                text = f"not sent: the nonce could not be stored ({exc})"[:300]
            elif isinstance(exc, trio.TooSlowError):
                text = f"no complete answer within {self.timeout:g} s"
            elif isinstance(exc, AnswerTooLarge):
                text = str(exc)
            await self.emit(
                self._marker("rest.error", {"path": endpoint.path, "status": None, "body": text})
            )
            self.answers[UNAVAILABLE] = self.answers.get(UNAVAILABLE, 0) + 1
            return Answer(UNAVAILABLE, text=text)
        status, content = response
        text = content.decode("utf-8", "replace")  # decoded once: stored and read
        del content
        answer = read_answer(status, text)
        self.answers[answer.status] = self.answers.get(answer.status, 0) + 1
        if answer.status == OK:
            await self.emit(
                NewEvent(
                    self.account,
                    self.session_id,
                    self.now(),
                    None,
                    endpoint.kind,
                    None,
                    None,
                    text,
                )
            )
        else:
            await self.emit(self._error_marker(endpoint, status, text))
        return answer

    def _error_marker(self, endpoint: Endpoint, status: int, body: str) -> NewEvent:
        """A ``rest.error`` marker; an error answer identical to one this client already
        logged (an endpoint down answers the same page at every retry: 1.16 MB in 4 minutes)
        is logged as a reference to it: its SHA-256 and length, not the body again."""
        digest = hashlib.sha256(f"{endpoint.path}\n{status}\n{body}".encode()).hexdigest()
        fields: dict[str, Any] = {"path": endpoint.path, "status": status}
        if digest in self._errors_logged:
            self._errors_logged.move_to_end(digest)
            fields.update(body=None, repeat_of=digest, bytes=len(body))
        else:
            self._errors_logged[digest] = None
            if len(self._errors_logged) > ERRORS_REMEMBERED:
                self._errors_logged.popitem(last=False)
            fields.update(body=body, sha256=digest)
        return self._marker("rest.error", fields)

    async def _send_signed(self, endpoint: Endpoint, url: str, body: bytes) -> tuple[int, bytes]:
        """Take a nonce and send, holding the key's lock only until the request has left
        (or for ``send_deadline`` at most): the answer is awaited outside it, so a slow or
        hung REST host never delays the WebSocket ``auth`` of the same key. (Should the
        auth's larger nonce overtake a request still being written, the exchange answers
        ``nonce: small``, which is retried.)"""
        sent = trio.Event()
        got: list[tuple[int, bytes]] = []
        failed: list[Exception] = []

        async def trace(event: str, _info: dict[str, Any]) -> None:
            if event.endswith("send_request_body.complete"):
                sent.set()

        async def post(headers: dict[str, str]) -> None:
            try:
                async with self.http.stream(
                    "POST", url, content=body, headers=headers, extensions={"trace": trace}
                ) as response:
                    # Read up to the bound, so a server sending without end cannot take
                    # the process's memory.
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > self.max_answer_bytes:
                            raise AnswerTooLarge(size, self.max_answer_bytes)
                        chunks.append(chunk)
                    got.append((response.status_code, b"".join(chunks)))
            except Exception as exc:  # re-raised below, as itself rather than in a group
                failed.append(exc)
            finally:
                sent.set()

        # The lock: nonce order = send order, one request leaving at a time.
        async with trio.open_nursery() as nursery, self.key_lock:
            try:
                nonce: int | None = await self.nonce()
            except StoreError as exc:  # raised below as itself, not in the nursery's group
                failed.append(exc)
                nonce = None
            if nonce is not None:
                headers = signed_headers(
                    self.api_key.reveal(), self.api_secret.reveal(), endpoint.path, nonce, body
                )
                self._last_call[endpoint.path] = trio.current_time()
                self.requests += 1
                nursery.start_soon(post, headers)
                with trio.move_on_after(self.send_deadline):
                    await sent.wait()
        if failed:
            raise failed[0]
        return got[0]
