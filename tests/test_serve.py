"""python -m rbm_cuda.serve: every endpoint of the JSON API through FastAPI's test client, every kind of
bad request (a 4xx with a JSON error naming the field, never a 500), concurrency, and the page."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from rbm_cuda import RBM, RBMRecommender  # noqa: E402
from rbm_cuda.datasets import RatingData  # noqa: E402
from rbm_cuda.web.app import MAX_BODY_BYTES, Batcher, create_app  # noqa: E402

TITLES = ["Alpha", "Beta", "Gamma", "Delta", "Star One", "Star Two", "Omega", "Sigma", "Kappa", "Zeta"] * 3


def data(to_read=False):
    rng = np.random.default_rng(3)
    n_users, n_items = 60, 30
    r = np.clip(np.rint(3 + rng.normal(0, 1, (n_users, 1)) + rng.normal(0, 1, (1, n_items))), 1, 5)
    mask = rng.random((n_users, n_items)) < 0.3
    mask[np.arange(n_users), np.arange(n_users) % n_items] = True
    items = pd.DataFrame({"title": [f"{t} {k}" for k, t in enumerate(TITLES)]})
    tr = None
    if to_read:
        tr = sp.csr_matrix((rng.random((n_users, n_items)) < 0.2) & ~mask)
    return RatingData(sp.csr_matrix(np.where(mask, r, 0).astype(np.float32)), np.arange(n_users) + 1,
                      np.arange(n_items) + 100, [1, 2, 3, 4, 5], items=items, to_read=tr, name="tiny")


@pytest.fixture(scope="module")
def rec():
    p = dict(n_hidden=8, epochs=3, batch_size=16)
    return RBMRecommender(item_params=p, user_params=p, ranker_params=p, device="cpu").fit(data())


@pytest.fixture(scope="module")
def client(rec):
    return TestClient(create_app(rec, data(to_read=True)), raise_server_exceptions=False)


def test_health_and_metadata(client, rec):
    assert client.get("/api/health").json() == {"status": "ok"}
    m = client.get("/api/model").json()
    assert m["kind"] == "RBMRecommender" and m["n_items"] == 30 and m["levels"] == [1, 2, 3, 4, 5]
    assert m["parts"] == ["item", "user", "ranker"] and m["to_read"] is True


def test_search_by_title(client):
    found = client.get("/api/items/search", params={"q": "star", "n": 5}).json()
    assert found and all("Star" in f["title"] for f in found)
    counts = [f["n_ratings"] for f in found]
    assert counts == sorted(counts, reverse=True)


def test_known_user_gets_the_recommenders_list(client, rec):
    got = client.get("/api/users/5/recommendations", params={"n": 4}).json()
    ids, scores = rec.recommend(5, n=4)
    assert [r["item_id"] for r in got["items"]] == ids.tolist()
    np.testing.assert_allclose([r["score"] for r in got["items"]], scores, atol=1e-6)
    np.testing.assert_allclose([r["expected_rating"] for r in got["items"]],
                               rec.predict(np.repeat(5, 4), ids), atol=1e-4)
    assert got["score"].startswith("p(rated)")


def test_history_fold_in_with_reasons(client, rec):
    history = [{"item_id": 100, "rating": 5}, {"item_id": 104, "rating": 4}, {"item_id": 110, "rating": 1}]
    got = client.post("/api/recommendations", json={"history": history, "n": 5}).json()
    want, _ = rec.recommend(histories={100: 5, 104: 4, 110: 1}, n=5)
    assert [r["item_id"] for r in got["items"]] == want.tolist()
    assert not {100, 104, 110} & {r["item_id"] for r in got["items"]}
    for r in got["items"]:  # reasons are history items, most similar first, never unlike ones
        sims = [b["similarity"] for b in r["because"]]
        assert all(b["item_id"] in (100, 104, 110) for b in r["because"]) and sims == sorted(sims, reverse=True)
        assert all(s > 0 for s in sims)
    # removing a rating changes the list the way the recommender says
    fewer = client.post("/api/recommendations", json={"history": history[:1], "n": 5}).json()
    assert [r["item_id"] for r in fewer["items"]] == rec.recommend(histories={100: 5}, n=5)[0].tolist()


def test_similar_items(client, rec):
    got = client.get("/api/items/100/similar", params={"n": 3}).json()
    assert [g["item_id"] for g in got] == rec.similar_items(100, n=3)[0].tolist()


def test_to_read_candidates(client, rec):
    d = data(to_read=True)
    user = int(np.flatnonzero(np.diff(d.to_read.indptr))[0]) + 1
    got = client.get(f"/api/users/{user}/to-read", params={"n": 50}).json()
    allowed = set(d.item_ids[d.to_read[user - 1].indices].tolist())
    assert got["items"] and {r["item_id"] for r in got["items"]} <= allowed


@pytest.mark.parametrize("method, url, body, status, field", [
    ("post", "/api/recommendations", {"history": [{"item_id": 999, "rating": 4}]}, 422, "history.0.item_id"),
    ("post", "/api/recommendations", {"history": [{"item_id": 100, "rating": 7}]}, 422, "history.0.rating"),
    ("post", "/api/recommendations", {"history": [{"item_id": 100, "rating": 4}], "n": 0}, 422, "n"),
    ("post", "/api/recommendations", {"history": [{"item_id": 100, "rating": 4}], "n": 500}, 422, "n"),
    ("post", "/api/recommendations", {"history": []}, 422, "history"),
    ("post", "/api/recommendations", {"history": [{"item_id": 100, "rating": 4}] * 2}, 422, "history.1.item_id"),
    ("post", "/api/recommendations", {"history": [{"item_id": 100}]}, 422, "history.0.rating"),
    ("post", "/api/recommendations", {"history": [{"item_id": 100, "rating": 4, "x": 1}]}, 422, "history.0.x"),
    ("post", "/api/recommendations", "{not json", 422, "body"),
    ("post", "/api/recommendations", '{"history": [{"item_id": 100, "rating": NaN}]}', 422, "history.0.rating"),
    ("post", "/api/recommendations", '{"history": [{"item_id": 100, "rating": Infinity}]}', 422, "history.0.rating"),
    ("get", "/api/users/99999/recommendations", None, 404, "user_id"),
    ("get", "/api/users/1/recommendations?n=abc", None, 422, "n"),
    ("get", "/api/items/4242/similar", None, 404, "item_id"),
    ("get", "/api/items/search?q=", None, 422, "q"),
])
def test_bad_requests_are_4xx_json_naming_the_field(client, method, url, body, status, field):
    if isinstance(body, str):
        r = client.post(url, content=body, headers={"content-type": "application/json"})
    elif method == "post":
        r = client.post(url, json=body)
    else:
        r = client.get(url)
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["field"] == field and doc["error"], doc


def test_body_over_the_limit_is_refused(client):
    big = json.dumps({"history": [{"item_id": 100, "rating": 4}] * (MAX_BODY_BYTES // 20)})
    r = client.post("/api/recommendations", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"


def test_keeps_serving_after_a_thousand_malformed_requests(client, rec):
    rng = np.random.default_rng(0)
    for k in range(1000):
        junk = bytes(rng.integers(0, 256, rng.integers(0, 200), dtype=np.uint8))
        r = client.post("/api/recommendations", content=junk, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (k, r.status_code, r.text)
    assert client.get("/api/users/5/recommendations").status_code == 200


def test_concurrent_people_get_their_own_lists(client, rec):
    histories = [{100 + k: 5, 100 + (k + 7) % 30: 1} for k in range(12)]
    want = [rec.recommend(histories=h, n=5)[0].tolist() for h in histories]

    def ask(h):
        body = {"history": [{"item_id": i, "rating": r} for i, r in h.items()], "n": 5}
        return [x["item_id"] for x in client.post("/api/recommendations", json=body).json()["items"]]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, histories * 3))
    assert got == want * 3


async def eventually(cond, timeout=10):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)


def test_requests_waiting_for_the_scorer_go_together_each_with_its_own_answer():
    """While one batch is scored, the requests that arrive wait and are then scored in one call; a
    request that fails makes that call fail, and then each of them is scored alone, so only the bad
    one gets the error."""
    gate, calls = threading.Event(), []

    def score_many(requests):
        calls.append(list(requests))
        if len(calls) == 1:
            gate.wait(10)
        if "bad" in requests:
            raise ValueError("a bad request")
        return [r * 2 for r in requests]

    batcher = Batcher(score_many, threading.Lock())

    async def main():
        first = asyncio.create_task(batcher(1))
        await eventually(lambda: len(calls) == 1)
        rest = {x: asyncio.create_task(batcher(x)) for x in (2, 3, "bad", 4)}
        await eventually(lambda: batcher.waiting == 4)
        gate.set()
        assert await first == 2
        assert [await rest[x] for x in (2, 3, 4)] == [4, 6, 8]
        with pytest.raises(ValueError, match="a bad request"):
            await rest["bad"]

    asyncio.run(main())
    assert calls[0] == [1] and sorted(map(str, calls[1])) == ["2", "3", "4", "bad"]
    assert sorted(map(str, (c[0] for c in calls[2:]))) == ["2", "3", "4", "bad"] and all(len(c) == 1 for c in calls[2:])
    assert batcher.batches == 2


def test_an_interrupted_batch_answers_every_request_with_the_interruption():
    """Any BaseException while scoring a batch: every request of the batch gets it, none waits
    forever, and the scorer is free for the next request."""
    class Interrupted(BaseException):
        pass

    def score_many(requests):
        if "stop" in requests:
            raise Interrupted
        return list(requests)

    batcher = Batcher(score_many, threading.Lock())

    async def main():
        with batcher.busy:
            tasks = [asyncio.create_task(batcher(x)) for x in ("a", "stop", "b")]
            await eventually(lambda: batcher.waiting == 3)
        for t in tasks:
            with pytest.raises(Interrupted):
                await asyncio.wait_for(t, 10)
        assert await asyncio.wait_for(batcher("c"), 10) == "c"

    asyncio.run(main())


def test_a_request_that_goes_away_does_not_stop_the_others():
    """A request cancelled while it waits (its client disconnected) is scored with its batch and its
    answer dropped; the others get theirs."""
    batcher = Batcher(lambda reqs: [r * 2 for r in reqs], threading.Lock())
    loop_errors = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: loop_errors.append(context))
        with batcher.busy:
            tasks = [asyncio.create_task(batcher(x)) for x in range(4)]
            await eventually(lambda: batcher.waiting == 4)
            tasks[1].cancel()
        assert [await t for k, t in enumerate(tasks) if k != 1] == [0, 4, 6]
        assert tasks[1].cancelled()
        await asyncio.sleep(0.05)  # any late callback has run

    asyncio.run(main())
    assert loop_errors == []


def test_a_request_whose_loop_has_closed_does_not_stop_the_scorer():
    """A request left behind by an event loop that has closed (a server shutting down) cannot be
    answered; the others of its batch are, and the scoring thread goes on."""
    batcher = Batcher(lambda reqs: [r * 2 for r in reqs], threading.Lock())

    async def queue_one():
        task = asyncio.create_task(batcher(1))
        await eventually(lambda: batcher.waiting == 1)
        return task

    gone = asyncio.new_event_loop()
    batcher.busy.acquire()  # nothing is scored until both requests wait
    gone.run_until_complete(queue_one())
    gone.close()

    async def live():
        task = asyncio.create_task(batcher(21))
        await eventually(lambda: batcher.waiting == 2)
        batcher.busy.release()  # one batch: the closed loop's request and this one
        return await asyncio.wait_for(task, 10)

    assert asyncio.run(live()) == 42


def test_a_batch_takes_at_most_max_batch_requests_oldest_first():
    calls = []
    batcher = Batcher(lambda reqs: calls.append(list(reqs)) or list(reqs), threading.Lock(), max_batch=3)

    async def main():
        with batcher.busy:
            tasks = [asyncio.create_task(batcher(k)) for k in range(7)]
            await eventually(lambda: batcher.waiting == 7)
        assert [await t for t in tasks] == list(range(7))

    asyncio.run(main())
    assert calls == [[0, 1, 2], [3, 4, 5], [6]]


def test_batched_history_requests_answer_as_single_ones(rec):
    """Histories scored together (mixed n and exclude_seen) get the items, scores and expected ratings
    each gets alone."""
    app = create_app(rec, data())
    c = TestClient(app)
    rng = np.random.default_rng(5)
    bodies = []
    for k in range(24):
        items = rng.choice(30, size=int(rng.integers(1, 6)), replace=False) + 100
        bodies.append({"history": [{"item_id": int(i), "rating": int(rng.integers(1, 6))} for i in items],
                       "n": int(rng.integers(1, 12)), "exclude_seen": bool(k % 3)})
    alone = [c.post("/api/recommendations", json=b).json() for b in bodies]
    assert app.state.batcher.batches == len(bodies)
    with ThreadPoolExecutor(len(bodies)) as pool:
        with app.state.batcher.busy:  # nothing is scored until every request waits: then one batch
            futures = [pool.submit(lambda b: c.post("/api/recommendations", json=b).json(), b) for b in bodies]
            deadline = time.monotonic() + 30
            while app.state.batcher.waiting < len(bodies):
                assert time.monotonic() < deadline
                time.sleep(0.005)
        together = [f.result() for f in futures]
    assert app.state.batcher.batches == len(bodies) + 1
    for a, t in zip(alone, together):
        assert [r["item_id"] for r in t["items"]] == [r["item_id"] for r in a["items"]]
        for ra, rt in zip(a["items"], t["items"]):
            assert rt["score"] == pytest.approx(ra["score"], rel=1e-5, abs=1e-6)
            assert rt["expected_rating"] == pytest.approx(ra["expected_rating"], rel=1e-5, abs=1e-4)
            assert rt["because"] == ra["because"]


def test_a_plain_rbm_model_is_served_too():
    d = data()
    app = create_app(RBM(n_hidden=4, epochs=2, device="cpu").fit(d))
    c = TestClient(app)
    got = c.post("/api/recommendations", json={"history": [{"item_id": 100, "rating": 5}], "n": 3}).json()
    assert len(got["items"]) == 3 and got["score"] == "expected rating"


def test_the_page_is_served(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "/api/recommendations" in r.text and "/api/items/search" in r.text


def test_chunked_bodies_are_limited_too(client):
    def chunks(total):
        piece = b'{"history": [' + b'{"item_id": 100, "rating": 4},' * 10
        yield piece
        sent = len(piece)
        while sent < total:
            yield b" " * 1024
            sent += 1024
        yield b'{"item_id": 101, "rating": 4}], "n": 3}'

    big = client.post("/api/recommendations", content=chunks(MAX_BODY_BYTES + 4096),
                      headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["field"] == "body"
    small = client.post("/api/recommendations", content=(c for c in [b'{"history": [{"item_id": 100, "rating": 4}]',
                                                                      b', "n": 3}']),
                        headers={"content-type": "application/json"})
    assert small.status_code == 200, small.text
    assert len(small.json()["items"]) == 3


def test_blank_search_is_a_4xx(client):
    r = client.get("/api/items/search", params={"q": "   "})
    assert r.status_code == 422 and r.json()["field"] == "q"


def test_ids_beyond_2_53_travel_as_text():
    d = data()
    big = RatingData(d.ratings, d.user_ids, d.item_ids + 2**60, d.levels, items=d.items, name="big ids")
    c = TestClient(create_app(RBM(n_hidden=4, epochs=1, device="cpu").fit(big)))
    found = c.get("/api/items/search", params={"q": "Star"}).json()
    assert all(isinstance(f["item_id"], str) for f in found)
    got = c.post("/api/recommendations", json={"history": [{"item_id": found[0]["item_id"], "rating": 5}], "n": 3})
    assert got.status_code == 200 and all(int(r["item_id"]) >= 2**60 for r in got.json()["items"])


def test_a_ranker_only_recommender_saves_and_loads(tmp_path):
    p = dict(n_hidden=4, epochs=1, batch_size=16)
    rec = RBMRecommender(("ranker",), ranker_params={**p, "epochs": np.int64(1)}, device="cpu").fit(data())
    back = RBMRecommender.load(rec.save(tmp_path / "r.npz"))
    assert back.weights_ == {} and back.recommend(5, n=3)[0].tolist() == rec.recommend(5, n=3)[0].tolist()


def test_several_server_processes_answer_as_one(tmp_path, rec):
    """python -m rbm_cuda.serve --workers 2: every process loads the model file, and each request gets
    the answer one process gives."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    path = rec.save(tmp_path / "m.npz")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "rbm_cuda.serve", "--model", path, "--workers", "2", "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")})
    url = f"http://127.0.0.1:{port}"
    body = {"history": [{"item_id": 100, "rating": 5}, {"item_id": 103, "rating": 2}], "n": 5}
    want = TestClient(create_app(RBMRecommender.load(path))).post("/api/recommendations", json=body).json()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/api/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)
        for _ in range(20):
            req = urllib.request.Request(url + "/api/recommendations", data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                got = json.loads(r.read())
            # the same list; scores up to the last digits, which BLAS may round otherwise on one thread
            assert [i["item_id"] for i in got["items"]] == [i["item_id"] for i in want["items"]]
            np.testing.assert_allclose([i["score"] for i in got["items"]], [i["score"] for i in want["items"]],
                                       rtol=1e-4)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "in 2 processes" in err


def test_workers_must_be_at_least_one(capsys):
    from rbm_cuda.serve import main

    assert main(["--workers", "0"]) == 2
    assert "--workers 0: expected at least 1" in capsys.readouterr().err


def test_the_cached_default_model_is_named_after_the_default_settings(monkeypatch, tmp_path):
    from rbm_cuda import recommender, serve

    monkeypatch.setenv("RBM_CUDA_CACHE", str(tmp_path))
    now = serve.default_model_path()
    assert now.parent == tmp_path and now.name.startswith("serve-ml-latest-small-") and now == serve.default_model_path()
    monkeypatch.setitem(recommender.DEFAULT_PART_PARAMS, "ranker", {**recommender.DEFAULT_PART_PARAMS["ranker"],
                                                                   "epochs": 31})
    assert serve.default_model_path() != now  # other defaults: another file, trained afresh
