"""Kaspersky Security Center as the list of record (issue 16): its hosts report read from CSV
and JSON as KSC exports them, reconciled with the inventory, and its Open API read with
Kaspersky's own client (KlAkOAPI) against a recorded exchange served on localhost."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from orchestrator.core.errors import UsageError
from orchestrator.core.ksc import KscHost, reconcile
from orchestrator.core.models import InventoryHost
from orchestrator.inputs import ksc, kscapi

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures/ksc"

CSV = (
    "Device;DNS name;IP address;Group;Application;Version;Last visible\r\n"
    "WS-0101;ws-0101.corp.example;10.10.1.1;Workstations;"
    "Kaspersky Endpoint Security for Windows;12.6.0.438;30.11.2026 08:12:44\r\n"
    "WS-0101;ws-0101.corp.example;10.10.1.1;Workstations;"
    "Kaspersky Security Center Network Agent;15.1.0.20748;30.11.2026 08:12:44\r\n"
    "srv-db-02;;10.10.2.2;Servers;Kaspersky Endpoint Security 12.1 for Linux;12.1.0.1297;"
    "29.11.2026 23:05:10\r\n"
    "PRINTER-7;;10.10.9.7;Unassigned devices;;;\r\n"
)


def test_a_csv_report_gives_one_host_per_device(tmp_path: Path) -> None:
    path = tmp_path / "hosts.csv"
    path.write_bytes(b"\xef\xbb\xbf" + CSV.encode())  # KSC writes a BOM
    hosts = ksc.read_report(path)
    assert [h.name for h in hosts] == ["WS-0101", "srv-db-02", "PRINTER-7"]
    ws = hosts[0]
    assert ws.dns_name == "ws-0101.corp.example" and ws.ip == "10.10.1.1"
    assert ws.products == (("Kaspersky Endpoint Security for Windows", "12.6.0.438"),
                           ("Kaspersky Security Center Network Agent", "15.1.0.20748"))
    assert ws.last_seen == 1796026364.0  # 2026-11-30 08:12:44 UTC
    assert hosts[2].kaspersky == () and hosts[2].last_seen is None


def test_a_json_report_and_utf16(tmp_path: Path) -> None:
    path = tmp_path / "hosts.json"
    rows = [{"KLHST_WKS_DN": "WS-0101", "KLHST_WKS_FQDN": "ws-0101.corp.example",
             "KLHST_WKS_IP_LONG": 168428033, "KLHST_WKS_LAST_VISIBLE": "2026-11-30T08:12:44Z",
             "products": [{"name": "Kaspersky Endpoint Security for Windows",
                           "version": "12.6.0.438"}]}]
    path.write_text(json.dumps({"hosts": rows}), encoding="utf-16")
    (host,) = ksc.read_report(path)
    assert (host.name, host.ip, host.dns_name) == ("WS-0101", "10.10.2.1",
                                                   "ws-0101.corp.example")
    assert host.kaspersky and host.last_seen == 1796026364.0


@pytest.mark.parametrize(("content", "message"), [
    ("Colour;Size\nred;2\n", "no column names the host"),
    ("[1, 2]", "a JSON KSC report is a list of hosts"),
    ("{\"hosts\": [", "not valid JSON"),
    ("Device\n", "lists no host"),
])
def test_a_bad_report_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UsageError, match=message) as caught:
        ksc.read_report(path)
    assert "\n" not in str(caught.value)
    with pytest.raises(UsageError, match="cannot read the KSC report"):
        ksc.read_report(tmp_path / "missing.csv")


def test_reconciliation_by_name_dns_name_or_address() -> None:
    inventory = (InventoryHost("ws-0101", ("workstations",)),
                 InventoryHost("db2", ("servers",), {"ansible_host": "10.10.2.2"}),
                 InventoryHost("web-9.corp.example", ("servers",)))
    listed = [KscHost("WS-0101", "ws-0101.corp.example", "10.10.1.1",
                      products=(("Kaspersky Endpoint Security for Windows", "12.6"),)),
              KscHost("srv-db-02", "", "10.10.2.2",
                      products=(("Kaspersky Endpoint Security 12.1 for Linux", "12.1"),)),
              KscHost("FIN-WS-044", "fin-ws-044.corp.example", "10.40.2.44",
                      products=(("Kaspersky Endpoint Security for Windows", "12.6"),)),
              KscHost("PRINTER-7", "", "10.10.9.7")]
    found = reconcile(inventory, listed)
    assert {n: e.name for n, e in found.matched.items()} == {"ws-0101": "WS-0101",
                                                             "db2": "srv-db-02"}
    assert [h.name for h in found.unknown] == ["FIN-WS-044"]  # KSC's, not the inventory's
    assert found.unmanaged == ["web-9.corp.example"]  # the inventory's, not KSC's
    assert [h.name for h in found.without_kaspersky] == ["PRINTER-7"]
    assert found.ambiguous == []


def test_reconciliation_never_guesses() -> None:
    """Full names first; a short name only where one inventory host has it; a second KSC
    entry for a matched host, or a short name two hosts share, is listed as ambiguous."""
    inventory = (InventoryHost("web1.a.example", ()), InventoryHost("web1.b.example", ()),
                 InventoryHost("db7.corp.example", ()))
    listed = [KscHost("web1", "web1.b.example"), KscHost("WEB1", "web1.a.example"),
              KscHost("web1", ""), KscHost("DB7"), KscHost("db7", "db7.corp.example")]
    found = reconcile(inventory, listed)
    assert {n: e.dns_name for n, e in found.matched.items()} == {
        "web1.b.example": "web1.b.example", "web1.a.example": "web1.a.example",
        "db7.corp.example": ""}
    assert [(h.name, h.dns_name) for h in found.ambiguous] == [("web1", ""),
                                                             ("db7", "db7.corp.example")]
    assert found.unmanaged == []


def test_ragged_rows_and_implausible_times(tmp_path: Path) -> None:
    path = tmp_path / "hosts.csv"
    path.write_text("Device;Last visible\nWS-1;1796026364000;extra;fields\n"
                    "WS-2;99999999999999999\n")
    one, two = ksc.read_report(path)
    assert one.last_seen == 1796026364.0  # epoch milliseconds, taken as such
    assert two.last_seen is None  # not a time KSC could report: dropped


class _Replay(BaseHTTPRequestHandler):
    """Answers the recorded exchange in order; keeps what the client sent."""

    exchange: ClassVar[list[dict[str, Any]]] = []
    seen: ClassVar[list[tuple[str, dict[str, Any], str]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        body = json.loads(raw) if raw.strip().startswith("{") else {}
        self.seen.append((self.path, body, self.headers.get("Authorization", "")))
        step = self.exchange[len(self.seen) - 1] if len(self.seen) <= len(self.exchange) else {}
        ok = step.get("path") == self.path and all(
            body.get(k) == v for k, v in step.get("body", {}).items())
        answer = json.dumps(step["response"] if ok else {"PxgError": {
            "code": 1, "message": f"unexpected {self.path} {body}"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def ksc_server() -> Iterator[str]:
    recorded = json.loads((FIXTURES / "open_api_exchange.json").read_text())
    _Replay.exchange, _Replay.seen = recorded["exchange"], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Replay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_open_api_is_read_with_klakoapi(ksc_server: str) -> None:
    """The adapter drives Kaspersky's own client through the recorded exchange: login,
    FindHosts, the chunks, each host's products, the accessor released."""
    hosts = kscapi.fetch(ksc_server, "avmigrate-reader", "pa ss", verify=False)
    paths = [p.rsplit("/", 1)[1] for p, _, _ in _Replay.seen]
    assert paths == ["login", "HostGroup.FindHosts", "ChunkAccessor.GetItemsCount",
                     "ChunkAccessor.GetItemsChunk", "HostGroup.GetHostProducts",
                     "HostGroup.GetHostProducts", "HostGroup.GetHostProducts",
                     "ChunkAccessor.Release"]
    auth = _Replay.seen[0][2]
    assert f'user="{base64.b64encode(b"avmigrate-reader").decode()}"' in auth
    assert _Replay.seen[1][1]["vecFieldsToReturn"] == kscapi.FIELDS
    assert [(h.name, h.ip, h.dns_name) for h in hosts] == [
        ("WS-0101", "10.10.2.1", "ws-0101.corp.example"),
        ("SRV-DB-02", "10.10.3.2", "srv-db-02.corp.example"),
        ("PRINT-SRV", "10.10.4.3", "")]
    assert hosts[0].kaspersky == (("Kaspersky Endpoint Security for Windows", "12.6.0.438"),
                                  ("Kaspersky Security Center Network Agent", "15.1.0.20748"))
    assert hosts[1].last_seen == 1795993510.0  # 2026-11-29 23:05:10 UTC
    assert hosts[2].products == ()


def test_an_api_error_is_one_line(ksc_server: str) -> None:
    _Replay.exchange = _Replay.exchange[:1]  # the server answers the login only
    with pytest.raises(UsageError, match=r"^KSC at http://127\.0\.0\.1:\d+: ") as caught:
        kscapi.fetch(ksc_server, "u", "p", verify=False)
    assert "\n" not in str(caught.value)
