"""A local HTTP server (127.0.0.1) answering like the real carbon APIs, in their documented
schemas: GB Carbon Intensity, Electricity Maps v3 and WattTime v3 (login + bearer token).

``mode`` switches every endpoint to a failure: ``error`` (HTTP 500 with the API's error
body), ``unauthorized`` (401), ``slow`` (answers after ``delay`` seconds), ``garbage``
(not JSON), ``empty`` (valid but no data points).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TOKEN = "test-token"
WT_USER, WT_PASSWORD = "alice", "s3cret"


def _z(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


class CarbonAPI:
    def __init__(self, intensity: Callable[[datetime], float], now: Callable[[], datetime]) -> None:
        self.intensity = intensity
        self.now = now
        self.mode = "ok"
        self.delay = 3.0
        self.calls: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                api.calls.append(self.path)
                status, body = api.answer(self)
                if api.mode == "slow":
                    time.sleep(api.delay)
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CarbonAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _half_hours(self, start: datetime, hours: float) -> list[datetime]:
        t0 = start.replace(minute=0 if start.minute < 30 else 30, second=0, microsecond=0)
        return [t0 + timedelta(minutes=30 * i) for i in range(int(hours * 2))]

    def answer(self, h: BaseHTTPRequestHandler) -> tuple[int, object]:
        u = urlparse(h.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        parts = [p for p in u.path.split("/") if p]
        if self.mode == "garbage":
            return 200, b"<html>maintenance</html>"
        if self.mode == "unauthorized":
            return 401, {"error": {"code": "401 Unauthorized", "message": "bad credentials"}}
        if self.mode == "error":
            if parts and parts[0] in ("intensity", "regional"):
                return 500, {"error": {"code": "500 Internal Server Error", "message": "Internal Server Error"}}
            return 500, {"status": "error", "message": "internal error"}
        empty = self.mode == "empty"
        # GB national: /intensity/{from}/fw48h ; regional: /regional/intensity/{from}/fw48h/regionid/{id}
        if parts[:1] == ["intensity"] or parts[:2] == ["regional", "intensity"]:
            regional = parts[0] == "regional"
            frm = datetime.fromisoformat(parts[2 if regional else 1].replace("Z", "+00:00"))
            rows = []
            for t in ([] if empty else self._half_hours(frm, 48)):
                v = round(self.intensity(t))
                it = {"forecast": v, "index": "moderate"}
                if not regional:
                    it["actual"] = v if t + timedelta(minutes=30) <= self.now() else None
                rows.append({"from": _z(t), "to": _z(t + timedelta(minutes=30)), "intensity": it})
            if regional:
                return 200, {"data": [{"regionid": int(parts[-1]), "dnoregion": "UKPN London",
                                       "shortname": "London", "data": rows}]}
            return 200, {"data": rows}
        # Electricity Maps v3
        if parts[:2] == ["v3", "carbon-intensity"]:
            if h.headers.get("auth-token") != TOKEN:
                return 401, {"status": "error", "message": "Invalid authentication token"}
            kind = parts[2]
            now = self.now().replace(minute=0, second=0, microsecond=0)
            times = ([now - timedelta(hours=24 - i) for i in range(25)] if kind == "history"
                     else [now + timedelta(hours=i) for i in range(1, 73)])
            pts = [] if empty else [{"carbonIntensity": round(self.intensity(t)),
                                     "datetime": t.strftime("%Y-%m-%dT%H:%M:%S.000Z")} for t in times]
            return 200, {"zone": q.get("zone"), kind: pts, "updatedAt": self.now().isoformat()}
        # WattTime v3
        if parts == ["login"]:
            auth = h.headers.get("Authorization", "")
            ok = auth == "Basic " + base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode()
            return (200, {"token": TOKEN}) if ok else (403, {"error": "invalid credentials"})
        if parts[:1] == ["v3"] and parts[1] in ("forecast", "historical"):
            if h.headers.get("Authorization") != f"Bearer {TOKEN}":
                return 401, {"error": "unauthorized"}
            lb = 1 / 0.45359237
            if parts[1] == "forecast":
                times = [self.now().replace(second=0, microsecond=0) + timedelta(minutes=5 * i) for i in range(288)]
            else:
                start = datetime.fromisoformat(q["start"])
                end = datetime.fromisoformat(q["end"])
                times = [start + timedelta(minutes=5 * i) for i in range(int((end - start) / timedelta(minutes=5)))]
            data = [] if empty else [{"point_time": t.isoformat(), "value": self.intensity(t) * lb} for t in times]
            return 200, {"data": data, "meta": {"region": q.get("region"), "signal_type": q.get("signal_type"),
                                                "units": "lbs_co2_per_mwh", "data_point_period_seconds": 300,
                                                "generated_at": self.now().isoformat()}}
        return 404, {"error": "not found"}
