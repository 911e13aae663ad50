"""The web app: a JSON API over a fitted RBMRecommender (or RBM), and one page for people at `/`.

Scoring stays in rbm_cuda; this module only translates HTTP to the recommender's public methods and
back.  Requests and responses are pydantic models; every refusal is a 4xx with a JSON body
{"error": what is wrong, "field": where}.  CPU-bound scoring never blocks the event loop: the endpoints
are plain `def` functions that FastAPI runs in its thread pool, except the history one, which checks
its request in the loop and awaits the Batcher's scoring thread.  The model is read-only while
serving, so concurrent requests share it; history requests that arrive together are folded in and
ranked in one call (Batcher).
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Optional, Union

import numpy as np
import scipy.sparse as sp
from fastapi import FastAPI, Query
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
    """Scores requests in batches: `await batcher(request)` queues the request and returns its
    answer from score_many(list of requests) -> list of results.  One scoring thread of its own
    takes every request waiting (at most max_batch, oldest first) each time it is free: a request
    that arrives while a batch is scored goes with all the others that arrived meanwhile.  Scoring
    sixteen people in one call costs little more than scoring one (the fixed cost of each call is
    most of it), so under load this answers more requests per second, sooner; and the event loop
    only queues and answers, so it never waits for scoring.

    `busy` is the lock held while scoring; other work that must not run alongside (the app's other
    endpoints) takes it too."""

    def __init__(self, score_many, busy, max_batch=64):
        from concurrent.futures import ThreadPoolExecutor

        self._score_many = score_many
        self.max_batch = max_batch
        self.busy = busy
        self._queue_lock = threading.Lock()
        self._queue = []  # (request, asyncio future, its loop) not yet taken by a batch
        self._draining = False  # whether the scoring thread has been asked to empty the queue
        self._scorer = ThreadPoolExecutor(1, thread_name_prefix="rbm-cuda-scorer")
        self.batches = 0  # batches scored (for tests and the load benchmark's report)

    @property
    def waiting(self) -> int:
        """Requests queued and not yet taken by a batch."""
        with self._queue_lock:
            return len(self._queue)

    async def __call__(self, request):
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        with self._queue_lock:
            self._queue.append((request, done, loop))
            start, self._draining = not self._draining, True
        if start:
            self._scorer.submit(self._drain)
        return await done

    def _drain(self):
        """The scoring thread: batches until the queue is empty."""
        try:
            while True:
                with self.busy:
                    with self._queue_lock:
                        batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                        if not batch:
                            self._draining = False
                            return
                    batch = [entry for entry in batch if not entry[1].cancelled()]  # their clients left
                    if not batch:
                        continue
                    self.batches += 1
                    try:
                        self._answer(batch)
                    except BaseException as err:  # noqa: BLE001 - no request of the batch may wait forever
                        for _, done, loop in batch:
                            _deliver(loop, done, None, err)
        except BaseException:
            # a failure of the thread itself: the next request must start a new one, not find the
            # queue taken by a thread that has gone
            with self._queue_lock:
                self._draining = False
            raise

    def _answer(self, batch):
        try:
            results = self._score_many([r for r, _, _ in batch])
        except Exception:  # noqa: BLE001 - score each alone, so that each gets its own answer or error
            results = None
        if results is not None:
            for (_, done, loop), res in zip(batch, results):
                _deliver(loop, done, res, None)
            return
        for request, done, loop in batch:
            try:
                res, err = self._score_many([request])[0], None
            except Exception as e:  # noqa: BLE001 - the request's own error, raised where it waits
                res, err = None, e
            _deliver(loop, done, res, err)


def _deliver(loop, done, result, error):
    """Hands a result (or error) to the request's event loop; a closed loop has nobody waiting."""
    try:
        loop.call_soon_threadsafe(_settle, done, result, error)
    except RuntimeError:
        pass


def _settle(done, result, error):
    if done.done():  # the request went away (its client disconnected)
        return
    if error is None:
        done.set_result(result)
    else:
        done.set_exception(error)


class BodyLimit:
    """Refuses a request body over MAX_BODY_BYTES with a 413 before any endpoint reads it: by its
    Content-Length, or, for a chunked body, by counting what arrives (then handed on whole).  Plain
    ASGI, so that a request pays no task or stream of its own for the check."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        size = dict(scope["headers"]).get(b"content-length")
        if size is not None:
            size = size.decode("latin-1")
            if not size.isdigit() or int(size) > MAX_BODY_BYTES:
                return await _error(413, f"the request body is {size} bytes; at most {MAX_BODY_BYTES} are accepted",
                                    "body")(scope, receive, send)
            return await self.app(scope, receive, send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > MAX_BODY_BYTES:
                return await _error(413, f"the request body is over {MAX_BODY_BYTES} bytes", "body")(scope, receive, send)
            if not message.get("more_body", False):
                break
        whole = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return whole.pop() if whole else await receive()

        return await self.app(scope, replay, send)


def create_app(model, data=None) -> FastAPI:
    """The app serving `model` (a fitted RBMRecommender; an RBM works too, ranking by its score).
    data: the RatingData the model was trained on, for goodbooks to-read lists (optional)."""
    look = ItemLookup(model)
    is_rec = isinstance(model, RBMRecommender)
    score_text = _score_text(model)
    levels = [float(v) for v in model.levels_]
    # One scoring at a time: the Numba kernels hold the GIL and use every core already, so nothing is
    # lost, and Numba's fallback threading layer (workqueue) must not be entered by two threads.
    # History requests that wait meanwhile are scored together (Batcher).
    lock = threading.Lock()
    app = FastAPI(title="rbm_cuda recommendations", version="1")

    app.add_middleware(BodyLimit)

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

    def recommendations(idx, scores, expected, history_idx):
        """The Recommendations body (a dict) for item indices idx with their scores, expected
        ratings (or None) and, for each, the history items it is most similar to."""
        because = [[] for _ in idx]
        if len(history_idx) and len(idx) and is_rec:
            sims = model.item_similarity(model.item_ids_[idx], model.item_ids_[history_idx])
            best = np.argsort(-sims, axis=1, kind="stable")[:, :2]
            for r in range(len(idx)):
                # the history items it is most similar to; an item like none of them has no reason
                because[r] = [{"item_id": rid(history_idx[b]), "title": title(history_idx[b]),
                               "similarity": round(float(sims[r, b]), 4)} for b in best[r] if sims[r, b] > 0]
        return {"score": score_text, "items": [
            {"rank": k + 1, "item_id": rid(i), "title": title(i), "score": round(float(s), 6),
             "expected_rating": None if expected is None else round(float(expected[k]), 4), "because": because[k]}
            for k, (i, s) in enumerate(zip(idx.tolist(), scores.tolist()))]}

    def indices(ids):
        return np.atleast_1d(model.item_index(ids)) if len(ids) else np.zeros(0, np.int64)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(os.path.join(STATIC, "index.html"), media_type="text/html")

    @app.get("/api/health")
    def health():
        return {"status": "ok"}

    @app.get("/api/model")
    def metadata():
        out = {"kind": type(model).__name__, "dataset": model.dataset_name_, "n_users": int(model.n_users_),
               "n_items": int(model.n_items_), "levels": levels, "score": score_text,
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
            return recommendations(indices(ids), scores, expected, np.zeros(0, np.int64))

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
            return {"score": score_text, "items": []}

        def work():
            ids, scores = model.recommend(uid, n=n, items=cands)
            return recommendations(indices(ids), scores, None, np.zeros(0, np.int64))

        return run(work)

    @app.post("/api/recommendations", response_model=Recommendations)
    async def for_history(req: HistoryRequest):  # checks in the event loop (dict lookups), scores in the Batcher's thread
        hist = {}
        for k, e in enumerate(req.history):
            field = f"history.{k}"
            i = item_index(e.item_id, f"{field}.item_id")
            level = min(levels, key=lambda v: abs(v - e.rating))
            if not abs(level - e.rating) <= 1e-6:  # NaN too
                raise ApiError(422, f"{field}.rating: {e.rating:g} is not on the model's scale {levels}",
                               f"{field}.rating")
            if i in hist:
                raise ApiError(422, f"{field}.item_id: item {e.item_id!r} is rated twice", f"{field}.item_id")
            hist[i] = level
        if not hist:
            raise ApiError(422, "history: rate at least one item", "history")
        return await batcher((np.fromiter(hist, np.int64), np.fromiter(hist.values(), np.float32), req.n, req.exclude_seen))

    def score_histories(requests):
        """The answers to history requests (item indices, ratings, n, exclude_seen), the people of
        each exclude_seen value folded in and ranked together."""
        out = [None] * len(requests)
        for exclude in (True, False):
            which = [k for k, r in enumerate(requests) if r[3] is exclude]
            if not which:
                continue
            lengths = [len(requests[k][0]) for k in which]
            X = sp.csr_matrix((np.concatenate([requests[k][1] for k in which]),
                               np.concatenate([requests[k][0] for k in which]),
                               np.concatenate([[0], np.cumsum(lengths)])), shape=(len(which), model.n_items_))
            if not is_rec:  # a plain RBM ranks one history at a time
                for row, k in enumerate(which):
                    ids, scores = model.recommend_for(X[row], n=requests[k][2], exclude_seen=exclude)
                    out[k] = recommendations(indices(ids), scores, None, requests[k][0])
                continue
            ids, scores = model.recommend(histories=X, n=max(requests[k][2] for k in which), exclude_seen=exclude)
            keep = [np.flatnonzero(np.isfinite(scores[row]))[:requests[k][2]] for row, k in enumerate(which)]
            top = [indices(ids[row, kept]) for row, kept in enumerate(keep)]
            expected = None
            if model.rating_parts_:
                shown = np.unique(np.concatenate(top))
                if len(shown):
                    expected = model.predict_ratings(histories=X, items=model.item_ids_[shown])
            for row, k in enumerate(which):
                row_expected = None
                if expected is not None and len(top[row]):
                    row_expected = expected[row, np.searchsorted(shown, top[row])]
                out[k] = recommendations(top[row], scores[row, keep[row]], row_expected, requests[k][0])
        return out

    batcher = Batcher(score_histories, lock)
    app.state.batcher = batcher

    @app.get("/api/items/{item_id}/similar", response_model=list[Similar])
    def similar(item_id: str, n: int = Query(10, ge=1, le=MAX_N)):
        i = item_index(item_id, "item_id")
        ids, sims = run(lambda: model.similar_items(model.item_ids_[i], n=n))
        return [{"item_id": rid(j), "title": title(j), "similarity": round(float(s), 4)}
                for j, s in zip(indices(ids).tolist(), sims)]

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
