"""The web app: a JSON API over a fitted RBMRecommender (or RBM), and one page for people at `/`.

Scoring stays in rbm_cuda; this module only translates HTTP to the recommender's public methods and
back.  Requests and responses are pydantic models; every refusal is a 4xx with a JSON body
{"error": what is wrong, "field": where}.  The endpoints are plain `def` functions, so FastAPI runs
them in its thread pool and CPU-bound scoring never blocks the event loop.  The model is read-only
while serving, so concurrent requests share it; history requests that arrive together are folded in
and ranked in one call (Batcher).
"""

from __future__ import annotations

import os
import threading
from typing import Optional, Union

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..foldin import ItemLookup
from ..recommender import RBMRecommender

MAX_BODY_BYTES = 64 * 1024   # a history of a few thousand ratings fits easily
MAX_HISTORY = 2000
MAX_N = 100
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

ItemId = Union[int, str]


class Rated(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: ItemId = Field(description="the item's raw id")
    rating: float = Field(description="a rating on the model's scale (GET /api/model: levels)")


class HistoryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    history: list[Rated] = Field(max_length=MAX_HISTORY, description="the person's ratings")
    n: int = Field(10, ge=1, le=MAX_N, description="how many items to recommend")
    exclude_seen: bool = Field(True, description="leave out the items of the history")


class Item(BaseModel):
    item_id: ItemId
    title: str
    n_ratings: int


class Because(BaseModel):
    item_id: ItemId
    title: str
    similarity: float


class Recommendation(BaseModel):
    rank: int
    item_id: ItemId
    title: str
    score: float
    expected_rating: Optional[float]
    because: list[Because]


class Recommendations(BaseModel):
    score: str
    items: list[Recommendation]


class Similar(BaseModel):
    item_id: ItemId
    title: str
    similarity: float


class ApiError(Exception):
    def __init__(self, status, error, field=None):
        self.status, self.error, self.field = status, error, field


class Batcher:
    """Runs score_many(list of requests) -> list of results, one call at a time, over every request
    waiting when the call starts: a request that arrives while another batch is being scored waits
    for that batch, then goes with all the others that arrived meanwhile.  Scoring sixteen people
    in one call costs little more than scoring one (the fixed cost of each call is most of it), so
    under load this answers more requests per second, sooner.  No thread of its own: the first
    waiting request thread to get the scorer scores the batch (at most max_batch requests, oldest
    first) for all of them.

    `busy` is the lock held while scoring; other work that must not run alongside (the app's other
    endpoints) takes it too."""

    def __init__(self, score_many, busy, max_batch=64):
        self._score_many = score_many
        self.max_batch = max_batch
        self.busy = busy
        self._queue_lock = threading.Lock()
        self._queue = []  # (request, Future) not yet taken by a batch
        self.batches = 0  # batches scored (for tests and the load benchmark's report)

    @property
    def waiting(self) -> int:
        """Requests queued and not yet taken by a batch."""
        with self._queue_lock:
            return len(self._queue)

    def __call__(self, request):
        from concurrent.futures import Future

        done = Future()
        with self._queue_lock:
            self._queue.append((request, done))
        while not done.done():
            with self.busy:
                if done.done():  # scored in the batch of the thread that held the lock
                    break
                with self._queue_lock:
                    batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                if batch:
                    self._run(batch)  # the oldest requests: this thread's own, or it goes round again
        return done.result()

    def _run(self, batch):
        self.batches += 1
        try:
            self._answer(batch)
        except BaseException as err:  # Ctrl-C, a cancelled task: no request of the batch may wait forever
            for _, done in batch:
                if not done.done():
                    done.set_exception(err)
            raise

    def _answer(self, batch):
        try:
            results = self._score_many([r for r, _ in batch])
        except Exception:  # noqa: BLE001 - score each alone, so that each gets its own answer or error
            results = None
        if results is not None:
            for (_, done), res in zip(batch, results):
                done.set_result(res)
            return
        for request, done in batch:
            try:
                done.set_result(self._score_many([request])[0])
            except Exception as err:  # noqa: BLE001 - the request's own error, raised in its thread
                done.set_exception(err)


def create_app(model, data=None) -> FastAPI:
    """The app serving `model` (a fitted RBMRecommender; an RBM works too, ranking by its score).
    data: the RatingData the model was trained on, for goodbooks to-read lists (optional)."""
    look = ItemLookup(model)
    is_rec = isinstance(model, RBMRecommender)
    # One scoring at a time: the Numba kernels hold the GIL and use every core already, so nothing is
    # lost, and Numba's fallback threading layer (workqueue) must not be entered by two threads.
    # History requests that wait meanwhile are scored together (Batcher).
    lock = threading.Lock()
    app = FastAPI(title="rbm_cuda recommendations", version="1")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_BODY_BYTES):
            return _error(413, f"the request body is {size} bytes; at most {MAX_BODY_BYTES} are accepted", "body")
        if request.method in ("POST", "PUT", "PATCH") and size is None:  # chunked: count what arrives
            total = 0
            async for chunk in request.stream():
                total += len(chunk)
                if total > MAX_BODY_BYTES:
                    return _error(413, f"the request body is over {MAX_BODY_BYTES} bytes", "body")
                request._body = getattr(request, "_body", b"") + chunk
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return _error(exc.status, exc.error, exc.field)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or "body"
        msg = first.get("msg", "invalid value")
        if first.get("type") == "json_invalid":
            msg, field = "the body is not valid JSON", "body"
        return _error(422, f"{field}: {msg}", field)

    @app.exception_handler(Exception)
    async def unexpected(request, exc):  # a bug of ours: say so in JSON, never a traceback page
        return _error(500, f"internal error ({type(exc).__name__})", None)

    def item_index(raw, field):
        i = look.id_index(raw)
        if i is None:
            raise ApiError(404 if field == "item_id" else 422,
                           f"{field}: unknown item {raw!r} (the model knows {len(look.ids)} items)", field)
        return i

    def title(i):
        return look.label(i) or str(look.ids[i])

    def rid(i):
        """A raw id for JSON: integers a JavaScript number holds exactly stay numbers, larger ones
        become text (which every endpoint accepts as an id)."""
        v = look.ids[i]
        v = v.item() if hasattr(v, "item") else v
        return str(v) if isinstance(v, int) and abs(v) > 2**53 else v

    def run(fn):
        with lock:
            return fn()

    def recommendations(ids, scores, expected, history_idx):
        idx = np.atleast_1d(model.item_index(ids)) if len(ids) else np.zeros(0, np.int64)
        because = [[] for _ in idx]
        if len(history_idx) and len(idx) and is_rec:
            sims = model.item_similarity(model.item_ids_[idx], model.item_ids_[history_idx])
            for r in range(len(idx)):
                # the history items it is most similar to; an item like none of them has no reason
                best = [b for b in np.argsort(-sims[r], kind="stable")[:2] if sims[r, b] > 0]
                because[r] = [Because(item_id=rid(history_idx[b]), title=title(history_idx[b]),
                                      similarity=round(float(sims[r, b]), 4)) for b in best]
        return Recommendations(score=_score_text(model), items=[
            Recommendation(rank=k + 1, item_id=rid(i), title=title(i), score=round(float(s), 6),
                           expected_rating=None if expected is None else round(float(expected[k]), 4),
                           because=because[k])
            for k, (i, s) in enumerate(zip(idx, scores))])

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(os.path.join(STATIC, "index.html"), media_type="text/html")

    @app.get("/api/health")
    def health():
        return {"status": "ok"}

    @app.get("/api/model")
    def metadata():
        out = {"kind": type(model).__name__, "dataset": model.dataset_name_, "n_users": int(model.n_users_),
               "n_items": int(model.n_items_), "levels": [float(v) for v in model.levels_], "score": _score_text(model),
               "has_titles": look.has_titles, "to_read": data is not None and getattr(data, "to_read", None) is not None}
        if is_rec:
            out["parts"] = list(model.parts_)
            out["weights"] = model.weights_
        return out

    @app.get("/api/items/search", response_model=list[Item])
    def search(q: str = Query(..., min_length=1, max_length=200), n: int = Query(10, ge=1, le=MAX_N)):
        if not q.strip():
            raise ApiError(422, "q: give some text to look for in the titles", "q")
        found = look.find(q).iloc[:n]
        return [Item(item_id=rid(i), title=title(i), n_ratings=int(c)) for i, c in zip(found.index, found["n_ratings"])]

    @app.get("/api/users/{user_id}/recommendations", response_model=Recommendations)
    def for_user(user_id: str, n: int = Query(10, ge=1, le=MAX_N)):
        uid = _user(model, user_id)

        def work():
            ids, scores = model.recommend(uid, n=n)
            expected = model.predict(np.repeat(uid, len(ids)), ids) if is_rec and model.rating_parts_ and len(ids) \
                else None
            return recommendations(ids, scores, expected, np.zeros(0, np.int64))

        return run(work)

    @app.get("/api/users/{user_id}/to-read", response_model=Recommendations)
    def to_read(user_id: str, n: int = Query(10, ge=1, le=MAX_N)):
        if data is None or getattr(data, "to_read", None) is None:
            raise ApiError(404, "this model's data set has no to-read lists (goodbooks-10k has them)", "user_id")
        uid = _user(model, user_id)
        from ..foldin import to_read_items

        try:
            cands = to_read_items(model, data, uid)
        except KeyError:
            raise ApiError(404, f"user_id: user {user_id!r} is not in the to-read data", "user_id") from None
        cands = cands[np.isin(cands, model.item_ids_)]  # the data's items the model knows
        if not len(cands):
            return Recommendations(score=_score_text(model), items=[])
        return run(lambda: recommendations(*model.recommend(uid, n=n, items=cands), None, np.zeros(0, np.int64)))

    @app.post("/api/recommendations", response_model=Recommendations)
    def for_history(req: HistoryRequest):
        levels = np.asarray(model.levels_, dtype=np.float64)
        hist = {}
        for k, e in enumerate(req.history):
            field = f"history.{k}"
            i = item_index(e.item_id, f"{field}.item_id")
            if not np.any(np.isclose(levels, e.rating, rtol=0, atol=1e-6)):
                raise ApiError(422, f"{field}.rating: {e.rating:g} is not on the model's scale "
                                    f"{[float(v) for v in levels]}", f"{field}.rating")
            if i in hist:
                raise ApiError(422, f"{field}.item_id: item {e.item_id!r} is rated twice", f"{field}.item_id")
            hist[i] = float(levels[np.argmin(np.abs(levels - e.rating))])
        if not hist:
            raise ApiError(422, "history: rate at least one item", "history")
        history_idx = np.fromiter(hist, dtype=np.int64)
        raw = {model.item_ids_[i].item() if hasattr(model.item_ids_[i], "item") else model.item_ids_[i]: r
               for i, r in hist.items()}
        return batcher((raw, req.n, req.exclude_seen, history_idx))

    def score_histories(requests):
        """The answers to history requests (raw history, n, exclude_seen, history indices), the
        people of each exclude_seen value folded in and ranked together."""
        out = [None] * len(requests)
        for exclude in (True, False):
            which = [k for k, r in enumerate(requests) if r[2] is exclude]
            if not which:
                continue
            raws = [requests[k][0] for k in which]
            if not is_rec:  # a plain RBM ranks one history at a time
                for k in which:
                    raw, n, _, history_idx = requests[k]
                    out[k] = recommendations(*model.recommend_for(raw, n=n, exclude_seen=exclude), None, history_idx)
                continue
            ids, scores = model.recommend(histories=raws, n=max(requests[k][1] for k in which),
                                          exclude_seen=exclude)
            keep = [np.flatnonzero(np.isfinite(scores[row]))[:requests[k][1]] for row, k in enumerate(which)]
            expected = None
            if model.rating_parts_:
                shown = np.unique(np.concatenate([ids[row, kept] for row, kept in enumerate(keep)]))
                if len(shown):
                    expected = model.predict_ratings(histories=raws, items=shown)
            for row, k in enumerate(which):
                row_ids = ids[row, keep[row]]
                row_expected = None
                if expected is not None and len(row_ids):
                    row_expected = expected[row, np.searchsorted(shown, row_ids)]
                out[k] = recommendations(row_ids, scores[row, keep[row]], row_expected, requests[k][3])
        return out

    batcher = Batcher(score_histories, lock)
    app.state.batcher = batcher

    @app.get("/api/items/{item_id}/similar", response_model=list[Similar])
    def similar(item_id: str, n: int = Query(10, ge=1, le=MAX_N)):
        i = item_index(item_id, "item_id")
        ids, sims = run(lambda: model.similar_items(model.item_ids_[i], n=n))
        idx = np.atleast_1d(model.item_index(ids)) if len(ids) else []
        return [Similar(item_id=rid(j), title=title(j), similarity=round(float(s), 4)) for j, s in zip(idx, sims)]

    return app


def _user(model, text):
    from ..foldin import coerce_id

    uid = coerce_id(text, model.user_ids_)
    try:
        model.user_index(uid)
    except KeyError:
        raise ApiError(404, f"user_id: unknown user {text!r} (the model knows {len(model.user_ids_)} users)",
                       "user_id") from None
    return uid


def _score_text(model) -> str:
    if isinstance(model, RBMRecommender):
        return model.score_name_
    return "P(like)" if model.params_.visible == "like" else "expected rating"


def _error(status, error, field):
    return JSONResponse(status_code=status, content={"error": error, "field": field})
