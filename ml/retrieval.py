"""Retrieval: the two-tower's class vectors in a faiss index per platform, searched per user.

* `build_index(tower, pairs, day, ...)`: the day's scoring candidates of each platform through the
  class tower (`ml.two_tower.TowerEncoder`), into a faiss inner-product index: exact
  (`IndexFlatIP`) up to `exact_max` classes, HNSW above (graph search; the vectors are unit
  length, so inner product = cosine).
* `save_index` / `load_index`: one folder per feature date, a `<platform>.faiss` file each and
  `manifest.json` written last (its presence is the commit): the feature date, the retrieval
  model that made the vectors and the ranker it was built for. A missing or unreadable file
  raises `IndexLoadError` naming it.
* `Retriever`: per (user, platform, row context) the top `n` classes by the user tower's
  vector, plus what every user gets: the platform's popular classes and the classes released
  in the last `new_days` (a new user, a new class: retrieval never leaves them out). With
  `new_max`, a list takes only the tower's best `new_max` of those new classes: a catalogue
  that releases 80 classes a day would otherwise add up to 160 pairs to every list.
  With `similar` (`use_similar`), a list also takes the ranker's co-occurrence neighbours of
  the user's recent items (item to item: what was taken together with what they just took).
  With `affinity` (`use_affinity`), a list also takes, for each of the user's `affinity`
  strongest affinities (an instructor; a mapped item attribute's value), the tower's best
  `affinity_classes` classes of that value: the ranker's pair features weigh every instructor a
  user takes, the user tower sees only the top and the last.
* `user_embeddings`: the user tower's vectors of a day, the rows of the `user_embeddings` table.

No Dagster here. Over 400 lines: the index, its files and every candidate source of a list
belong to one contract (the positions `candidates` returns).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from typing import Iterator, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from ml.cooccurrence import Neighbours
from ml.features import AFFINITY_COLUMN
from ml.pairs import PairEncoder
from ml.rows import (RETRIEVE_AFFINITY_CLASSES, RETRIEVE_NEW_DAYS, RETRIEVE_POPULAR, DayInputs,
                     InferenceError, InferenceSettings)
from ml.two_tower import TowerEncoder

MANIFEST = "manifest.json"


class IndexLoadError(InferenceError):
    """The candidate index is missing, unreadable or from another model than the one in use."""


def _faiss():
    import faiss  # faiss-cpu; imported on use (it starts OpenMP threads)

    return faiss


@dataclass
class PlatformIndex:
    class_ids: np.ndarray  # object [C]: the index's row -> class_id
    index: object  # a faiss index over [C, d] unit vectors
    kind: str  # "flat" or "hnsw"


@dataclass
class CandidateIndex:
    feature_date: dt.date
    retrieval_version: int
    ranker_version: int | None
    dim: int
    platforms: dict[str, PlatformIndex] = field(default_factory=dict)

    def search(self, platform: str, queries: np.ndarray, k: int) -> np.ndarray:
        """[n, k'] rows of the platform's index (k' = min(k, C)), best first; -1 where the
        index found fewer."""
        pi = self.platforms[platform]
        k = min(k, len(pi.class_ids))
        _, rows = pi.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return rows

    def check_versions(self, retrieval_version: int, ranker_version: int | None) -> None:
        """Refuse an index made by another retrieval model, or for another ranker."""
        if self.retrieval_version != retrieval_version or (
                ranker_version is not None and self.ranker_version is not None
                and self.ranker_version != ranker_version):
            raise IndexLoadError(
                f"the candidate index of {self.feature_date} was built by retrieval model version "
                f"{self.retrieval_version} for ranker version {self.ranker_version}; this run uses "
                f"retrieval version {retrieval_version} and ranker version {ranker_version}: "
                "materialize candidate_index again for the current models")


def _make_index(vectors: np.ndarray, exact_max: int, hnsw_m: int, ef_search: int):
    faiss = _faiss()
    d = vectors.shape[1]
    if len(vectors) <= exact_max:
        index, kind = faiss.IndexFlatIP(d), "flat"
    else:
        index, kind = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT), "hnsw"
        index.hnsw.efConstruction = max(2 * hnsw_m, 64)
        index.hnsw.efSearch = ef_search
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index, kind


def class_vectors(tower: TowerEncoder, pairs: PairEncoder, frame: pl.DataFrame,
                  serve_date: dt.date) -> np.ndarray:
    """[C, d] the class tower's vectors of candidate rows (class_id + catalogue + popularity)."""
    side = pairs.encode_classes(frame.with_columns(pl.lit(serve_date).alias("event_date")))
    return tower.classes(side.dense, side.sparse)


def build_index(tower: TowerEncoder, pairs: PairEncoder, day: DayInputs, *,
                retrieval_version: int, ranker_version: int | None = None,
                exact_max: int = 50_000, hnsw_m: int = 32, ef_search: int = 256) -> CandidateIndex:
    """The day's candidate index (one per platform of `day.candidates`)."""
    out = CandidateIndex(day.feature_date, int(retrieval_version),
                         None if ranker_version is None else int(ranker_version), tower.dim)
    for p, frame in day.candidates.items():
        vec = class_vectors(tower, pairs, frame, day.serve_date)
        index, kind = _make_index(vec, exact_max, hnsw_m, ef_search)
        out.platforms[p] = PlatformIndex(np.array(frame["class_id"].to_list(), dtype=object), index, kind)
    return out


def index_uri(base: str, feature_date: dt.date) -> str:
    from lakehouse.io.storage import join_uri

    return join_uri(base, str(feature_date))


def save_index(index: CandidateIndex, uri: str) -> list[str]:
    """Write the index's files under `uri` (a folder or s3:// prefix), the manifest last."""
    from lakehouse.io.storage import filesystem_for, join_uri

    faiss = _faiss()
    fs, root = filesystem_for(uri)
    fs.create_dir(root, recursive=True)
    files = []
    manifest = {"feature_date": str(index.feature_date), "retrieval_version": index.retrieval_version,
                "ranker_version": index.ranker_version, "dim": index.dim, "platforms": {}}
    for p, pi in index.platforms.items():
        name = f"{p}.faiss"
        with fs.open_output_stream(join_uri(root, name)) as f:
            f.write(faiss.serialize_index(pi.index).tobytes())
        manifest["platforms"][p] = {"file": name, "kind": pi.kind, "classes": pi.class_ids.tolist()}
        files.append(join_uri(uri, name))
    with fs.open_output_stream(join_uri(root, MANIFEST)) as f:
        f.write(json.dumps(manifest).encode())
    return [*files, join_uri(uri, MANIFEST)]


def load_index(uri: str) -> CandidateIndex:
    """The index saved under `uri`; IndexLoadError naming the file that is missing or corrupt."""
    from lakehouse.io.storage import filesystem_for, join_uri

    faiss = _faiss()
    fs, root = filesystem_for(uri)

    def read(name: str) -> bytes:
        try:
            with fs.open_input_stream(join_uri(root, name)) as f:
                return f.read()
        except (FileNotFoundError, OSError) as exc:
            raise IndexLoadError(f"candidate index file {join_uri(uri, name)} cannot be read "
                                 f"({exc}): materialize candidate_index for that day") from exc

    try:
        m = json.loads(read(MANIFEST))
        out = CandidateIndex(dt.date.fromisoformat(m["feature_date"]), int(m["retrieval_version"]),
                             m.get("ranker_version"), int(m["dim"]))
        entries = m["platforms"].items()
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexLoadError(f"candidate index file {join_uri(uri, MANIFEST)} is corrupt: {exc}") from exc
    for p, e in entries:
        raw = read(e["file"])
        try:
            index = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
        except Exception as exc:  # faiss raises RuntimeError with its C++ message
            raise IndexLoadError(f"candidate index file {join_uri(uri, e['file'])} is corrupt: "
                                 f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
        if index.ntotal != len(e["classes"]) or index.d != out.dim:
            raise IndexLoadError(f"candidate index file {join_uri(uri, e['file'])} holds "
                                 f"{index.ntotal} vectors of {index.d} dims; the manifest says "
                                 f"{len(e['classes'])} of {out.dim}")
        out.platforms[p] = PlatformIndex(np.array(e["classes"], dtype=object), index, e["kind"])
    return out


class Retriever:
    """Per platform: the index's rows mapped to the scorer's candidate positions, and the
    positions every user gets (popular, new)."""

    def __init__(self, tower: TowerEncoder, pairs: PairEncoder, index: CandidateIndex,
                 day: DayInputs, *, n: int, popular: int = RETRIEVE_POPULAR, new_days: int = RETRIEVE_NEW_DAYS,
                 new_max: int | None = None, similar: int = 0, neighbours: Neighbours | None = None,
                 recent_items: Sequence[str] = (), affinity: int = 0,
                 affinity_classes: int = RETRIEVE_AFFINITY_CLASSES) -> None:
        if n < 1:
            raise ValueError(f"retrieve must be >= 1 (classes per list), got {n}")
        if new_max is not None and new_max < 0:
            raise ValueError(f"retrieve_new_max must be >= 0 new classes per list, or None (all), got {new_max}")
        self.tower, self.pairs, self.index, self.n = tower, pairs, index, int(n)
        self.new_max = new_max
        self.positions: dict[str, dict[str, int]] = {}
        self.rows_to_pos: dict[str, np.ndarray] = {}
        self.always: dict[str, np.ndarray] = {}
        # per platform, when new_max binds: the new classes' positions and their [k, d] vectors
        self.new: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for p, frame in day.candidates.items():
            if p not in index.platforms:
                raise IndexLoadError(f"the candidate index of {index.feature_date} has no platform "
                                     f"{p!r} (has {sorted(index.platforms)})")
            pos = self.positions[p] = {c: j for j, c in enumerate(frame["class_id"].to_list())}
            self.rows_to_pos[p] = np.array([pos.get(c, -1) for c in index.platforms[p].class_ids],
                                           dtype=np.int64)
            top = day.popular.filter(pl.col("platform") == p).sort("rank").head(popular)["class_id"]
            always = {pos[c] for c in top.to_list() if c in pos}
            if "release_date" in frame.columns:
                since = day.feature_date - dt.timedelta(days=new_days - 1)
                new = frame.with_row_index("_j").filter(pl.col("release_date").cast(pl.Date) >= since)
                row_of = {int(j): r for r, j in enumerate(self.rows_to_pos[p]) if j >= 0}
                # a new class the index lacks has no vector to be ranked by: every list keeps it
                ranked = [j for j in sorted(set(new["_j"].to_list()) - always) if j in row_of]
                always |= set(new["_j"].to_list()) - set(ranked)
                if new_max is None or len(ranked) <= new_max:
                    always |= set(ranked)
                else:
                    pi = index.platforms[p]
                    vec = np.vstack([pi.index.reconstruct(row_of[j]) for j in ranked])
                    self.new[p] = (np.array(ranked, dtype=np.int64), vec)
            self.always[p] = np.array(sorted(always), dtype=np.int64)
        self.frames = day.candidates
        self.use_similar(neighbours, recent_items, similar)
        self.use_affinity(affinity, affinity_classes)

    def use_affinity(self, k: int, classes: int) -> None:
        """Also retrieve, for each of a user's `k` strongest affinity rows (`AFFINITY_COLUMN`,
        strongest first), the tower's best `classes` candidates whose column has that value
        (k = 0: none)."""
        if k < 0 or (k and classes < 1):
            raise ValueError(f"retrieve_affinity must be >= 0 affinities per list and "
                             f"retrieve_affinity_classes >= 1, got {k} and {classes}")
        self.affinity, self.affinity_classes = int(k), int(classes)
        # per (platform, class column): value -> (candidate positions, their [m, d] vectors)
        self._groups: dict[tuple[str, str], dict[object, tuple[np.ndarray, np.ndarray]]] = {}

    def _value_groups(self, platform: str, column: str) -> dict[object, tuple[np.ndarray, np.ndarray]]:
        key = (platform, column)
        if key not in self._groups:
            frame, pi = self.frames[platform], self.index.platforms[platform]
            groups: dict[object, tuple[np.ndarray, np.ndarray]] = {}
            if column in frame.columns:
                rows = np.flatnonzero(self.rows_to_pos[platform] >= 0)  # classes with a vector
                pos = self.rows_to_pos[platform][rows]
                vec = pi.index.reconstruct_n(0, pi.index.ntotal)[rows]
                values = frame[column].gather(pos)
                for value, idx in (pl.DataFrame({"v": values}).with_row_index("_k")
                                   .group_by("v").agg("_k").iter_rows()):
                    if value is not None:
                        idx = np.asarray(idx, dtype=np.int64)
                        groups[value] = (pos[idx], vec[idx])
            self._groups[key] = groups
        return self._groups[key]

    def _affinity_positions(self, context: pl.DataFrame, platform: str, q: np.ndarray,
                            filler: np.ndarray) -> np.ndarray | None:
        """[n_users, k * classes] positions: per affinity slot, the tower's best classes of the
        value (`filler`, a held position, where a user has fewer affinities or a value fewer
        classes)."""
        if not self.affinity or AFFINITY_COLUMN not in context.columns:
            return None
        k, m = self.affinity, self.affinity_classes
        out = np.repeat(filler[:, None], k * m, axis=1)
        rows = (context.select(pl.col(AFFINITY_COLUMN).list.head(k)).with_row_index("_i")
                .explode(AFFINITY_COLUMN).drop_nulls(AFFINITY_COLUMN)
                .with_columns(pl.int_range(pl.len()).over("_i").alias("_slot"))
                .select("_i", "_slot", pl.col(AFFINITY_COLUMN).struct.field("column"),
                        pl.col(AFFINITY_COLUMN).struct.field("key")))
        for (column, value), part in rows.group_by("column", "key"):
            pos, vec = self._value_groups(platform, column).get(value, (None, None))
            if pos is None:
                continue
            users, slots = part["_i"].to_numpy(), part["_slot"].to_numpy()
            take = min(m, len(pos))
            sims = q[users] @ vec.T
            best = (np.argpartition(-sims, take - 1, axis=1)[:, :take] if take < len(pos)
                    else np.broadcast_to(np.arange(take), (len(users), take)))
            cols = slots[:, None] * m + np.arange(take)
            out[users[:, None], cols] = pos[best]
        return out

    def use_similar(self, neighbours: Neighbours | None, recent_items: Sequence[str], k: int) -> None:
        """Also retrieve, for each of the user's `recent_items` columns, that item's `k` most
        similar candidates by the ranker's co-occurrence neighbours (`ml.cooccurrence`); k = 0,
        or a ranker without neighbours: none."""
        if k < 0:
            raise ValueError(f"retrieve_similar must be >= 0 classes per recent item, got {k}")
        self.neighbours = neighbours if k and neighbours is not None and neighbours.rows else None
        self.recent_items = list(recent_items) if self.neighbours is not None else []
        # per platform, [items + 1, k] candidate positions of each item's most similar ones
        self.similar = {p: _similar_positions(self.neighbours, pos, k) for p, pos in self.positions.items()
                        } if self.neighbours is not None else {}

    def candidates(self, context: pl.DataFrame, platform: str) -> np.ndarray:
        """[n_users, m] candidate positions (into the day's candidates of the platform) for
        users under a row's context: the tower's top n, then the shared ones, then (when
        `new_max` binds) each user's best `new_max` new classes by the tower, then the similar
        and the affinity ones (a position may repeat; -1 never appears)."""
        side = self.pairs.encode_users(context, pairs=False)
        q = self.tower.users(side.dense, side.sparse)
        rows = self.index.search(platform, q, self.n)
        pos = np.where(rows >= 0, self.rows_to_pos[platform][np.maximum(rows, 0)], -1)
        pos = np.where(pos >= 0, pos, pos.max(axis=1, keepdims=True))  # fill gaps with a held one
        parts = [pos, np.broadcast_to(self.always[platform], (len(pos), len(self.always[platform])))]
        if platform in self.new and self.new_max:
            new_pos, vec = self.new[platform]
            sims = np.asarray(q, dtype=np.float32) @ vec.T  # more new classes than new_max here
            parts.append(new_pos[np.argpartition(-sims, self.new_max - 1, axis=1)[:, :self.new_max]])
        table = self.similar.get(platform)
        for column in [c for c in self.recent_items if c in context.columns] if table is not None else []:
            codes = self.neighbours.codes(context[column].cast(pl.Utf8).to_list())
            near = table[np.where(codes >= 0, codes, len(table) - 1)]  # null, unknown: the last row (-1)
            parts.append(np.where(near >= 0, near, pos[:, :1]))  # no neighbour: a held one again
        affine = self._affinity_positions(context, platform, np.asarray(q, dtype=np.float32), pos[:, 0])
        if affine is not None:
            parts.append(affine)
        return np.concatenate(parts, axis=1)


def _similar_positions(neighbours: Neighbours, pos: dict[str, int], k: int) -> np.ndarray:
    """[len(items) + 1, k] the candidate positions of each item's k most similar items among
    the platform's candidates (-1 past its last; the last row, for an unknown item, all -1)."""
    at = np.array([pos.get(c, -1) for c in neighbours.items], dtype=np.int64)
    out = np.full((len(neighbours.items) + 1, k), -1, dtype=np.int64)
    for row, (codes, sims) in zip(neighbours.codes(neighbours.rows), neighbours.rows.values()):
        cand = at[np.asarray(codes, dtype=np.int64)]
        kept = np.flatnonzero(cand >= 0)
        best = kept[np.argsort(-np.asarray(sims)[kept], kind="stable")[:k]]
        out[row, :len(best)] = cand[best]
    return out


USER_EMBEDDING_SCHEMA = pa.schema([
    ("feature_date", pa.date32()), ("user_id", pa.string()), ("platform", pa.string()),
    ("model_version", pa.int32()), ("embedding", pa.list_(pa.float32())),
])


def user_embeddings(gold, day: DayInputs, tower: TowerEncoder, pairs: PairEncoder,
                    settings: InferenceSettings, model_version: int) -> Iterator[pl.DataFrame]:
    """The user tower's vector of every active user on each platform they use, under the first
    row's context ("For you": the user's usual hour there), a batch of users at a time
    (USER_EMBEDDING_SCHEMA): the shared user representation other models and surfaces read."""
    from ml.inference import iter_user_batches
    from ml.row_scorer import row_context

    ds = settings.dataset
    for users in iter_user_batches(gold, day.feature_date, settings):
        for p in day.candidates:
            up = users.filter(ds.uses_platform(users, p))
            if up.height == 0:
                continue
            side = pairs.encode_users(row_context(settings, day, up, p, settings.rows[0]), pairs=False)
            vec = tower.users(side.dense, side.sparse)
            yield pl.DataFrame({
                "feature_date": [day.feature_date] * up.height, "user_id": up["user_id"],
                "platform": [p] * up.height, "model_version": [int(model_version)] * up.height,
                "embedding": pl.Series(vec.tolist(), dtype=pl.List(pl.Float32)),
            }).cast({"model_version": pl.Int32})


@dataclass(frozen=True)
class RetrievalRef:
    """Where a Ray actor finds the retrieval model (MLflow) and the day's index (files)."""

    model_uri: str
    version: int
    index_uri: str
    tracking_uri: str | None = None

    def load_tower(self) -> tuple[TowerEncoder, PairEncoder]:
        from ml import tracking

        module, encoders, _ = tracking.load_torchscript(self.model_uri, tracking_uri=self.tracking_uri)
        config = tracking.load_model_config(self.model_uri, tracking_uri=self.tracking_uri)
        if config.architecture != "two_tower":
            raise IndexLoadError(f"{self.model_uri} is a {config.architecture!r} model, not a two-tower")
        return TowerEncoder(module.state_dict(), config), PairEncoder(encoders)

    def retriever(self, day: DayInputs, *, n: int, ranker_version: int | None,
                  popular: int = RETRIEVE_POPULAR, new_days: int = RETRIEVE_NEW_DAYS,
                  new_max: int | None = None, affinity: int = 0,
                  affinity_classes: int = RETRIEVE_AFFINITY_CLASSES) -> Retriever:
        """The tower and the day's index, checked to belong together and to the ranker."""
        index = load_index(self.index_uri)
        if index.feature_date != day.feature_date:
            raise IndexLoadError(f"candidate index {self.index_uri} is of {index.feature_date}, "
                                 f"not {day.feature_date}")
        index.check_versions(self.version, ranker_version)
        tower, pairs = self.load_tower()
        return Retriever(tower, pairs, index, day, n=n, popular=popular, new_days=new_days, new_max=new_max,
                         affinity=affinity, affinity_classes=affinity_classes)


__all__ = ["CandidateIndex", "IndexLoadError", "RetrievalRef", "Retriever", "build_index", "class_vectors",
           "index_uri", "load_index", "save_index", "user_embeddings", "USER_EMBEDDING_SCHEMA"]
