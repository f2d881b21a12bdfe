"""PNG screenshots of the Prefect and MLflow UIs of a running `make stack`, for docs/.

Drives headless Chromium over the DevTools protocol (so first-visit pop-ups can be closed
before the shot): `.venv/bin/python scripts/screenshots.py [--out docs]`. Needs `chromium`
on PATH and the stack's URLs (STACK_PREFECT_PORT, STACK_MLFLOW_PORT as in stack.sh).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

PREFECT = f"http://127.0.0.1:{os.environ.get('STACK_PREFECT_PORT', '4200')}"
MLFLOW = f"http://127.0.0.1:{os.environ.get('STACK_MLFLOW_PORT', '5000')}"

# Close pop-ups and side panels a first visit shows (MLflow 3's "new registry UI" dialog,
# its assistant panel and tips), and pick MLflow's classic "Model training" view.
TIDY = """
(() => {
  const clickText = (label) => {
    for (const el of document.querySelectorAll('button, [role="button"], label, span')) {
      if (el.textContent.trim() === label) { el.click(); return true; }
    }
    return false;
  };
  clickText('Model training');
  clickText('Got it');
  for (const el of document.querySelectorAll('[aria-label="Close"], [aria-label="close"]')) {
    el.click();
  }
  return true;
})()
"""


class Browser:
    def __init__(self, width: int, height: int) -> None:
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            raise SystemExit("chromium is not installed (apt-get install chromium)")
        self.profile = tempfile.mkdtemp(prefix="recolab-chromium-")
        self.process = subprocess.Popen(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--window-size={width},{height}",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.profile, "DevToolsActivePort")
        for _ in range(100):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.ids = itertools.count(1)
        self.call("Page.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                result: dict[str, Any] = message.get("result", {})
                return result

    def shot(self, url: str, out: Path, settle_s: float = 6.0) -> None:
        self.call("Page.navigate", {"url": url})
        time.sleep(settle_s)
        for _ in range(2):  # a closed dialog can reveal a tip
            self.call("Runtime.evaluate", {"expression": TIDY})
            time.sleep(1.5)
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        out.write_bytes(base64.b64decode(data))
        print(f"{out} ({out.stat().st_size // 1024} KB) <- {url}")

    def close(self) -> None:
        self.ws.close()
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pipeline = _get(f"{PREFECT}/api/deployments/name/pipeline/recolab")
    experiments = _get(f"{MLFLOW}/api/2.0/mlflow/experiments/search?max_results=10")
    experiment = next(e for e in experiments["experiments"] if e["name"] != "Default")
    browser = Browser(args.width, args.height)
    try:
        browser.shot(f"{PREFECT}/deployments", args.out / "prefect-deployments.png")
        browser.shot(
            f"{PREFECT}/deployments/deployment/{pipeline['id']}",
            args.out / "prefect-pipeline-deployment.png",
        )
        browser.shot(
            f"{MLFLOW}/#/experiments/{experiment['experiment_id']}/runs",
            args.out / "mlflow-runs.png",
        )
        browser.shot(f"{MLFLOW}/#/models/recolab-neumf", args.out / "mlflow-model.png")
    finally:
        browser.close()


if __name__ == "__main__":
    main()
