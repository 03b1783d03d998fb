"""A real headless browser for page checks: Chromium driven over the DevTools protocol.

What a static check of HTML cannot see: a script that throws, a console error, a resource that fails to load, an
image whose bytes do not decode. `Browser().open(url)` loads a page and records all of them; `Page.broken_images()`
lists the images that did not load (`complete && naturalWidth > 0` is false after every image settled).

Chromium is Debian's `chromium`; `chromium_path()` installs it with apt when the tests run as root, and otherwise
skips the test with the reason (never silently). Pages are served from a loopback HTTP server (`serve`), as a
person's browser would fetch them, so a missing file shows as a failed load.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--remote-debugging-port=0"]
TIMEOUT = 30.0
NAMED_KEYS = {"Enter": (13, "\r"), "Escape": (27, "")}  # key -> (virtual key code, text it types)


def chromium_path() -> str:
    """The Chromium binary; installed with apt if missing and possible, else the test is skipped with the reason."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if not shutil.which("apt-get"):
        pytest.skip("no chromium and no apt-get to install it: install Chromium to run the browser checks")
    if os.geteuid() != 0:
        pytest.skip("no chromium, and installing it needs root: run `apt-get install -y chromium`")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"chromium could not be installed with apt-get: {done.stderr.strip()[-300:]}")
    return shutil.which("chromium") or pytest.skip("apt-get installed chromium but it is not on PATH")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        """Every page served over HTTP makes the browser ask for /favicon.ico, which a page opened from disk never
        does: answer it with "no content" so that only the page's own loads can fail."""
        if self.path == "/favicon.ico":
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args) -> None:  # failed loads are reported by the browser, not on the test's stderr
        pass


@contextmanager
def serve(root: str | Path):
    """A loopback HTTP server for `root` in a thread; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Browser:
    """One headless Chromium process and its DevTools websocket; a context manager."""

    def __init__(self):
        from websockets.sync.client import connect

        # Chromium's helper processes may still write into the profile as it goes: its removal is best effort
        self._profile = tempfile.TemporaryDirectory(prefix="yume-data-chromium-", ignore_cleanup_errors=True)
        self._proc = subprocess.Popen([chromium_path(), *FLAGS, f"--user-data-dir={self._profile.name}",
                                       "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []  # Chromium's own stderr, for the message of a failed test
        self._ws = connect(self._endpoint(), max_size=None, open_timeout=TIMEOUT)
        self._next_id = 0
        self.events: dict[str, list[dict]] = {}  # per DevTools session

    def _endpoint(self) -> str:
        """Read stderr up to the DevTools URL, then keep draining it in a thread (a full pipe would block Chromium)."""
        deadline = time.monotonic() + TIMEOUT
        for line in self._proc.stderr:
            self.log.append(line)
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                threading.Thread(target=lambda: self.log.extend(self._proc.stderr), daemon=True).start()
                return found.group(1)
            if time.monotonic() > deadline:
                break
        raise RuntimeError("chromium did not start its DevTools endpoint:\n" + "".join(self.log[-20:]))

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self._ws.close()
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._profile.cleanup()

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait for its answer; events that arrive meanwhile are kept per session."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        while True:
            reply = self._receive(f"{method} answered")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _receive(self, waiting_for: str) -> dict:
        try:
            reply = json.loads(self._ws.recv(timeout=TIMEOUT))
        except TimeoutError:
            raise TimeoutError(f"no DevTools message in {TIMEOUT:.0f} s waiting for {waiting_for}") from None
        if "method" in reply:
            self.events.setdefault(reply.get("sessionId", ""), []).append(reply)
        return reply

    def open(self, url: str) -> Page:
        """A new tab at `url`, loaded (its load event fired), with console, exceptions and log recorded."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable", session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        page = Page(self, session, url)
        page.wait_loaded()
        return page


class Page:
    def __init__(self, browser: Browser, session: str, url: str):
        self.browser, self.session, self.url = browser, session, url

    def wait_loaded(self) -> None:
        """Until the document at this page's URL finished loading (the tab starts at about:blank)."""
        deadline = time.monotonic() + TIMEOUT
        while self.evaluate("[location.href, document.readyState]") != [self.url, "complete"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.url} did not finish loading in {TIMEOUT:.0f} s")
            time.sleep(0.05)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression (awaited when it is a promise)."""
        result = self.browser.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                        "returnByValue": True}, session=self.session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def press(self, key: str) -> None:
        """A key press as a person types it (keydown with the key's text, then keyup); `key` is a character or
        one of the named keys in NAMED_KEYS."""
        code, text = NAMED_KEYS.get(key, (None, key))
        for kind in ("keyDown", "keyUp"):
            self.browser.call("Input.dispatchKeyEvent", {"type": kind, "key": key, "text": text if kind == "keyDown"
                                                         else "", "windowsVirtualKeyCode": code or ord(key.upper())},
                              session=self.session)

    def broken_images(self) -> list[str]:
        """`src` (cut to 80 characters) of every image that is not loaded once all images settled."""
        return self.evaluate("""(async () => {
            const images = Array.from(document.images);
            await Promise.all(images.map((img) => img.complete ? null :
                new Promise((done) => { img.addEventListener("load", done); img.addEventListener("error", done); })));
            return images.filter((img) => !(img.complete && img.naturalWidth > 0))
                         .map((img) => (img.getAttribute("src") || "").slice(0, 80));
        })()""")

    def image_count(self) -> int:
        return self.evaluate("document.images.length")

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error/assert calls and error log entries (failed loads) so far."""
        self.evaluate("0")  # a round trip: events the page sent before it are in
        out = []
        for event in self.browser.events.get(self.session, []):
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                out.append(f"exception: {(details.get('exception') or {}).get('description') or details['text']}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                out.append(f"console.{params['type']}: " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                out.append(f"log: {entry['text']} {entry.get('url', '')}".strip())
        return out
