"""Headless Chromium driven over the DevTools protocol (CDP), for pages that must be used,
not just rendered: OHIF loads studies, is clicked, and is read and photographed.

A helper, not a test module. The recipe:

1. `Browser.launch()` starts Debian's `chromium` headless with `--remote-debugging-pipe`:
   CDP messages are NUL-terminated JSON on the child's fd 3 (to it) and fd 4 (from it), so
   no port and no websocket library are needed (what Playwright does). Software WebGL
   (SwiftShader) is allowed: OHIF's cornerstone3D renders with WebGL. The browser runs in
   its own session with a throwaway profile, and gets SIGTERM if this process dies.
2. A reader thread parses what Chromium writes: answers go to the caller waiting for that
   id, events (console messages, exceptions) are kept for error messages.
3. `browser.page(width, height)` opens a tab and attaches to it (flat sessions): `goto`,
   `evaluate` (JavaScript, awaited, by value), `wait_for` (poll an expression until truthy),
   `double_click`, `screenshot` (PNG).
4. `browser.close()` asks Chromium to close, then ends the process by its pid.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.chromium import SKIP_REASON, find_chromium

FLAGS = (
    "--headless",
    "--no-sandbox",  # needed when running as root (containers, CI)
    "--remote-debugging-pipe",
    "--use-angle=swiftshader",  # software WebGL: no GPU here
    "--enable-unsafe-swiftshader",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--mute-audio",
    "--disable-background-networking",
    "--disable-extensions",
    "--disable-features=Translate,MediaRouter",
)


_LOUD = ("error", "warning")


class CdpError(AssertionError):
    """Chromium answered a command with an error, or did not answer in time."""


def _child_fds(to_child: int, from_child: int) -> None:
    """In the child before exec: the pipe ends on fds 3 and 4, SIGTERM when we die."""
    read_end = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10)
    write_end = fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
    os.dup2(read_end, 3)  # dup2 clears close-on-exec: fds 3 and 4 reach Chromium
    os.dup2(write_end, 4)
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Browser:
    process: subprocess.Popen
    to_browser: int
    from_browser: int
    profile: Path
    events: list[dict] = field(default_factory=list)
    _answers: dict[int, dict] = field(default_factory=dict)
    _next_id: int = 0
    _lock: threading.Condition = field(default_factory=threading.Condition)

    @classmethod
    def launch(cls, width: int = 1280, height: int = 800) -> Browser:
        binary = find_chromium()
        assert binary is not None, SKIP_REASON
        profile = Path(tempfile.mkdtemp(prefix="chromium-cdp-"))
        to_child, to_browser = os.pipe()
        from_browser, from_child = os.pipe()
        process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,  # our own fds are not inheritable; 3 and 4 are dup2'd
            start_new_session=True,
            preexec_fn=lambda: _child_fds(to_child, from_child),
        )
        os.close(to_child)
        os.close(from_child)
        browser = cls(process, to_browser, from_browser, profile)
        threading.Thread(target=browser._read, name="cdp-reader", daemon=True).start()
        return browser

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self.from_browser, 1 << 20):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                with self._lock:
                    if "id" in message:
                        self._answers[message["id"]] = message
                    else:
                        self.events.append(message)
                    self._lock.notify_all()
        with self._lock:
            self._answers[-1] = {"error": {"message": "Chromium closed the pipe"}}
            self._lock.notify_all()

    def send(
        self, method: str, params: dict | None = None, session: str | None = None, timeout=60.0
    ) -> dict:
        """One CDP command; its result (CdpError on an error answer or after `timeout`)."""
        with self._lock:
            self._next_id += 1
            number = self._next_id
        message = {"id": number, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._lock:
            while number not in self._answers:
                if -1 in self._answers:
                    raise CdpError(f"{method}: Chromium closed the pipe")
                if not self._lock.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise CdpError(f"{method}: no answer in {timeout:.0f}s")
            answer = self._answers.pop(number)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error'].get('message')}")
        return answer.get("result", {})

    def page(self, width: int = 1280, height: int = 800) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, session["sessionId"])
        for domain in ("Page", "Runtime", "Log"):
            page.send(f"{domain}.enable")
        page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page

    def console(self) -> list[str]:
        """What pages logged as errors or warnings and the exceptions they threw."""
        lines = []
        for event in list(self.events):
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                lines.append(details.get("exception", {}).get("description", str(details)))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in _LOUD:
                words = (str(a.get("value", a.get("description", ""))) for a in params["args"])
                lines.append(" ".join(words))
        return lines

    def close(self) -> None:
        """Ask Chromium to close; SIGKILL its pid if it has not after 10 s."""
        with contextlib.suppress(CdpError):
            self.send("Browser.close", timeout=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        for fd in (self.to_browser, self.from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Page:
    browser: Browser
    session: str

    def send(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        return self.browser.send(method, params, self.session, timeout)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str, timeout: float = 60.0) -> object:
        """The value of a JavaScript expression (promises awaited), as JSON gives it."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description", details.get("text"))
            raise CdpError(f"page threw evaluating {expression[:80]!r}: {text}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120.0, what: str = "") -> object:
        """Poll `expression` until it is truthy (a throw, as mid-navigation, counts as not
        yet); its value. CdpError, with the page's text and console errors, after `timeout`."""
        deadline, threw = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except CdpError as exc:
                value, threw = None, str(exc)
            if value:
                return value
            time.sleep(0.5)
        text = self.evaluate("document.body ? document.body.innerText : ''") or ""
        errors = "\n".join([threw, *self.browser.console()[-15:]])
        raise CdpError(
            f"waited {timeout:.0f}s for {what or expression!r}; the page says:\n"
            f"{text[:2000]}\nerrors:\n{errors}"
        )

    def click(self, x: float, y: float, count: int = 1) -> None:
        """`count` left clicks at (x, y) CSS pixels: 2 is a double click."""
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for n in range(1, count + 1):
            for kind in ("mousePressed", "mouseReleased"):
                self.send(
                    "Input.dispatchMouseEvent",
                    {"type": kind, "x": x, "y": y, "button": "left", "clickCount": n},
                )

    def screenshot(self, png: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(base64.b64decode(data))
        return png
