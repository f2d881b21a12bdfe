"""`wrk` for the serving benchmark: found or installed, pinned to a core, a Lua script that
makes each request's body, and its latency distribution and status counts read back.

The Lua script counts 2xx, 4xx and 5xx per thread in `response` and sums them in `done`
(threads are separate Lua states), and prints one `WRK-RESULT {json}` line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

N_CHOICES = (5, 10, 15)  # `n` per request, at random (10 on average, as the floor answers)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pinned(core: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", core, *command]


def ensure_wrk() -> str:
    """The `wrk` executable; installed with apt-get when missing and allowed, else exit."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr, flush=True)
        quiet = {"stdout": subprocess.DEVNULL, "check": False}
        subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet)  # type: ignore[call-overload]
        found = shutil.which("wrk")
        if not found:  # an old package index: refresh it once
            subprocess.run(["apt-get", "update"], **quiet)  # type: ignore[call-overload]
            subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet)  # type: ignore[call-overload]
            found = shutil.which("wrk")
    if not found:
        sys.exit("this benchmark needs wrk: `sudo apt-get install -y wrk` (Debian/Ubuntu)")
    return found


LUA = r"""
local kind = "%(kind)s"
local users = {%(users)s}
local movies = {%(movies)s}
local ns = {%(ns)s}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local threads, next_id = {}, 1

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(id * 7919 + os.time())
  s2, s4, s5, cached = 0, 0, 0, 0
end

function request()
  local user = users[math.random(#users)]
  if kind == "ratings" then
    local body = string.format('{"user_id":%%d,"movie_id":%%d,"score":%%.1f}',
      user, movies[math.random(#movies)], math.random(1, 10) / 2)
    return wrk.format(nil, "/ratings", nil, body)
  end
  local refresh = kind == "recommend_uncached" and ',"force_refresh":true' or ""
  local body = string.format('{"user_id":%%d,"n":%%d%%s}', user, ns[math.random(#ns)], refresh)
  return wrk.format(nil, "/recommend", nil, body)
end

function response(status, headers, body)
  if status >= 500 then s5 = s5 + 1 elseif status >= 400 then s4 = s4 + 1 else s2 = s2 + 1 end
  if kind == "recommend_cached" and body:find('"cached":true', 1, true) then
    cached = cached + 1
  end
end

function done(summary, latency, requests)
  local t2, t4, t5, tc = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    t2 = t2 + t:get("s2"); t4 = t4 + t:get("s4"); t5 = t5 + t:get("s5")
    tc = tc + t:get("cached")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK-RESULT {"requests":%%d,"duration_us":%%d,"2xx":%%d,"4xx":%%d,"5xx":%%d,' ..
    '"cached_answers":%%d,"socket_errors":{"connect":%%d,"read":%%d,"write":%%d,' ..
    '"timeout":%%d},"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d,"mean_us":%%.1f}\n',
    summary.requests, summary.duration, t2, t4, t5, tc, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def lua_script(folder: Path, kind: str, users: list[int], movies: list[int], token: str) -> Path:
    path = folder / f"{kind}.lua"
    path.write_text(
        LUA
        % {
            "kind": kind,
            "users": ",".join(map(str, users)),
            "movies": ",".join(map(str, movies)),
            "ns": ",".join(map(str, N_CHOICES)),
            "token": token,
        }
    )
    return path


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    concurrency: int,
    duration_s: int,
    warmup_s: int,
    client_core: str = "1",
) -> dict[str, Any]:
    """A warm-up run (discarded), then the measured one; wrk pinned to the client core."""

    def once(seconds: int) -> dict[str, Any]:
        command = [wrk, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s"]
        out = subprocess.run(
            pinned(client_core, [*command, "-s", str(script), url]),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        line = next(x for x in out.splitlines() if x.startswith("WRK-RESULT "))
        result: dict[str, Any] = json.loads(line.removeprefix("WRK-RESULT "))
        return result

    if warmup_s > 0:
        once(warmup_s)
    load_before = loadavg()
    raw = once(duration_s)
    wall_s = raw["duration_us"] / 1e6
    return {
        "concurrency": concurrency,
        "requests": raw["requests"],
        "status": {"2xx": raw["2xx"], "4xx": raw["4xx"], "5xx": raw["5xx"]},
        "socket_errors": raw["socket_errors"],
        "cached_answers": raw["cached_answers"],
        "wall_s": round(wall_s, 3),
        "requests_per_s": round(raw["2xx"] / wall_s, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
