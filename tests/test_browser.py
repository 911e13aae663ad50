"""The page in a real browser: headless Chromium opens it, searches, rates three items, sees the list,
removes a rating and sees the list change, starts over.  Skips where Chromium or Playwright is
missing (.ci/run installs Debian's chromium and the playwright package).

RBM_CUDA_SCREENSHOT=docs/serve.png pytest tests/test_browser.py  also saves a screenshot there."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytest.importorskip("uvicorn")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH", allow_module_level=True)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _model():
    from rbm_cuda import RBMRecommender, datasets

    path = os.environ.get("RBM_CUDA_DATA", "")
    if os.path.isdir(os.path.join(path, "ml-100k")):
        data = datasets.load(os.path.join(path, "ml-100k"))
    else:  # a small stand-in with titles
        rng = np.random.default_rng(0)
        r = np.clip(np.rint(3 + rng.normal(0, 1, (80, 40))), 1, 5) * (rng.random((80, 40)) < 0.3)
        titles = [f"Star Film {k}" if k % 3 == 0 else f"Film {k}" for k in range(40)]
        data = datasets.RatingData(sp.csr_matrix(r.astype(np.float32)), np.arange(80), np.arange(40),
                                   [1, 2, 3, 4, 5], items=pd.DataFrame({"title": titles}), name="stand-in")
    p = dict(epochs=10)
    return RBMRecommender(item_params=p, user_params=p, ranker_params=p, device="cpu").fit(data)


@pytest.fixture(scope="module")
def server():
    import uvicorn

    from rbm_cuda.web.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(_model()), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(10)


def _titles(page):
    return page.locator("#recs li .title").all_inner_texts()


def test_rate_three_items_and_watch_the_list(server, tmp_path):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS,
                                    env={**os.environ, "HOME": str(tmp_path)})
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(server)
        page.wait_for_function("document.querySelector('#meaning').textContent.length > 0")
        for k, rating in enumerate(("5", "4", "5")):
            page.fill("#q", "star")
            page.locator("#results li").nth(k).wait_for()
            page.locator("#results li").nth(k).locator(".stars button", has_text=rating).first.click()
            page.wait_for_function(f"document.querySelectorAll('#rated li.rated').length === {k + 1}")
        page.wait_for_function("document.querySelectorAll('#recs li').length === 10")
        first = _titles(page)
        assert len(first) == 10 and all(first)
        rated = page.locator("#rated li.rated span").all_inner_texts()
        assert not any(t.split("  ", 1)[-1] in first for t in rated)  # nothing already rated
        if os.environ.get("RBM_CUDA_SCREENSHOT"):
            page.screenshot(path=os.environ["RBM_CUDA_SCREENSHOT"], full_page=True)
        # removing a rating asks again with the two left, and the list becomes that answer
        removed = rated[0].split("  ", 1)[-1]
        with page.expect_response(lambda r: r.url.endswith("/api/recommendations")) as answer:
            page.locator("#rated .remove").first.click()
        page.wait_for_function("document.querySelectorAll('#rated li.rated').length === 2")
        assert len(answer.value.request.post_data_json["history"]) == 2
        want = [r["title"] for r in answer.value.json()["items"]]
        page.wait_for_function("(want) => JSON.stringify([...document.querySelectorAll('#recs li .title')]"
                               ".map(e => e.textContent)) === JSON.stringify(want)", arg=want)
        assert not any(removed in why for why in page.locator("#recs li .muted").all_inner_texts())
        page.click("#restart")
        page.wait_for_function("document.querySelectorAll('#recs li').length === 0")
        assert page.locator("#error").inner_text() == ""
        browser.close()
