"""Open a local HTML file in Debian's headless Chromium and report what a reader would see.

Talks the DevTools protocol over `--remote-debugging-pipe` (fds 3 and 4), so no port is opened
and nothing but the browser and this process take part. Collects console messages, uncaught
exceptions, log entries and every network request, takes a full-page screenshot, and returns
the page's visible text.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@dataclass
class PageReport:
    text: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    width: int = 0
    height: int = 0


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int) -> None:
        self.write_fd, self.read_fd = write_fd, read_fd
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> int:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        return self.next_id

    def _read_one(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return dict(json.loads(raw))

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 30) -> dict[str, Any]:
        want = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_one(deadline)
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 30) -> dict[str, Any]:
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_one(deadline)
            if msg.get("method") == method:
                return msg
            self.events.append(msg)


def render(html: Path, screenshot: Path, timeout: float = 60) -> PageReport:
    """Load `html` (a file) in headless Chromium; screenshot it; return what was seen."""
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    profile = tempfile.mkdtemp(prefix="avm-chromium-")

    def child_fds() -> None:
        # Move the pipe ends to fds 3 and 4 where --remote-debugging-pipe expects them.
        a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.dup2(a, 3)  # dup2 makes them inheritable
        os.dup2(b, 4)

    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--remote-debugging-pipe",
            f"--user-data-dir={profile}", "about:blank"]
    proc = subprocess.Popen(args, preexec_fn=child_fds,  # noqa: PLW1509 - fds 3/4 for CDP
                            pass_fds=(3, 4),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    pipe = _Pipe(to_chrome_w, from_chrome_r)
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
        session = pipe.call("Target.attachToTarget",
                            {"targetId": target["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.call(f"{domain}.enable", session=session)
        pipe.call("Page.navigate", {"url": html.resolve().as_uri()}, session=session)
        pipe.wait_for("Page.loadEventFired", timeout=timeout)
        text = pipe.call("Runtime.evaluate", {"expression": "document.body.innerText",
                                              "returnByValue": True},
                         session=session)["result"].get("value", "")
        metrics = pipe.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = pipe.call("Page.captureScreenshot", {"format": "png",
                                                    "captureBeyondViewport": True},
                         session=session, timeout=timeout)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        report = PageReport(text=str(text), screenshot=screenshot,
                            width=int(metrics["width"]), height=int(metrics["height"]))
        for ev in pipe.events:
            method, params = ev.get("method", ""), ev.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error",
                                                                                 "assert"):
                report.console_errors.append(json.dumps(params.get("args", []))[:300])
            elif method == "Runtime.exceptionThrown":
                report.console_errors.append(str(params.get("exceptionDetails"))[:300])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                report.console_errors.append(str(params["entry"].get("text"))[:300])
            elif method == "Network.requestWillBeSent":
                report.requests.append(str(params.get("request", {}).get("url")))
        pipe.call("Browser.close")
        return report
    finally:
        os.close(to_chrome_w)
        os.close(from_chrome_r)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def external_requests(report: PageReport, page: Path) -> list[str]:
    """Requests other than the page itself: a self-contained page makes none."""
    own = page.resolve().as_uri()
    return [u for u in report.requests if u != own and not u.startswith("data:")]


def main(argv: list[str]) -> int:
    """`python -m tests.browser PAGE.html SHOT.png`: render, screenshot, report problems."""
    page, shot = Path(argv[0]), Path(argv[1])
    seen = render(page, shot)
    fetched = external_requests(seen, page)
    for problem in seen.console_errors + [f"fetched {u}" for u in fetched]:
        print(f"{page}: {problem}", file=sys.stderr)
    print(f"{page}: rendered in headless Chromium, {seen.width}x{seen.height} px, "
          f"{len(seen.console_errors)} console error(s), {len(fetched)} fetch(es); "
          f"screenshot {shot}")
    return 1 if seen.console_errors or fetched else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
