"""Arbitrary input never raises where the promise is "kept and flagged, never a crash":
classification (tests/test_protocol.py fuzzes text, JSON and bytes), every fold on any payload
of any of its kinds, and the configuration loader (only ConfigError, naming a key).

Example counts (hypothesis ``max_examples``): folds 400, fold frames 200, configuration 400,
configuration from TOML text 300; REST answers
400; classify: 3 x 100 in tests/test_protocol.py."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from recorder import config as config_mod
from recorder.config import ConfigError
from recorder.projections.base import DISCONNECTED, Event, Output
from recorder.projections.guard import check_named
from recorder.projections.registry import FOLDS, PROJECTION_NAMES
from recorder.projections.values import parse_frame
from recorder.protocol.rest import ENDPOINTS, PagingStuck, WindowPager, read_answer
from tests.helpers import synthetic_log

KINDS = sorted({k for name in PROJECTION_NAMES for k in FOLDS[name]().kinds} - {DISCONNECTED})

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=34), st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=60,
)


def _productive() -> list[tuple[str, str, str]]:
    """(projection, kind, frame) where a real frame (the simulator's) gives the fold rows."""
    found = []
    for kind, frame in synthetic_log(seed=11, steps=150, gap_every=0, snap_every=50):
        for name in PROJECTION_NAMES:
            fold = FOLDS[name]()
            if kind in fold.kinds:
                out = Output()
                fold.apply(Event(1, kind, parse_frame(frame)), out)
                if out.upserts or out.inserts_if_absent:
                    found.append((name, kind, frame))
    return found


PRODUCTIVE = _productive()


@settings(max_examples=400, deadline=None)
@given(real=st.sampled_from(PRODUCTIVE), data=st.data())
def test_every_fold_takes_any_payload_of_its_kinds(
    real: tuple[str, str, str], data: st.DataObject
) -> None:
    """A real frame, then any payloads of the fold's kinds: nothing raises, the real frame's
    rows are there (a fold that did nothing would fail), and every row a table would get
    can be written (the guard kept the others out)."""
    name, kind, frame = real
    fold = FOLDS[name]()
    out = Output()
    fold.apply(Event(1, kind, parse_frame(frame)), out)
    for n in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(sorted(fold.kinds)))
        payload = data.draw(json_values)
        frame = data.draw(
            st.sampled_from(
                [[0, kind, payload], payload, [0, kind], [0, kind, payload, 1, 2], None]
            )
        )
        fold.apply(Event(n + 2, kind, frame), out)  # must not raise
    assert out.upserts or out.inserts_if_absent
    for table, rows in [*out.upserts.items(), *out.inserts_if_absent.items()]:
        check = check_named(table)
        for row in rows.values():
            assert row is None or check is None or check.problem(row) is None
    assert fold.snapshot().skipped >= 0


@settings(max_examples=200, deadline=None)
@given(real=st.sampled_from(PRODUCTIVE), kind=st.sampled_from(KINDS), payload=json_values)
def test_folds_take_frames_as_parsed_from_text(
    real: tuple[str, str, str], kind: str, payload: Any
) -> None:
    """The path a live frame takes: text -> parse_frame (Decimal numbers) -> every fold.
    After any frame, a real one still folds into rows."""
    text = json.dumps([0, kind, payload], default=str)
    for name in PROJECTION_NAMES:
        fold = FOLDS[name]()
        if kind in fold.kinds:
            fold.apply(Event(1, kind, parse_frame(text)), Output())
    name, real_kind, frame = real
    fold, out = FOLDS[name](), Output()
    if kind in fold.kinds:
        fold.apply(Event(1, kind, parse_frame(text)), out)
    fold.apply(Event(2, real_kind, parse_frame(frame)), out)
    assert out.upserts or out.inserts_if_absent


toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: float(d)),
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
section_keys = st.sampled_from(
    [
        "url",
        "auto_migrate",
        "batch_max_frames",
        "batch_max_ms",
        "queue_size",
        "format",
        "level",
        "max_frame_age_s",
        "name",
        "api_key_env",
        "api_secret_env",
        "filter",
        "dms",
        "heartbeat_period_s",
        "backoff_cap_s",
        "api_secret_file",
        "unknown",
    ]
)
documents = st.dictionaries(
    st.sampled_from(["database", "writer", "logging", "status", "accounts", "other"]),
    st.one_of(
        st.dictionaries(section_keys, toml_values, max_size=4),
        st.lists(st.dictionaries(section_keys, toml_values, max_size=5), max_size=3),
        toml_values,
    ),
    max_size=4,
)
environments = st.dictionaries(
    st.sampled_from(
        [
            "BFX_RECORDER_DATABASE_URL",
            "BFX_RECORDER_WRITER_BATCH_MAX_MS",
            "BFX_RECORDER_LOGGING_LEVEL",
            "BFX_RECORDER_STATUS_MAX_FRAME_AGE_S",
        ]
    ),
    st.text(max_size=20),
    max_size=2,
)


@settings(max_examples=400, deadline=None)
@given(raw=documents, environ=environments)
def test_config_loader_raises_only_config_errors(
    raw: dict[str, Any], environ: dict[str, str]
) -> None:
    try:
        config_mod.parse(raw, environ, "fuzz")
    except ConfigError as exc:
        assert exc.key and str(exc)  # names the key
    # anything else (TypeError, KeyError, ValueError, ...) fails the test


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_config_from_any_toml_text(text: str, tmp_path_factory: Any) -> None:
    """A file of any text: a Config or a ConfigError (syntax errors included), nothing else."""
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_text(text, encoding="utf-8")
    try:
        loaded = config_mod.load(path, {})
    except ConfigError as exc:
        assert exc.key and "fix:" in str(exc)  # names the key and the fix
    else:
        assert isinstance(loaded, config_mod.Config)


@settings(max_examples=400, deadline=None)
@given(
    status=st.sampled_from([200, 400, 429, 500, 502, 503]),
    body=st.one_of(
        st.binary(max_size=80),
        json_values.map(lambda v: json.dumps(v, default=str).encode()),
        st.lists(scalars, max_size=4).map(lambda v: json.dumps(["error", *v], default=str)),
    ),
)
def test_rest_answers_never_raise(status: int, body: bytes | str) -> None:
    """Any HTTP answer is classified (ok, error, rate-limited, unavailable), never raises;
    and a pager fed any page either continues, finishes, or says it is stuck."""
    answer = read_answer(status, body)
    assert answer.status in ("ok", "error", "rate-limited", "unavailable")
    if answer.status == "ok":
        pager = WindowPager(ENDPOINTS["ledgers-hist"], 0, 10**13)
        with contextlib.suppress(PagingStuck):
            pager.receive(answer.rows)


# Values a record array may carry, parsed from text as the folds get them (floats, big and
# small integers, Decimals from the long-number parse, booleans, strings, nested JSON).
_FIELD_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=False, allow_infinity=False, places=None)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_generated_converters_give_what_the_field_converters_give(data: st.DataObject) -> None:
    """Each layout's straight-line converter: the value every field's own converter gives
    (and the same row again for the same array, a copy the caller may change)."""
    from recorder.projections.values import _CONVERT, to_row
    from recorder.protocol import layouts as L

    layout = data.draw(st.sampled_from([v for v in vars(L).values() if isinstance(v, L.Layout)]))
    array = data.draw(st.lists(_FIELD_VALUES, max_size=layout.length + 2))
    # A few times warmed first: the caches the inline paths read must not change a value.
    for _ in range(2):
        row = to_row(layout, array)
        want = {
            f.name: None
            if f.index >= len(array) or array[f.index] is None
            else _CONVERT[f.kind](array[f.index])
            for f in layout.fields
        }
        assert list(row) == list(want)
        for name, value in want.items():
            got = row[name]
            assert repr(got) == repr(value), name  # exact: Decimal("1.0") is not Decimal("1")
        row["changed"] = True  # the next call's row is not this one
