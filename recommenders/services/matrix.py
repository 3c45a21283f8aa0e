"""The interaction matrix, built set-based from stored events: one SQL statement reads every
weighted event's (profile, item, type weight, time), keeping only visitors whose consent allows
personalization under their source's regime and items the catalogue holds, and streams it into
numpy (binary COPY on Postgres); explicit feedback comes the same way. numpy then decays each
weight by its age (exponential, the configured half-life), sums them per (profile, item) cell and
builds the CSR matrix with index maps.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone
from scipy import sparse

from privacy.models import ConsentState
from privacy.services.consent import consent_condition_sql, purposes
from recommenders.models import Feedback, Item, RecommenderConfig
from recommenders.services.catalogue import LIST_KEYS, MAX_EXTERNAL_ID
from tracking.models import Event, Profile, Source

PURPOSE = "personalization"
# Event-weight keys that name explicit feedback rather than an event type.
FEEDBACK_WEIGHTS = {"thumbs_down": Feedback.Kind.DOWN, "thumbs_up": Feedback.Kind.UP}


@dataclass
class Interactions:
    """Aggregated cells (one per profile x item) and the matrix they make."""

    rows: np.ndarray  # row index per cell
    cols: np.ndarray  # column index per cell
    weights: np.ndarray  # summed, decayed weight per cell (negative: net negative signal)
    timestamps: np.ndarray  # unix seconds of the cell's latest interaction
    profile_ids: np.ndarray  # row -> profile id
    item_ids: np.ndarray  # column -> item external id
    trained_through: datetime | None  # time of the latest event used
    event_types: dict[str, int]  # events used per type (drift baseline)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.profile_ids), len(self.item_ids)

    def matrix(self) -> sparse.csr_matrix:
        m = sparse.csr_matrix((self.weights.astype(np.float32), (self.rows, self.cols)), shape=self.shape)
        m.sum_duplicates()
        return m

    def timestamp_matrix(self) -> sparse.csr_matrix:
        m = sparse.csr_matrix((self.timestamps, (self.rows, self.cols)), shape=self.shape, dtype=np.float64)
        m.sum_duplicates()
        return m

    def stats(self) -> dict:
        total = sum(self.event_types.values())
        return {
            "users": self.shape[0],
            "items": self.shape[1],
            "nnz": len(self.weights),
            "negative": int((self.weights < 0).sum()),
            "events": total,
            "event_types": dict(sorted(self.event_types.items())),
            "trained_through": self.trained_through.isoformat() if self.trained_through else None,
        }


def _vendor() -> str:
    return "postgresql" if connection.vendor == "postgresql" else "sqlite"


def _epoch(column: str) -> str:
    if _vendor() == "postgresql":
        return f"CAST(EXTRACT(EPOCH FROM {column}) AS DOUBLE PRECISION)"
    return f"((julianday({column}) - 2440587.5) * 86400.0)"


def _event_item_rows(types: list[str]) -> tuple[str, int]:
    """SELECT source_id, profile_id, item, type, timestamp for every item an event names, read as
    the catalogue's stub receiver reads them (`catalogue.item_ids_in_properties`): `item_id` (else
    `product_id`), and each entry of `products[]` / `items[]` (an object with `item_id` /
    `product_id`, or a bare id). Returns the SQL and how many times it takes (types, start, end)."""
    table = Event._meta.db_table
    marks = ", ".join(["%s"] * len(types))
    if _vendor() == "postgresql":
        # A plain scan for the scalar id, plus one scan per list key restricted by the key-existence
        # operator: cheaper than a LATERAL subquery per event. No validity checks on the ids here:
        # the caller joins them to the catalogue, which only holds valid ids (and a filter on these
        # expressions would make the planner expect a few rows instead of millions).
        where = f"e.type IN ({marks}) AND e.timestamp >= %s AND e.timestamp <= %s"
        arrays = " || ".join(
            f"CASE WHEN jsonb_typeof(e.properties->'{key}') = 'array' THEN e.properties->'{key}' ELSE '[]'::jsonb END"
            for key in LIST_KEYS
        )
        keys = ", ".join(f"'{key}'" for key in LIST_KEYS)
        lists = f"""
                SELECT e.source_id, e.profile_id,
                       btrim(CASE WHEN jsonb_typeof(p) = 'object' THEN COALESCE(p->>'item_id', p->>'product_id')
                                  ELSE p #>> '{{}}' END),
                       e.type, e.timestamp
                FROM {table} e, jsonb_array_elements({arrays}) AS p
                WHERE {where} AND e.properties ?| ARRAY[{keys}]"""
        sql = f"""
            SELECT e.source_id, e.profile_id,
                   btrim(COALESCE(e.properties->>'item_id', e.properties->>'product_id')) AS item,
                   e.type, e.timestamp
            FROM {table} e
            WHERE {where}
            UNION ALL {lists}
        """
        return sql, 2
    scalar = "('text', 'integer', 'real')"
    where = f"e.type IN ({marks}) AND e.timestamp >= %s AND e.timestamp <= %s"
    lists = " UNION ALL ".join(
        f"""
            SELECT e.source_id, e.profile_id,
                   CASE WHEN p.type = 'object' THEN CAST(COALESCE(json_extract(p.value, '$.item_id'),
                                                                  json_extract(p.value, '$.product_id')) AS TEXT)
                        WHEN p.type IN {scalar} THEN CAST(p.value AS TEXT) END,
                   e.type, e.timestamp
            FROM {table} e, json_each(e.properties, '$.{key}') p
            WHERE {where} AND json_type(e.properties, '$.{key}') = 'array'"""
        for key in LIST_KEYS
    )
    sql = f"""
        SELECT source_id, profile_id, trim(item) AS item, type, timestamp FROM (
            SELECT e.source_id, e.profile_id,
                   CASE WHEN json_type(e.properties, '$.item_id') IN {scalar}
                            THEN CAST(json_extract(e.properties, '$.item_id') AS TEXT)
                        WHEN json_type(e.properties, '$.item_id') IS NULL
                             AND json_type(e.properties, '$.product_id') IN {scalar}
                            THEN CAST(json_extract(e.properties, '$.product_id') AS TEXT) END AS item,
                   e.type, e.timestamp
            FROM {table} e
            WHERE {where}
            UNION ALL {lists}
        ) WHERE item IS NOT NULL AND length(trim(item)) BETWEEN 1 AND {MAX_EXTERNAL_ID}
    """
    return sql, 1 + len(LIST_KEYS)


def _consent_sql(alias: str) -> tuple[str, list]:
    """Per source, its regime's rule on the cell's profile; cells of unknown sources never pass."""
    purpose = purposes().get(PURPOSE)
    clauses, params = [], []
    for source in Source.objects.only("id", "consent_regime", "consent_policy_version"):
        condition, condition_params = consent_condition_sql(
            source=source, purpose=purpose, profile=f"{alias}.profile_id"
        )
        clauses.append(f"({alias}.source_id = %s AND {condition})")
        params.extend([source.id, *condition_params])
    return ("(" + " OR ".join(clauses) + ")") if clauses else "FALSE", params


def relevant_types(config: RecommenderConfig) -> dict[str, float]:
    return {
        str(t): float(w)
        for t, w in (config.event_weights or {}).items()
        if t not in FEEDBACK_WEIGHTS and isinstance(w, int | float) and not isinstance(w, bool) and w != 0
    }


def history_start(now: datetime) -> datetime:
    return now - timedelta(days=settings.RECOMMENDERS_HISTORY_DAYS)


def input_fingerprint(*, config: RecommenderConfig, now: datetime) -> tuple[str, datetime | None]:
    """What a training would be built from, in a few cheap look-ups: the configuration, the latest
    event and feedback it would use, the number of profiles and the consent decisions. Equal
    fingerprints mean an identical model."""
    types = list(relevant_types(config))
    latest = (
        Event.objects.filter(type__in=types, timestamp__gte=history_start(now), timestamp__lte=now)
        .order_by("-timestamp")
        .values_list("timestamp", flat=True)
        .first()
        if types
        else None
    )
    feedback = Feedback.objects.order_by("-created_at").values_list("created_at", flat=True).first()
    count = Event.objects.filter(type__in=types, timestamp=latest).count() if latest else 0
    # Consent decisions and erasures change who may be learned from without any new event: their
    # traces join the inputs, so the next run retrains (and drops an erased visitor's row).
    consent = ConsentState.objects.aggregate(n=Count("id"), last=Max("updated_at"))
    payload = {
        "profiles": Profile.objects.count(),
        "consent": [consent["n"], consent["last"].isoformat() if consent["last"] else None],
        "algorithm": config.algorithm,
        "params": config.params,
        "weights": config.event_weights,
        "half_life": config.half_life_days,
        "latest": latest.isoformat() if latest else None,
        "at_latest": count,
        "feedback": feedback.isoformat() if feedback else None,
        "feedback_rows": Feedback.objects.count() if feedback else 0,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return digest, latest


def interactions_build(*, config: RecommenderConfig, now: datetime | None = None) -> Interactions:
    """Aggregate stored events (and explicit feedback) into weighted cells, consent-filtered."""
    now = now or timezone.now()
    weights = relevant_types(config)
    half_life = config.half_life_days
    # Decay exp(-rate * age_seconds): a half-life of h days is rate ln2 / (h * 86400).
    rate = math.log(2) / (half_life * 86400.0) if half_life else 0.0
    now_epoch = now.timestamp()
    start = history_start(now)
    parts: list[_Rows] = []
    if weights:
        types = list(weights)
        rows_sql, repeats = _event_item_rows(types)
        case = " ".join("WHEN %s THEN CAST(%s AS DOUBLE PRECISION)" for _ in types)
        consent, consent_params = _consent_sql("x")
        events = _rows_fetch(
            f"""
            SELECT x.profile_id, CAST(i.id AS BIGINT), (CASE x.type {case} ELSE 0 END), {_time("x.timestamp")}
            FROM ({rows_sql}) x
            JOIN {Item._meta.db_table} i ON i.external_id = x.item
            WHERE {consent}
            """,
            [
                *(v for pair in weights.items() for v in pair),
                *[*types, _db_time(start), _db_time(now)] * repeats,
                *consent_params,
            ],
        )
        # The same expression the weights always had: type weight * exp(-rate * age).
        events.weights *= np.exp(-rate * (now_epoch - events.times))
        parts.append(events)
    feedback_weights = {
        kind: float(config.event_weights[key])
        for key, kind in FEEDBACK_WEIGHTS.items()
        if isinstance((config.event_weights or {}).get(key), int | float) and config.event_weights[key]
    }
    if feedback_weights:
        # Explicit feedback counts under the consent of the profile's last source, undecayed: an
        # opinion the visitor stated stands until they change it.
        kinds = list(feedback_weights)
        case = " ".join("WHEN %s THEN CAST(%s AS DOUBLE PRECISION)" for _ in kinds)
        consent, consent_params = _consent_sql("fb")
        parts.append(
            _rows_fetch(
                f"""
                SELECT fb.profile_id, fb.item, fb.w, fb.ts FROM (
                    SELECT p.last_source_id AS source_id, f.profile_id, CAST(i.id AS BIGINT) AS item,
                           CASE f.kind {case} ELSE 0 END AS w, {_time("f.created_at")} AS ts
                    FROM {Feedback._meta.db_table} f
                    JOIN {Profile._meta.db_table} p ON p.id = f.profile_id
                    JOIN {Item._meta.db_table} i ON i.id = f.item_id
                    WHERE f.kind IN ({", ".join(["%s"] * len(kinds))})
                ) fb
                WHERE {consent}
                """,
                [v for pair in feedback_weights.items() for v in pair] + kinds + consent_params,
            )
        )
    cells = _cells(parts)
    if cells is None:
        return Interactions(
            rows=np.zeros(0, np.int64),
            cols=np.zeros(0, np.int64),
            weights=np.zeros(0, np.float32),
            timestamps=np.zeros(0, np.float64),
            profile_ids=np.zeros(0, np.int64),
            item_ids=np.zeros(0, dtype=str),
            trained_through=None,
            event_types={},
        )
    profiles, item_pks, cell_weights, timestamps = cells
    profile_ids, rows = _factorize(profiles)
    pk_of_col, cols = _factorize(item_pks)
    external = _external_ids(pk_of_col)
    event_types = event_type_counts(types=list(weights), start=start, end=now) if weights else {}
    latest = float(timestamps.max())
    return Interactions(
        rows=rows,
        cols=cols,
        weights=cell_weights.astype(np.float32),
        timestamps=timestamps,
        profile_ids=profile_ids,
        item_ids=np.asarray([external[pk] for pk in pk_of_col.tolist()], dtype=str),
        trained_through=datetime.fromtimestamp(latest, tz=UTC),
        event_types=event_types,
    )


def _external_ids(pks: np.ndarray) -> dict[int, str]:
    if _vendor() != "postgresql":
        return dict(Item.objects.filter(pk__in=pks.tolist()).values_list("pk", "external_id"))
    # One array parameter: an IN list of tens of thousands of ids costs more in the ORM than the query.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, external_id FROM {Item._meta.db_table} WHERE id = ANY(%s::bigint[])", [pks.tolist()]
        )
        return dict(cursor.fetchall())


@dataclass
class _Rows:
    """Weighted interactions as read, one per event (or feedback) and item, not yet aggregated."""

    profiles: np.ndarray  # int64 profile id
    items: np.ndarray  # int64 item pk
    weights: np.ndarray  # float64
    times: np.ndarray  # float64 unix seconds


def _cells(parts: list[_Rows]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(profile, item pk) cells of the rows: summed weights, latest time; cells summing to zero are
    dropped (what `GROUP BY profile, item HAVING SUM(w) <> 0` gives, sorted by profile then item).
    None when no cell is left.

    Done here rather than in SQL: a Postgres aggregation of millions of groups (partial per worker,
    then again in the leader) costs several times this sort."""
    if not any(len(part.profiles) for part in parts):
        return None
    profiles = np.concatenate([part.profiles for part in parts])
    items = np.concatenate([part.items for part in parts])
    weights = np.concatenate([part.weights for part in parts])
    times = np.concatenate([part.times for part in parts])
    profile_ids, rows = _factorize(profiles)
    item_pks, cols = _factorize(items)
    code = rows * len(item_pks) + cols
    order = np.argsort(code, kind="stable")
    code = code[order]
    starts = np.flatnonzero(np.concatenate(([True], code[1:] != code[:-1])))
    sums = np.add.reduceat(weights[order], starts)
    latest = np.maximum.reduceat(times[order], starts)
    keep = sums != 0
    if not keep.any():
        return None
    code = code[starts[keep]]
    return profile_ids[code // len(item_pks)], item_pks[code % len(item_pks)], sums[keep], latest[keep]


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, index of each value among them): `np.unique(.., return_inverse=True)`,
    through a lookup table instead of a sort when the ids are dense (database ids usually are)."""
    values = np.asarray(values, dtype=np.int64)
    if not len(values):
        return values.copy(), np.zeros(0, np.int64)
    low = int(values.min())
    span = int(values.max()) - low + 1
    if span > 4 * len(values) + 1024:
        distinct, inverse = np.unique(values, return_inverse=True)
        return distinct, inverse.astype(np.int64, copy=False)
    offsets = values - low
    present = np.zeros(span, dtype=bool)
    present[offsets] = True
    position = np.cumsum(present, dtype=np.int64) - 1
    return np.flatnonzero(present).astype(np.int64) + low, position[offsets]


def _time(column: str) -> str:
    """A timestamp column as read for the cells: raw on Postgres (binary COPY gives microseconds,
    converted exactly in `_binary_rows`), unix seconds elsewhere."""
    return column if _vendor() == "postgresql" else _epoch(column)


# One row of `COPY .. TO STDOUT (FORMAT binary)` of (bigint, bigint, float8, timestamptz): a field
# count, then each field's byte length and its big-endian value (timestamptz: microseconds since
# 2000-01-01 UTC).
_BINARY_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("l1", ">i4"),
        ("profile", ">i8"),
        ("l2", ">i4"),
        ("item", ">i8"),
        ("l3", ">i4"),
        ("weight", ">f8"),
        ("l4", ">i4"),
        ("time", ">i8"),
    ]
)
_BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_POSTGRES_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 in unix microseconds


def _rows_fetch(sql: str, params: list) -> _Rows:
    """Run a rows query (profile, item pk, weight, time); on Postgres stream it with binary COPY
    straight into numpy (millions of rows in a fraction of the time Python tuples take), elsewhere
    fetch rows."""
    with transaction.atomic(), connection.cursor() as cursor:
        raw = getattr(cursor, "cursor", cursor)
        if _vendor() == "postgresql" and hasattr(raw, "copy_expert") and hasattr(raw, "mogrify"):
            # One big scan of cheap expressions: JIT compilation costs seconds and saves nothing
            # here. Parallel workers pay for themselves even though every row crosses to the leader.
            cursor.execute("SET LOCAL jit = off")
            cursor.execute("SET LOCAL work_mem = '512MB'")
            cursor.execute("SET LOCAL parallel_setup_cost = 100")
            cursor.execute("SET LOCAL parallel_tuple_cost = 0.001")
            query = raw.mogrify(sql, params).decode()
            buffer = io.BytesIO()
            raw.copy_expert(f"COPY ({query}) TO STDOUT (FORMAT binary)", buffer)
            return _binary_rows(buffer.getbuffer())
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    n = len(fetched)
    if not n:
        empty = np.zeros(0)
        return _Rows(empty.astype(np.int64), empty.astype(np.int64), empty, empty)
    profile_col, item_col, weight_col, time_col = zip(*fetched, strict=True)
    return _Rows(
        np.fromiter(profile_col, dtype=np.int64, count=n),
        np.fromiter(item_col, dtype=np.int64, count=n),
        np.fromiter(weight_col, dtype=np.float64, count=n),
        np.fromiter(time_col, dtype=np.float64, count=n),
    )


def _binary_rows(data) -> _Rows:
    data = memoryview(data)
    if bytes(data[: len(_BINARY_SIGNATURE)]) != _BINARY_SIGNATURE:
        raise ValueError("unexpected COPY output (not PostgreSQL binary format)")
    extension = int.from_bytes(data[15:19], "big")
    body = data[19 + extension : -2]  # the trailer is a field count of -1
    rows = np.frombuffer(body, dtype=_BINARY_ROW)
    if len(rows) and not (
        (rows["fields"] == 4).all()
        and (rows["l1"] == 8).all()
        and (rows["l2"] == 8).all()
        and (rows["l3"] == 8).all()
        and (rows["l4"] == 8).all()
    ):
        raise ValueError("unexpected COPY row layout (a NULL or a wider type)")
    # Microseconds as exact integers, divided once: the same double EXTRACT(EPOCH ..) would give.
    micros = rows["time"].astype(np.int64) + _POSTGRES_EPOCH_US
    return _Rows(
        rows["profile"].astype(np.int64),
        rows["item"].astype(np.int64),
        rows["weight"].astype(np.float64),
        micros.astype(np.float64) / 1e6,
    )


def _db_time(value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


def event_type_counts(*, types: list[str], start: datetime, end: datetime) -> dict[str, int]:
    """Events per weighted type in a window: the distribution drift is measured on."""
    rows = (
        Event.objects.filter(type__in=types, timestamp__gte=start, timestamp__lte=end)
        .values_list("type")
        .order_by()
        .annotate(n=Count("id"))
    )
    return {t: int(n) for t, n in rows}
