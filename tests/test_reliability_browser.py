"""Injection in a real browser, and the server's exposure (issue 6, part 5).

``test_hostile_names_show_as_text`` starts ``streamlit run explorer/app.py`` (from the repository
root, so with its ``.streamlit/config.toml``) on a run whose class names, labels, run folder name,
sub-class names and tags are HTML/Markdown/JS injections, opens every page in Debian's chromium
through Playwright and asserts that no injected script ran (``window.__xss`` stays unset, no dialog
opened, no injected element exists in the DOM) and that the literal text is visible.

The same started server is checked for exposure: it listens on loopback addresses only (not on the
machine's other addresses), and a state-changing request (an upload) without the XSRF token gets 403;
``test_config_binds_localhost_with_xsrf_on`` reads the settings from ``.streamlit/config.toml``.

Skipped cleanly when /usr/bin/chromium (or Playwright) is missing.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.browser]
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed")

# Each one sets window.__xss (or opens a dialog) if it is ever interpreted as HTML / JS / a link.
INJECTIONS = [
    "<img src=x onerror=window.__xss=1>",
    "<script>window.__xss=2</script>",
    "<svg onload=window.__xss=3>",
    '<a href="javascript:window.__xss=4">a4</a>',
    "[a5](javascript:window.__xss=5)",
    "<iframe src=javascript:window.__xss=6>",
    "<img src=x onerror=alert(7)>",
    "<b>bold8</b> :red[red9] $x^2$",
]
SUBCLASS_NAME = "<img src=x onerror=window.__xss=10>"
TAG = "<script>alert(11)</script>"
RUN_NAME = "<img src=x onerror=window.__xss=12>"


def hostile_run(root: Path, monkeypatch) -> Path:
    import explorer_fixtures
    from explorer.review import ReviewStore

    monkeypatch.setattr(explorer_fixtures, "CLASSES", list(INJECTIONS))
    run = explorer_fixtures.fake_run(root / RUN_NAME, 400, seed=3)
    store = ReviewStore(run)
    for k in range(24):
        store.name_subclass(k, SUBCLASS_NAME)
    store.decide("fake-000001", "relabel", proposed_label=INJECTIONS[0])
    store.tag(["fake-000001", "fake-000002"], TAG)
    store.flag("fake-000003")
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(env_extra: dict, log: Path, *extra_args: str):
    port = free_port()
    env = dict(os.environ, **env_extra, PYTHONPATH=str(ROOT))
    with open(log, "w") as fh:
        # no --server.address: what the repository's .streamlit/config.toml says applies
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "explorer/app.py", "--server.port", str(port),
                                 *extra_args], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        url = f"http://localhost:{port}"
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"streamlit did not come up: {log.read_text()[-2000:]}")
            time.sleep(0.25)
        yield url, port, proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


def settle(page, timeout=60_000) -> None:
    """Until the page's script run has painted its title and finished."""
    page.wait_for_selector('[data-testid="stAppViewContainer"]', timeout=timeout)
    page.wait_for_function("""() => document.querySelector(
                                      '[data-testid="stMain"] :is(h1, .js-plotly-plot, [data-testid="stAlert"])')
                                    && !document.querySelector('[data-testid="stStatusWidget"]')""", timeout=timeout)
    # then until the page stops changing (charts and galleries paint after the script run)
    last, stable, t_end = None, 0, time.time() + 30
    while stable < 3 and time.time() < t_end:
        page.wait_for_timeout(500)
        now = (len(page.inner_text("body")), page.evaluate("document.querySelectorAll('*').length"))
        stable = stable + 1 if now == last else 0
        last = now


INJECTED_DOM = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('img[src="x"], svg[onload], iframe[src^="javascript"], a[href^="javascript"], script')) {
    if (el.tagName === 'SCRIPT' && !el.textContent.includes('__xss')) continue;
    bad.push(el.outerHTML.slice(0, 120));
  }
  return bad;
}"""


@needs_chromium
def test_hostile_names_show_as_text(tmp_path, monkeypatch):
    pw = pytest.importorskip("playwright.sync_api")
    root = tmp_path / "runs"
    hostile_run(root, monkeypatch)
    log = tmp_path / "streamlit.log"
    report = {}
    with server({"SUBCLASS_EXPLORER_RUNS": str(root), "SUBCLASS_EXPLORER_DATA_ROOTS": str(tmp_path)}, log) as (url, port, _), \
            pw.sync_playwright() as p:
        check_exposure(port)
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = b.new_page(viewport={"width": 1400, "height": 1600})
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            for view in ("", "map", "subclasses", "confusion", "mislabels", "summary", "similar"):
                page.goto(f"{url}/{view}")
                settle(page)
                text = page.inner_text("body")
                report[view or "overview"] = {
                    "xss": page.evaluate("() => window.__xss === undefined ? null : window.__xss"),
                    "dom": page.evaluate(INJECTED_DOM),
                    "visible": [s for s in INJECTIONS + [SUBCLASS_NAME, RUN_NAME] if s in text],
                }
        finally:
            b.close()
    print("\n" + json.dumps(report, indent=1))
    assert not dialogs, dialogs
    for view, r in report.items():
        assert r["xss"] is None, (view, r)
        assert not r["dom"], (view, r["dom"])
    seen = set().union(*(set(r["visible"]) for r in report.values()))
    # the literal strings are on screen as text: every class name somewhere, the sub-class name and the run name
    assert set(INJECTIONS) | {SUBCLASS_NAME, RUN_NAME} <= seen, set(INJECTIONS) | {SUBCLASS_NAME, RUN_NAME} - seen
    assert "Traceback" not in log.read_text()


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) that listen on ``port``."""
    out = []
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(f).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            addr, state = parts[1], parts[3]
            if state == "0A" and int(addr.rsplit(":", 1)[1], 16) == port:
                out.append(addr.rsplit(":", 1)[0])
    return out


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}   # 127.0.0.1 and ::1 as the kernel writes them


def test_config_binds_localhost_with_xsrf_on():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] in ("localhost", "127.0.0.1")
    assert cfg["server"]["enableXsrfProtection"] is True
    assert cfg["server"].get("enableCORS", True) is True


def check_exposure(port: int) -> None:
    """The started server listens on loopback only and refuses an upload without the XSRF token."""
    addrs = _listening(port)
    assert addrs and set(addrs) <= LOOPBACK, addrs
    for ip in _other_addresses():   # not reachable on the machine's other addresses
        with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
            s.settimeout(2)
            assert s.connect_ex((ip, port)) != 0, f"reachable on {ip}:{port}"
    conn = http.client.HTTPConnection("localhost", port, timeout=10)
    body = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\nxx\r\n--b--\r\n"
    conn.request("PUT", "/_stcore/upload_file/some-session/some-file", body=body,
                 headers={"Content-Type": "multipart/form-data; boundary=b"})
    r = conn.getresponse()
    text = r.read().decode(errors="replace")
    assert r.status == 403 and "xsrf" in text.lower(), (r.status, text[:300])


def _other_addresses() -> list[str]:
    """This machine's non-loopback addresses (``hostname -I``; none if it is missing)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    return [a for a in out if not a.startswith("127.") and a != "::1"]
