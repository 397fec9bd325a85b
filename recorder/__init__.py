"""Bitfinex account recorder: an append-only, hash-chained log of an account's WebSocket
frames, folded into queryable projections and replayable for backtests."""

__version__ = "0.1.0"
