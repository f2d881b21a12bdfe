"""PNG screenshots of a running `make stack` for the README (docs/).

Takes the Prefect UI (the deployments, `pipeline/recolab`, the latest `ingest` artefact), the
MLflow UI (the training runs in the "Model training" view, the registered model), the
service's OpenAPI page, and copies the latest training run's learning-curve artefact. Drives
headless Chromium over the DevTools protocol (so first-visit pop-ups can be closed before the
shot): `.venv/bin/python scripts/screenshots.py [--out docs]`. Needs `chromium` on PATH, the
stack's URLs (STACK_PREFECT_PORT, STACK_MLFLOW_PORT, STACK_SERVE_PORT as in stack.sh) and a
finished pipeline (trigger `pipeline/recolab` first, and wait for its champion).
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
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

PREFECT = f"http://127.0.0.1:{os.environ.get('STACK_PREFECT_PORT', '4200')}"
MLFLOW = f"http://127.0.0.1:{os.environ.get('STACK_MLFLOW_PORT', '5000')}"
SERVE = f"http://127.0.0.1:{os.environ.get('STACK_SERVE_PORT', '3000')}"
MODEL = "recolab-neumf"
LEARNING_CURVE = "learning_curve/learning_curve.png"
ONLINE, ONLINE_PLOT = "recolab-online", "online/hit_rate.png"  # the online report runs
# MLflow 3 opens an experiment in its GenAI view unless the URL asks for the training one
ML_VIEW = "?workflowType=machine_learning"

# Close pop-ups and side panels a first visit shows (MLflow 3's "new registry UI" dialog,
# its assistant panel and tips).
TIDY = """
(() => {
  for (const el of document.querySelectorAll('button, [role="button"]')) {
    if (el.textContent.trim() === 'Got it') el.click();
  }
  for (const el of document.querySelectorAll('[aria-label="Close"], [aria-label="close"]')) {
    el.click();
  }
  return true;
})()
"""

# Open POST /recommend on the service's Swagger UI page (its example request and responses)
# through Swagger UI's own action (what its deep links call; a DOM click does not open it)
OPEN_RECOMMEND = """
(() => {
  window.ui.layoutActions.show(['operations', 'recommendations', 'recommend_recommend_post'], true);
  const route = document.getElementById('operations-recommendations-recommend_recommend_post');
  setTimeout(() => route.scrollIntoView(), 500);
  return true;
})()
"""


class Browser:
    def __init__(self, width: int, height: int) -> None:
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            raise SystemExit("chromium is not installed (apt-get install chromium)")
        self.width, self.height = width, height
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
        self.resize(height)

    def resize(self, height: int) -> None:
        """Set the page's viewport height (the shot's height; the width stays)."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def shot(
        self,
        url: str,
        out: Path,
        height: int | None = None,
        script: str | None = None,
        settle_s: float = 6.0,
    ) -> None:
        """Open `url` in a viewport `height` pixels high (the default's, if None), run
        `script` (JavaScript that readies the page, if any) and save the shot."""
        self.resize(height or self.height)
        self.call("Page.navigate", {"url": url})
        time.sleep(settle_s)
        for expression in (TIDY, TIDY, script):  # a closed dialog can reveal a tip
            if expression is not None:
                self.call("Runtime.evaluate", {"expression": expression})
                time.sleep(1.5)
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        out.write_bytes(base64.b64decode(data))
        print(f"{out} ({out.stat().st_size // 1024} KB) <- {url}")

    def close(self) -> None:
        self.ws.close()
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


def _open(url: str, body: dict[str, Any] | None = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        payload: bytes = response.read()
        return payload


def _get(url: str, body: dict[str, Any] | None = None) -> Any:
    return json.loads(_open(url, body))


def _latest_run(experiment_id: str) -> str:
    """The id of the experiment's latest finished run (a training run of pipeline/recolab)."""
    runs = _get(
        f"{MLFLOW}/api/2.0/mlflow/runs/search",
        {
            "experiment_ids": [experiment_id],
            "filter": "attributes.status = 'FINISHED'",
            "order_by": ["attributes.start_time DESC"],
            "max_results": 1,
        },
    ).get("runs")
    if not runs:
        raise SystemExit(f"experiment {experiment_id} has no finished run: run pipeline/recolab")
    run_id: str = runs[0]["info"]["run_id"]
    return run_id


def online_report(browser: Browser, out: Path) -> None:
    """The latest online report run (experiment `recolab-online`): its plot, in MLflow."""
    found = _get(f"{MLFLOW}/api/2.0/mlflow/experiments/get-by-name?experiment_name={ONLINE}")
    experiment_id = found["experiment"]["experiment_id"]
    run_id = _latest_run(experiment_id)
    browser.shot(
        f"{MLFLOW}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{ONLINE_PLOT}{ML_VIEW}",
        out / "mlflow-online-report.png",
        height=900,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument(
        "--online-only",
        action="store_true",
        help="only the latest online report in MLflow (e.g. after scripts/online_demo.py)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.online_only:
        browser = Browser(args.width, args.height)
        try:
            online_report(browser, args.out)
        finally:
            browser.close()
        return
    pipeline = _get(f"{PREFECT}/api/deployments/name/pipeline/recolab")
    ingest = _get(
        f"{PREFECT}/api/artifacts/filter",
        {"artifacts": {"key": {"like_": "ingest-"}}, "sort": "CREATED_DESC", "limit": 1},
    )
    experiments = _get(f"{MLFLOW}/api/2.0/mlflow/experiments/search?max_results=10")
    experiment = next(e for e in experiments["experiments"] if e["name"] != "Default")
    run_id = _latest_run(experiment["experiment_id"])
    query = urllib.parse.urlencode({"path": LEARNING_CURVE, "run_uuid": run_id})
    curve = args.out / "learning-curve.png"
    curve.write_bytes(_open(f"{MLFLOW}/get-artifact?{query}"))
    print(f"{curve} ({curve.stat().st_size // 1024} KB) <- run {run_id}: {LEARNING_CURVE}")
    browser = Browser(args.width, args.height)
    try:
        browser.shot(f"{PREFECT}/deployments", args.out / "prefect-deployments.png")
        browser.shot(
            f"{PREFECT}/deployments/deployment/{pipeline['id']}",
            args.out / "prefect-pipeline-deployment.png",
        )
        if ingest:
            browser.shot(
                f"{PREFECT}/artifacts/artifact/{ingest[0]['id']}",
                args.out / "prefect-ingest-artifact.png",
            )
        browser.shot(
            f"{MLFLOW}/#/experiments/{experiment['experiment_id']}/runs{ML_VIEW}",
            args.out / "mlflow-runs.png",
        )
        # tall enough for two versions with their promotion tags, and every route group
        browser.shot(
            f"{MLFLOW}/#/models/{MODEL}{ML_VIEW}", args.out / "mlflow-model.png", height=1300
        )
        try:
            online_report(browser, args.out)
        except (urllib.error.HTTPError, StopIteration, SystemExit) as exc:
            print(f"no online report to show yet ({exc}): run an experiment's report first")
        browser.shot(f"{SERVE}/", args.out / "service-openapi.png", height=1300)
        browser.shot(
            f"{SERVE}/",
            args.out / "service-openapi-recommend.png",
            height=1300,
            script=OPEN_RECOMMEND,
        )
    finally:
        browser.close()


if __name__ == "__main__":
    main()
