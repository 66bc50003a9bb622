"""The explorer in a real browser: Debian's chromium driven by Python Playwright.

``test_flag_survives_a_reload`` (default suite, skipped without /usr/bin/chromium): start
``streamlit run explorer/app.py`` on a free localhost port against the fixture run, open the map
(box-select some points, see them in the gallery), open the mislabel queue, flag an image,
reload and find the flag still there. Screenshots go to test-artifacts/.

``test_map_load_time_at_35k`` (slow): navigation-to-drawn-map time of the explorer's map on a
35,000-image run against a bare page holding only an ``st.plotly_chart`` of the same 35,000
Scattergl points, and an empty page (issue 4: at most +0.5 s over the bare page).
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from explorer_fixtures import fake_run, pipeline_run_dir  # noqa: F401  (fixture)

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ART = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(script: Path, env_extra: dict, log: Path):
    port = free_port()
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
                                 "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://localhost:{port}"
        for _ in range(120):
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.25)
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited: {log.read_text()[-2000:]}")
        else:
            raise RuntimeError("streamlit did not come up")
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield b
        finally:
            b.close()


DOCS_IMG = ROOT / "docs" / "img"


def shot(page, name: str) -> None:
    """A screenshot for test-artifacts/, and for the README (docs/img/) when UPDATE_DOCS_IMG=1."""
    page.screenshot(path=str(ART / f"browser-{name}.png"), full_page=False)
    if os.environ.get("UPDATE_DOCS_IMG") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMG / f"{name}.png"), full_page=False)


def settle(page, timeout=30_000) -> None:
    """Wait until Streamlit has finished the script run (no running indicator) and painted."""
    page.wait_for_selector('[data-testid="stAppViewContainer"]', timeout=timeout)
    page.wait_for_function("""() => !document.querySelector('[data-testid="stStatusWidget"]')""", timeout=timeout)
    page.wait_for_timeout(300)


IMAGES_LOADED = """() => {
  const imgs = Array.from(document.querySelectorAll('[data-testid="stImage"] img'));
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""

PLOT_DRAWN = """() => {
  const gd = document.querySelector('.js-plotly-plot');
  return !!(gd && gd._fullLayout && gd._fullData && gd._fullData.length && gd.querySelector('canvas'));
}"""


CHART_DRAWN = """() => {
  const gd = document.querySelector('.js-plotly-plot');
  return !!(gd && gd._fullLayout && gd._fullData && gd._fullData.length);
}"""


def test_flag_survives_a_reload(tmp_path, pipeline_run_dir):
    ART.mkdir(exist_ok=True)
    root = tmp_path / "runs"
    shutil.copytree(pipeline_run_dir, root / "fixture")
    env = {"SUBCLASS_EXPLORER_RUNS": str(root), "SUBCLASS_EXPLORER_DATA_ROOTS": str(tmp_path)}
    with streamlit_server(ROOT / "explorer" / "app.py", env, ART / "browser-streamlit.log") as url, browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        errors: list[str] = []
        requests: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))

        # the map: drawn, then a box selection shows its images below
        page.goto(url + "/map")
        page.wait_for_function(PLOT_DRAWN, timeout=60_000)
        settle(page)
        page.screenshot(path=str(ART / "browser-map.png"), full_page=True)
        plot = page.locator(".js-plotly-plot").first
        plot.hover()
        page.locator('.modebar-btn[data-val="select"]').first.click()
        box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
        x0, y0 = box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.2
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + box["width"] * 0.3, y0 + box["height"] * 0.3, steps=8)
        page.mouse.up()
        page.get_by_text("Act on all").wait_for(timeout=30_000)
        settle(page)
        t0 = time.perf_counter()
        page.wait_for_function(IMAGES_LOADED, timeout=30_000)
        gallery_s = time.perf_counter() - t0
        page.screenshot(path=str(ART / "browser-map-selection.png"), full_page=True)
        assert page.locator('[data-testid="stImage"] img').count() >= 64
        assert gallery_s < 1.0, gallery_s  # issue 4: a 64-image gallery appears in under a second

        # tag the selection -> show that tag on the map -> export its images (CSV)
        n_sel = int(page.get_by_role("button", name="Apply to").inner_text().split()[-1].replace(",", ""))
        page.get_by_label("Tag (optional)").fill("glasses")
        page.get_by_role("button", name="Apply to").click()
        page.get_by_text("Show tag").wait_for(timeout=30_000)
        settle(page)
        box = page.locator('[data-testid="stSelectbox"]', has_text="Show tag").get_by_role("combobox")
        page.wait_for_function("""() => [...document.querySelectorAll('[data-testid="stSelectbox"]')]
            .some(e => e.innerText.includes('Show tag') && !e.querySelector('input[disabled]'))""", timeout=30_000)
        box.click()
        page.keyboard.type("glasses")
        page.get_by_role("option", name=f"glasses ({n_sel:,})").click()
        page.get_by_text(f"Tag “glasses”: {n_sel:,} images").wait_for(timeout=30_000)
        settle(page)
        page.wait_for_function(PLOT_DRAWN, timeout=60_000)
        shot(page, "map")
        with page.expect_download(timeout=30_000) as dl:
            page.get_by_role("button", name=f"CSV ({n_sel:,} images)").click()
        rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
        assert len(rows) == n_sel and {r["tags"] for r in rows} == {"glasses"} and all(r["subclass_name"] for r in rows)
        assert not any(r["decision"] for r in rows)  # tagging flagged nothing

        # the sub-classes page (for the README)
        page.goto(url + "/subclasses")
        page.get_by_text("Name the ones you recognise").wait_for(timeout=60_000)
        settle(page)
        page.wait_for_function(IMAGES_LOADED, timeout=30_000)
        shot(page, "subclasses")

        # the confusion matrix: a click on a cell shows its images
        page.goto(url + "/confusion")
        page.wait_for_function(PLOT_DRAWN.replace("&& gd.querySelector('canvas')", ""), timeout=60_000)
        settle(page)
        grid = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
        page.mouse.click(grid["x"] + grid["width"] * 5.5 / 8, grid["y"] + grid["height"] * 2.5 / 8)
        page.get_by_text("Given surprise, predicted disgust").wait_for(timeout=30_000)
        settle(page)
        page.screenshot(path=str(ART / "browser-confusion.png"), full_page=True)

        # the mislabel queue: flag the first candidate
        page.goto(url + "/mislabels")
        page.get_by_text("Mislabel candidates").wait_for(timeout=60_000)
        settle(page)
        page.wait_for_function(IMAGES_LOADED, timeout=30_000)
        page.screenshot(path=str(ART / "browser-mislabels.png"), full_page=True)
        page.get_by_role("button", name="Flag", exact=True).first.click()
        page.get_by_text("Reviewed 1 of").wait_for(timeout=30_000)
        settle(page)

        # reload: a new session; the flag is still there (progress, export, and the item's card)
        page.reload()
        page.get_by_text("Mislabel candidates").wait_for(timeout=60_000)
        settle(page)
        page.get_by_text("Reviewed 1 of").wait_for(timeout=30_000)
        page.get_by_text("1 flagged (0 with a proposed label)").wait_for(timeout=30_000)
        page.get_by_text("Hide reviewed").click()
        page.get_by_text("decision: flag").first.wait_for(timeout=30_000)
        settle(page)
        page.wait_for_function(IMAGES_LOADED, timeout=30_000)
        page.screenshot(path=str(ART / "browser-mislabels-after-reload.png"), full_page=True)
        from explorer.review import ReviewStore

        assert list(ReviewStore(root / "fixture").decisions()["decision"]) == ["flag"]

        # undo the flag, reload: it is gone, and the undo is in the log (nothing deleted)
        page.get_by_role("button", name="Undo: flagged 1 image").click()
        page.get_by_role("button", name="Undo: tagged").wait_for(timeout=30_000)  # next in line: the map's tag
        page.reload()
        page.get_by_text("Mislabel candidates").wait_for(timeout=60_000)
        settle(page)
        page.get_by_text("Reviewed 0 of").wait_for(timeout=30_000)
        assert not errors, errors
    # nothing the app showed came from anywhere but this machine (fonts, icons, the favicon included)
    away = sorted({u for u in requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")
                   and urlsplit(u).hostname not in ("localhost", "127.0.0.1", "::1")})
    assert not away, away
    assert len(requests) > 20  # the listener saw the page's own traffic
    store = ReviewStore(root / "fixture")
    assert store.decisions().empty
    assert [e["action"] for e in store.log()] == ["undo", "decide", "flag_and_tag"]
    assert set(store.tags()["tag"]) == {"glasses"}  # the undo took back the flag only


# ------------------------------------------------------------------------------- load time at 35k
BARE = """
import numpy as np, plotly.graph_objects as go, streamlit as st
xy = np.load({xy!r})
st.plotly_chart(go.Figure(go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers")))
"""
EMPTY = """
import streamlit as st
st.write("empty")
"""


def _load_time(b, url: str, drawn: str | None) -> tuple[float, float]:
    """(wall seconds from navigation to drawn, the page's main-thread busy seconds)."""
    page = b.new_page(viewport={"width": 1400, "height": 1000})
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    t0 = time.perf_counter()
    page.goto(url)
    if drawn:
        page.wait_for_function(drawn, timeout=120_000, polling=50)
    else:
        page.get_by_text("empty").wait_for(timeout=60_000)
    dt = time.perf_counter() - t0
    busy = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}.get("TaskDuration", float("nan"))
    page.close()
    return dt, busy


@pytest.mark.slow
def test_map_load_time_at_35k(tmp_path):
    """Three servers up at once; the pages are loaded in turn, round after round, so a busy
    machine slows all three alike; medians are compared."""
    ART.mkdir(exist_ok=True)
    root = tmp_path / "runs"
    run = fake_run(root / "big", 35_000, seed=1)
    import json

    xy_file = run / json.loads((run / "analysis" / "maps.json").read_text())[0]["file"]
    (tmp_path / "bare.py").write_text(BARE.format(xy=str(xy_file)))
    (tmp_path / "empty.py").write_text(EMPTY)
    rounds = 10
    with browser() as b, \
            streamlit_server(tmp_path / "empty.py", {}, ART / "speed-empty.log") as u_empty, \
            streamlit_server(tmp_path / "bare.py", {}, ART / "speed-bare.log") as u_bare, \
            streamlit_server(ROOT / "explorer" / "app.py", {"SUBCLASS_EXPLORER_RUNS": str(root)},
                             ART / "speed-explorer.log") as u_app:
        targets = {"empty page": (u_empty, None), "bare st.plotly_chart, 35k Scattergl": (u_bare, PLOT_DRAWN),
                   "explorer map, 35k": (u_app + "/map", PLOT_DRAWN)}
        res: dict[str, list[float]] = {k: [] for k in targets}
        busy: dict[str, list[float]] = {k: [] for k in targets}
        for i in range(rounds + 1):  # round 0 warms servers and caches
            for k, (url, drawn) in targets.items():
                dt, cpu = _load_time(b, url, drawn)
                if i:
                    res[k].append(dt)
                    busy[k].append(cpu)
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(u_app + "/map")
        page.wait_for_function(PLOT_DRAWN, timeout=120_000)
        settle(page)
        page.screenshot(path=str(ART / "speed-map-35k.png"))
    med = {k: statistics.median(v) for k, v in res.items()}
    lines = [f"{k}: median {med[k]:.2f} s (min {min(v):.2f}; {', '.join(f'{x:.2f}' for x in v)}); "
             f"main thread busy median {statistics.median(busy[k]):.2f} s" for k, v in res.items()]
    lines.append(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    (ART / "speed-browser.txt").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    assert med["explorer map, 35k"] <= med["bare st.plotly_chart, 35k Scattergl"] + 0.5


def test_a_job_outliving_its_server_says_so(tmp_path, pipeline_run_dir):
    """A job started before this server: the app says it kept running and how to stop it; when the
    server stops with a job still running, its terminal says so (with the kill command)."""
    from explorer import jobs

    root = tmp_path / "runs"
    shutil.copytree(pipeline_run_dir, root / "fixture")
    jobs.start(root, "train", root / "slow", [[sys.executable, "-c", "import time; time.sleep(120)"]], title="a slow job")
    log = ART / "browser-outliving.log"
    ART.mkdir(exist_ok=True)
    try:
        with streamlit_server(ROOT / "explorer" / "app.py", {"SUBCLASS_EXPLORER_RUNS": str(root)}, log) as url, \
                browser() as b:
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url + "/overview")
            page.get_by_text("kept running on its own").wait_for(timeout=60_000)
        text = log.read_text()
        job = jobs.current(root)
        assert job is not None and job.active  # the server is gone, the job is not
        assert "keeps running after this server stops" in text and f"kill -TERM -{job.pid}" in text
    finally:
        jobs.cancel(root, force=True)
        jobs.wait(root, timeout=30)


@pytest.mark.slow
def test_first_launch_opens_a_preview_within_a_minute(tmp_path):
    """Issue 14 item 7: a fresh machine (empty runs folder, the default demo, no overrides). Timed from
    the moment ``streamlit run`` starts to the preview run's overview drawn in the browser (then its
    map); the full demo must still be building when the preview opens (it replaces it later). The
    seconds and the load average go to test-artifacts/first-view.txt and the output."""
    from explorer import jobs

    ART.mkdir(exist_ok=True)
    root = tmp_path / "runs"
    env = {"SUBCLASS_EXPLORER_RUNS": str(root)}
    for k in ("SUBCLASS_EXPLORER_DEMO_SPEC", "SUBCLASS_EXPLORER_DEMO_EPOCHS", "SUBCLASS_EXPLORER_DEMO_PREVIEW"):
        os.environ.pop(k, None)
    load0 = os.getloadavg()
    t0, wall0 = time.perf_counter(), time.time()
    try:
        with streamlit_server(ROOT / "explorer" / "app.py", env, ART / "browser-first-view.log") as url, \
                browser() as b:
            t_server = time.perf_counter() - t0
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url)
            page.get_by_text("quick preview").first.wait_for(timeout=30_000)     # the welcome page says so
            page.get_by_text("Run demo-preview").wait_for(timeout=170_000)        # it opened by itself
            page.wait_for_function(CHART_DRAWN, timeout=60_000)
            t_first = time.perf_counter() - t0
            job = jobs.current(root)
            assert job is not None and job.active and job.kind == "demo"          # the full demo goes on
            assert page.get_by_text("This is a quick preview of the demo").count() >= 1
            shot(page, "first-view")
            page.goto(url + "/map?run=demo-preview")
            page.wait_for_function(PLOT_DRAWN, timeout=60_000)
            t_map = time.perf_counter() - t0
            load1 = os.getloadavg()
            from pipeline.progress import read
            ready = next(e.time for e in read(root / "demo-preview") if e.event == "analysed") - wall0
        host = urlsplit(url).hostname
        assert all(urlsplit(r).hostname in (host, "localhost", "127.0.0.1") for r in requests if r.startswith("http"))
    finally:
        jobs.cancel(root, force=True)
        jobs.wait(root, timeout=30)
    lines = [f"server up {t_server:.1f} s; preview analysed {ready:.1f} s; its overview drawn {t_first:.1f} s; "
             f"its map drawn {t_map:.1f} s after `streamlit run` started",
             f"load average (1 min) {load0[0]:.2f} at the start, {load1[0]:.2f} at the first view, "
             f"on {os.cpu_count()} cores"]
    (ART / "first-view.txt").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    assert t_first < 170
