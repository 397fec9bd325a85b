"""Configuration: TOML file resolution, environment overrides, validation.

Every problem becomes a :class:`ConfigError` that names the offending key and the fix, so the
CLI can print one line and exit 2 instead of a traceback. Secrets are wrapped in
:class:`Secret`, whose ``repr``/``str`` never show the value, so a secret cannot leak through a
log line or an exception message by accident.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_CONFIG_PATH = Path("config/recorder.toml")
CONFIG_ENV = "BFX_RECORDER_CONFIG"
ENV_PREFIX = "BFX_RECORDER_"


class ConfigError(Exception):
    """A configuration problem, phrased as ``key: problem; fix: what to do``."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key = key
        self.problem = problem
        self.fix = fix
        super().__init__(f"configuration error at '{key}': {problem}; fix: {fix}")


class Secret:
    """A credential that refuses to be printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///recorder.db"
    auto_migrate: bool = True
    sqlite_synchronous: str = "NORMAL"


@dataclass(frozen=True)
class WriterConfig:
    batch_max_frames: int = 2000
    batch_max_ms: float = 20.0
    queue_size: int = 20000
    unavailable_timeout_s: float = 30.0


@dataclass(frozen=True)
class LoggingConfig:
    format: str = "text"
    level: str = "INFO"
    summary_interval_s: float = 60.0  # a heartbeat line per account this often


@dataclass(frozen=True)
class MetricsConfig:
    listen: str | None = None  # "127.0.0.1:9464" serves /metrics and /healthz; None: off
    # Required when ``listen`` is not a loopback address: requests then need
    # ``Authorization: Bearer <token>``.
    token: Secret | None = None


@dataclass(frozen=True)
class StatusConfig:
    max_frame_age_s: float = 60.0
    max_projector_lag: int = 10000


@dataclass(frozen=True)
class AuditConfig:
    # The hash chain checks itself while the daemon runs: the rows appended since the last
    # check every this many seconds (and the whole chain once a day); 0: never.
    verify_every_s: float = 300.0


@dataclass(frozen=True)
class Credentials:
    api_key: Secret
    api_secret: Secret


@dataclass(frozen=True)
class AccountConfig:
    name: str
    url: str = "wss://api.bitfinex.com/ws/2"
    api_key_env: str = "BFX_API_KEY"
    api_secret_env: str = "BFX_API_SECRET"
    api_secret_file: str | None = None
    filter: tuple[str, ...] = ()
    dms: bool = False
    backoff_cap_s: float = 60.0
    heartbeat_period_s: float = 15.0
    rest_url: str = "https://api.bitfinex.com/v2"
    rest_timeout_s: float = 30.0  # one REST request and its whole answer, at most
    max_frame_bytes: int = 64 * 1024 * 1024  # the largest frame read (see connection.py)
    backfill: bool = True
    allow_write_key: bool = False
    # While connected, new ledger entries are fetched every this many seconds (0: never):
    # the ledger is then complete, not only around gaps (the balance proofs need it).
    ledger_every_s: float = 300.0
    # At the first start, the account's history from this time is fetched (REST windows,
    # reason 'initial'); None: only what happens from the first start on.
    history_from: datetime | None = None

    def credentials(self, environ: Mapping[str, str] | None = None) -> Credentials:
        """Read the API key and secret from the environment (or the secret file)."""
        env = os.environ if environ is None else environ
        where = f"accounts.{self.name}"
        key = env.get(self.api_key_env)
        if not key:
            raise ConfigError(
                f"{where}.api_key_env",
                f"environment variable {self.api_key_env} is not set",
                f"export {self.api_key_env} with the account's API key",
            )
        if self.api_secret_file:
            secret = Path(self.api_secret_file).read_text(encoding="utf-8").strip()
        else:
            secret = env.get(self.api_secret_env, "")
        if not secret:
            raise ConfigError(
                f"{where}.api_secret_env",
                f"environment variable {self.api_secret_env} is not set",
                f"export {self.api_secret_env} with the API secret, or set api_secret_file",
            )
        return Credentials(Secret(key), Secret(secret))

    def has_credentials(self, environ: Mapping[str, str] | None = None) -> tuple[bool, bool]:
        env = os.environ if environ is None else environ
        return bool(env.get(self.api_key_env)), bool(
            self.api_secret_file or env.get(self.api_secret_env)
        )


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    accounts: tuple[AccountConfig, ...] = ()
    source: str = "built-in defaults"
    # Where each value came from ("section.key" -> "file F" | "environment VAR"); absent
    # keys are built-in defaults.
    origins: dict[str, str] = field(default_factory=dict)
    # Things worth saying that are not errors (a misspelt BFX_RECORDER_* variable).
    warnings: tuple[str, ...] = ()


# --- validation -------------------------------------------------------------------------------

Check = Callable[[str, Any], Any]


def _type(expected: type | tuple[type, ...], label: str) -> Check:
    def check(key: str, value: Any) -> Any:
        # bool is an int subclass: refuse it where a number is wanted.
        if isinstance(value, bool) and bool not in (
            expected if isinstance(expected, tuple) else (expected,)
        ):
            raise ConfigError(key, f"expected {label}, got a boolean", f"write {key} as {label}")
        if not isinstance(value, expected):
            raise ConfigError(
                key, f"expected {label}, got {type(value).__name__}", f"write {key} as {label}"
            )
        return value

    return check


def _positive(expected: type | tuple[type, ...], label: str) -> Check:
    base = _type(expected, label)

    def check(key: str, value: Any) -> Any:
        value = base(key, value)
        if value <= 0:
            raise ConfigError(key, f"must be positive, got {value}", f"set {key} above 0")
        return value

    return check


def _between(
    expected: type | tuple[type, ...], label: str, low: float, high: float = math.inf
) -> Check:
    """A finite number in ``[low, high]``: nan, infinities and absurd values (a heartbeat
    of 1e-9 s reconnects in a loop, a summary every millisecond floods the log) are refused."""
    base = _type(expected, label)

    def check(key: str, value: Any) -> Any:
        value = base(key, value)
        if not math.isfinite(value) or not low <= value <= high:
            span = f"from {low:g} to {high:g}" if math.isfinite(high) else f"{low:g} or more"
            raise ConfigError(key, f"must be {span}, got {value}", f"set {key} {span}")
        return value

    return check


def _choice(*choices: str) -> Check:
    def check(key: str, value: Any) -> Any:
        if not isinstance(value, str) or value.upper() not in {c.upper() for c in choices}:
            raise ConfigError(
                key, f"{value!r} is not one of {', '.join(choices)}", f"set {key} to one of them"
            )
        return value if value in choices else next(c for c in choices if c.upper() == value.upper())

    return check


def _str_list(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, "expected a list of strings", f'write {key} = ["trading", ...]')
    return tuple(value)


def _database_url(key: str, value: Any) -> str:
    _type(str, "a string")(key, value)
    scheme = value.split("://", 1)[0]
    if "://" not in value or not (scheme.startswith("sqlite") or scheme.startswith("postgresql")):
        raise ConfigError(
            key,
            f"unsupported database URL scheme {scheme!r}",
            "use sqlite:///path.db or postgresql+psycopg://user@host/dbname",
        )
    if scheme in ("postgresql", "postgresql+psycopg2"):
        value = "postgresql+psycopg://" + value.split("://", 1)[1]
    if scheme.startswith("sqlite"):
        rest = value.split("://", 1)[1]
        path = rest.split("?", 1)[0]
        if not path.startswith("/") or path in ("/", "/:memory:"):
            raise ConfigError(
                key,
                f"{value!r} names no database file (SQLite would keep the log in memory and "
                "lose it at exit)",
                "write sqlite:///recorder.db (three slashes: a path relative to the "
                "configuration file's folder) or sqlite:////var/lib/bfx-recorder/recorder.db "
                "(four: an absolute path)",
            )
    return value


def resolve_sqlite_path(url: str, folder: Path) -> str:
    """A relative SQLite path written in a configuration file, made absolute against the
    file's folder (so that every command finds the daemon's database, from any directory)."""
    scheme, _, rest = url.partition("://")
    if not scheme.startswith("sqlite") or not rest.startswith("/") or rest.startswith("//"):
        return url
    path, sep, query = rest[1:].partition("?")
    if Path(path).is_absolute():
        return url
    return f"{scheme}:///{(folder / path).resolve()}{sep}{query}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ws_url(key: str, value: Any) -> str:
    _type(str, "a string")(key, value)
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(key, f"{value!r} is not a WebSocket URL", "use wss://host/ws/2")
    if parts.scheme == "ws" and not _is_loopback(parts.hostname):
        raise ConfigError(
            key,
            f"plain ws:// to non-loopback host {parts.hostname!r} sends credentials unencrypted",
            "use wss://, or ws:// only with 127.0.0.1 / localhost",
        )
    return value


def _rest_url(key: str, value: Any) -> str:
    _type(str, "a string")(key, value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"{value!r} is not an HTTP URL", "use https://api.bitfinex.com/v2")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            key,
            f"plain http:// to non-loopback host {parts.hostname!r} sends signed requests "
            "unencrypted",
            "use https://, or http:// only with 127.0.0.1 / localhost",
        )
    return value.rstrip("/")


def _listen(key: str, value: Any) -> str:
    _type(str, "a string")(key, value)
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ConfigError(key, f"{value!r} is not HOST:PORT", 'write e.g. "127.0.0.1:9464"')
    return value


def _token(key: str, value: Any) -> Secret:
    _type(str, "a string")(key, value)
    if len(value) < 16:
        raise ConfigError(
            key, "is shorter than 16 characters (its value is not shown)", "use a long random token"
        )
    return Secret(value)


def listen_host(listen: str) -> str:
    return listen.rpartition(":")[0].strip("[]")


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_name(key: str, value: Any) -> str:
    _type(str, "a string")(key, value)
    if not _ENV_NAME.match(value):
        raise ConfigError(
            key,
            "is not an environment variable name (its value is not shown: it may be a secret)",
            "give the NAME of the variable that holds the credential, not the credential",
        )
    return value


def _ledger_every(key: str, value: Any) -> float:
    """0 (off) or from 30 s to a day (the ledger endpoint allows 90 requests a minute)."""
    value = _type((int, float), "a number of seconds")(key, value)
    if value != 0 and not (math.isfinite(value) and 30 <= value <= 86_400):
        raise ConfigError(
            key, f"must be 0 (off) or from 30 to 86400, got {value}", f"set {key} = 300"
        )
    return float(value)


def _verify_every(key: str, value: Any) -> float:
    """0 (off) or from 1 s to a day."""
    value = _type((int, float), "a number of seconds")(key, value)
    if value != 0 and not (math.isfinite(value) and 1 <= value <= 86_400):
        raise ConfigError(
            key, f"must be 0 (off) or from 1 to 86400, got {value}", f"set {key} = 300"
        )
    return float(value)


def _history_from(key: str, value: Any) -> datetime:
    """A TOML date or date-time, or an ISO 8601 string; UTC when no zone is given."""
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(
                key, f"{value!r} is not an ISO 8601 time", f"write {key} = 2026-01-01"
            ) from None
    if not isinstance(value, datetime):
        raise ConfigError(key, "expected a date or time", f"write {key} = 2026-01-01")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _secret_file(key: str, value: Any) -> str:
    _type(str, "a string")(key, value)
    path = Path(value).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(
            key, f"cannot read {path}: {exc.strerror}", "point it at an existing file"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            key,
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o})",
            f"chmod 600 {path}",
        )
    return str(path)


def _account_name(key: str, value: Any) -> str:
    _type(str, "a string")(key, value)
    if not value.strip():
        raise ConfigError(key, "must not be empty", "give the account a name")
    return value


SECTIONS: dict[str, tuple[type, dict[str, Check]]] = {
    "database": (
        DatabaseConfig,
        {
            "url": _database_url,
            "auto_migrate": _type(bool, "true or false"),
            "sqlite_synchronous": _choice("NORMAL", "FULL"),
        },
    ),
    "writer": (
        WriterConfig,
        {
            "batch_max_frames": _positive(int, "a whole number"),
            "batch_max_ms": _between((int, float), "a number of milliseconds", 0.1, 10_000),
            "queue_size": _positive(int, "a whole number"),
            "unavailable_timeout_s": _between((int, float), "a number of seconds", 0.1, 86_400),
        },
    ),
    "logging": (
        LoggingConfig,
        {
            "format": _choice("text", "json"),
            "level": _choice("DEBUG", "INFO", "WARNING", "ERROR"),
            "summary_interval_s": _between((int, float), "a number of seconds", 1, 86_400),
        },
    ),
    "metrics": (
        MetricsConfig,
        {"listen": lambda key, value: _listen(key, value), "token": _token},
    ),
    "status": (
        StatusConfig,
        {
            "max_frame_age_s": _between((int, float), "a number of seconds", 0.1),
            "max_projector_lag": _positive(int, "a whole number of events"),
        },
    ),
    "audit": (AuditConfig, {"verify_every_s": _verify_every}),
}

ACCOUNT_KEYS: dict[str, Check] = {
    "name": _account_name,
    "url": _ws_url,
    "api_key_env": _env_name,
    "api_secret_env": _env_name,
    "api_secret_file": _secret_file,
    "filter": _str_list,
    "dms": _type(bool, "true or false"),
    "backoff_cap_s": _between((int, float), "a number of seconds", 0.1, 86_400),
    "heartbeat_period_s": _between((int, float), "a number of seconds", 1, 3_600),
    "rest_url": _rest_url,
    "rest_timeout_s": _between((int, float), "a number of seconds", 1, 600),
    "max_frame_bytes": _between(int, "a whole number of bytes", 1 << 20, 1 << 30),
    "backfill": _type(bool, "true or false"),
    "allow_write_key": _type(bool, "true or false"),
    "ledger_every_s": _ledger_every,
    "history_from": _history_from,
}


def _unknown(key: str, allowed: list[str]) -> ConfigError:
    return ConfigError(key, "unknown key", f"remove it or use one of: {', '.join(sorted(allowed))}")


def _env_value(raw: str) -> Any:
    """Parse an environment override as a TOML value, falling back to a plain string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


EXCHANGE_WS_URL = "wss://api.bitfinex.com/ws/2"


def parse(
    raw: Mapping[str, Any], environ: Mapping[str, str], source: str, folder: Path | None = None
) -> Config:
    """Validate a parsed TOML document plus environment overrides into a :class:`Config`.
    ``folder``: the configuration file's, against which a relative SQLite path written in
    the file is resolved."""
    for top in raw:
        if top not in SECTIONS and top != "accounts":
            raise _unknown(top, [*SECTIONS, "accounts"])
    origins: dict[str, str] = {}
    built = {
        section: _section(raw, environ, source, folder, section, origins) for section in SECTIONS
    }
    _check_metrics(built["metrics"])
    return Config(
        accounts=_accounts(raw),
        source=source,
        origins=origins,
        warnings=tuple(_unknown_environment(environ)),
        **built,
    )


def _section(
    raw: Mapping[str, Any],
    environ: Mapping[str, str],
    source: str,
    folder: Path | None,
    section: str,
    origins: dict[str, str],
) -> Any:
    """One table of the file with its environment overrides, checked (``origins`` learns
    where each value came from)."""
    cls, checks = SECTIONS[section]
    table = raw.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(section, "expected a table", f"write it as [{section}]")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in checks:
            raise _unknown(f"{section}.{key}", list(checks))
        values[key] = value
        origins[f"{section}.{key}"] = f"file {source}"
    for key in checks:
        env_key = f"{ENV_PREFIX}{section}_{key}".upper()
        if env_key in environ:
            values[key] = _env_value(environ[env_key])
            origins[f"{section}.{key}"] = f"environment {env_key}"
    checked = {k: checks[k](f"{section}.{k}", v) for k, v in values.items()}
    from_file = origins.get(f"{section}.url", "").startswith("file ")
    if section == "database" and folder is not None and "url" in checked and from_file:
        checked["url"] = resolve_sqlite_path(checked["url"], folder)
    return cls(**checked)


def _check_metrics(metrics: MetricsConfig) -> None:
    if metrics.listen and not _is_loopback(listen_host(metrics.listen)) and not metrics.token:
        raise ConfigError(
            "metrics.token",
            f"metrics.listen {metrics.listen!r} is not a loopback address and no token is set",
            "set [metrics] token (requests then need Authorization: Bearer TOKEN), or listen "
            'on "127.0.0.1:PORT"',
        )


def _accounts(raw: Mapping[str, Any]) -> tuple[AccountConfig, ...]:
    """The ``[[accounts]]`` tables, each checked, names unique."""
    accounts_raw = raw.get("accounts", [])
    if not isinstance(accounts_raw, list):
        raise ConfigError("accounts", "expected an array of tables", "write [[accounts]] entries")
    accounts: list[AccountConfig] = []
    for i, table in enumerate(accounts_raw):
        where = f"accounts[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(where, "expected a table", "write it as [[accounts]]")
        if "name" not in table:
            raise ConfigError(f"{where}.name", "missing", 'add name = "main" (any unique name)')
        values = {}
        for key, value in table.items():
            if key not in ACCOUNT_KEYS:
                raise _unknown(f"{where}.{key}", list(ACCOUNT_KEYS))
            values[key] = ACCOUNT_KEYS[key](f"{where}.{key}", value)
        if (
            values.get("url", EXCHANGE_WS_URL) != EXCHANGE_WS_URL
            and values.get("backfill", True)
            and "rest_url" not in values
        ):
            raise ConfigError(
                f"{where}.rest_url",
                f"url points at {values['url']!r}, not the exchange, but rest_url is not set: "
                "signed REST requests would go to the exchange's host",
                "set rest_url to the REST API beside that WebSocket (for `bfx-recorder "
                'simulate --rest-port P`: "http://127.0.0.1:P/v2"), or backfill = false',
            )
        if any(a.name == values["name"] for a in accounts):
            raise ConfigError(
                f"{where}.name", f"duplicate account name {values['name']!r}", "make names unique"
            )
        accounts.append(AccountConfig(**values))
    return tuple(accounts)


# Variables with the prefix that are not overrides: the config file's, and the test suite's.
# (the test suite's own switches: not settings, and no warning)
OTHER_PREFIXED = frozenset(
    {
        CONFIG_ENV,
        "BFX_RECORDER_TEST_PG_URL",
        "BFX_RECORDER_REQUIRE_PG",
        "BFX_RECORDER_REQUIRE_CHROMIUM",
        "BFX_RECORDER_REQUIRE_PROMTOOL",
        "BFX_RECORDER_SCREENSHOTS",
    }
)


def _unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """A ``BFX_RECORDER_*`` variable that overrides nothing is probably misspelt: say so,
    naming the closest known one (it would otherwise be silently ignored)."""
    known = [f"{ENV_PREFIX}{s}_{k}".upper() for s, (_, checks) in SECTIONS.items() for k in checks]
    out = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known and name not in OTHER_PREFIXED:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            out.append(f"environment variable {name} is not a setting and is ignored{hint}")
    return out


def resolve_path(
    explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> Path | None:
    """``--config FILE``, else ``$BFX_RECORDER_CONFIG``, else ``config/recorder.toml``."""
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    if DEFAULT_CONFIG_PATH.is_file():
        return DEFAULT_CONFIG_PATH
    return None


def load(
    explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    env = os.environ if environ is None else environ
    path = resolve_path(explicit, env)
    if path is None:
        return parse({}, env, "built-in defaults")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            "--config", f"cannot read {path}: {exc.strerror}", "give an existing TOML file"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"TOML syntax error: {exc}", "correct the syntax") from None
    return parse(raw, env, str(path), path.resolve().parent)


def describe(config: Config, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The effective configuration as plain data, with credentials only as set/unset."""
    from dataclasses import asdict

    out: dict[str, Any] = {"source": config.source}
    for section in SECTIONS:
        out[section] = asdict(getattr(config, section))
    out["database"]["url"] = redact_url(config.database.url)
    out["metrics"]["token"] = "set" if config.metrics.token else "unset"
    # Where each setting came from: the file, the environment, or the built-in default.
    out["sources"] = {
        f"{section}.{key}": config.origins.get(f"{section}.{key}", "built-in default")
        for section, (_, checks) in SECTIONS.items()
        for key in checks
    }
    accounts = []
    for acc in config.accounts:
        item = asdict(acc)
        item["filter"] = list(acc.filter)
        key_set, secret_set = acc.has_credentials(environ)
        item["api_key"] = "set" if key_set else "unset"
        item["api_secret"] = "set" if secret_set else "unset"
        accounts.append(item)
    out["accounts"] = accounts
    return out


def redact_url(url: str) -> str:
    """Hide a password embedded in a database URL."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
