"""Read a Kaspersky Security Center hosts report (CSV or JSON) into KscHost records.

KSC exports its reports as CSV, XML or JSON; the columns depend on the report chosen. What is
read (names are matched case-insensitively, spaces and underscores alike), one row per host or
one per host and application (rows of one host are merged):

  host          Device, Host, Host name, Computer, Computer name, Name, KLHST_WKS_DN
  DNS name      DNS name, FQDN, KLHST_WKS_FQDN, KLHST_WKS_DNSNAME (+ KLHST_WKS_DNSDOMAIN)
  IP address    IP address, IP, KLHST_WKS_IP_LONG (a number, as the Open API gives it, read
                most significant byte first: the byte order is not confirmed by Kaspersky)
  group         Group, Administration group, KLHST_WKS_GROUP
  last seen     Last visible, Last seen, Last connected, Connected to Administration Server,
                KLHST_WKS_LAST_VISIBLE, KLHST_WKS_LAST_NAGENT_CONNECTED (ISO 8601,
                "dd.mm.yyyy hh:mm:ss", "yyyy-mm-dd hh:mm:ss" or epoch seconds; UTC)
  application   Application, Product, Application name, Product name
  version       Version, Application version, Version number, Product version

JSON: a list of such objects, or an object with a `hosts` list; an object may carry its
applications as `products: [{"name": ..., "version": ...}]` (what `avmigrate ksc import
--server` stores). Only the host column is required."""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.core.errors import UsageError
from orchestrator.core.ksc import KscHost

_COLUMNS = {
    "name": ("device", "host", "host name", "hostname", "computer", "computer name", "name",
             "klhst wks dn"),
    "dns": ("dns name", "fqdn", "klhst wks fqdn", "klhst wks dnsname"),
    "domain": ("dns domain", "klhst wks dnsdomain"),
    "ip": ("ip address", "ip", "klhst wks ip long", "klhst wks ip"),
    "group": ("group", "administration group", "klhst wks group", "group name"),
    "seen": ("last visible", "last seen", "last connected",
             "connected to administration server", "klhst wks last visible",
             "klhst wks last nagent connected"),
    "product": ("application", "product", "application name", "product name"),
    "version": ("version", "application version", "version number", "product version"),
}
_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
                 "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%m/%d/%Y %I:%M:%S %p", "%Y-%m-%d")


def _norm(key: str) -> str:
    return re.sub(r"[\s_]+", " ", key.strip().lower())


def _columns(keys: list[str]) -> dict[str, str]:
    """Which of the report's own keys holds each field."""
    normal = {_norm(k): k for k in keys}
    return {field: next(normal[a] for a in aliases if a in normal)
            for field, aliases in _COLUMNS.items() if any(a in normal for a in aliases)}


def _when(value: Any) -> float | None:
    if isinstance(value, dict):  # the Open API's typed value: {"type": "datetime", ...}
        value = value.get("value")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _plausible(float(value))
    text = str(value or "").strip()
    if not text:
        return None
    if text.isdigit():
        return _plausible(float(text))
    text = text.replace("Z", "+00:00")
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        found = None
        for fmt in _TIME_FORMATS:
            try:
                found = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if found is None:
        return None
    return _plausible((found if found.tzinfo else found.replace(tzinfo=UTC)).timestamp())


# Last-seen times outside these bounds are not times a KSC could report (epoch milliseconds
# are taken as such): they are dropped, not stored.
_EARLIEST, _LATEST = 315532800.0, 4102444800.0  # 1980-01-01, 2100-01-01


def _plausible(seconds: float) -> float | None:
    if seconds > _LATEST * 100:  # milliseconds since the epoch
        seconds /= 1000
    return seconds if _EARLIEST <= seconds <= _LATEST else None


def _ip(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("value")
    text = str(value or "").strip()
    if text.isdigit():  # KLHST_WKS_IP_LONG: the address as a number
        try:
            return str(ipaddress.IPv4Address(int(text)))
        except ValueError:
            return ""
    return text


def _text(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("value")
    return "" if value is None else str(value).strip()


def hosts_from_rows(rows: list[dict[str, Any]], source: str) -> list[KscHost]:
    """Merge a report's rows into one KscHost per host, in the report's order."""
    if not rows:
        return []
    # A row with more fields than the header has them under None (csv): they are ignored.
    cols = _columns(sorted({k for r in rows for k in r if isinstance(k, str)}))
    if "name" not in cols:
        raise UsageError(f"{source}: no column names the host; a KSC hosts report needs one "
                         f"of: {', '.join(a.title() for a in _COLUMNS['name'][:6])}")
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = _text(row.get(cols["name"]))
        if not name:
            continue
        host = merged.setdefault(name.lower(), {"name": name, "dns": "", "ip": "", "group": "",
                                                "seen": None, "products": []})
        dns = _text(row.get(cols.get("dns", ""), ""))
        domain = _text(row.get(cols.get("domain", ""), ""))
        if dns and domain and "." not in dns:
            dns = f"{dns}.{domain}"
        host["dns"] = host["dns"] or dns
        host["ip"] = host["ip"] or _ip(row.get(cols.get("ip", ""), ""))
        host["group"] = host["group"] or _text(row.get(cols.get("group", ""), ""))
        seen = _when(row.get(cols.get("seen", ""), ""))
        if seen is not None and (host["seen"] is None or seen > host["seen"]):
            host["seen"] = seen
        product = _text(row.get(cols.get("product", ""), ""))
        if product:
            host["products"].append((product, _text(row.get(cols.get("version", ""), ""))))
        for item in row.get("products") or ():
            if isinstance(item, dict) and _text(item.get("name")):
                host["products"].append((_text(item["name"]), _text(item.get("version"))))
    return [KscHost(h["name"], h["dns"], h["ip"], h["group"], h["seen"],
                    tuple(dict.fromkeys(h["products"]))) for h in merged.values()]


def _decode(raw: bytes) -> str:
    for bom, codec in ((b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"),
                       (b"\xef\xbb\xbf", "utf-8-sig")):
        if raw.startswith(bom):
            return raw.decode(codec)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252")


def read_report(path: Path) -> list[KscHost]:
    """The hosts of a KSC report file (CSV or JSON, told by its content)."""
    try:
        text = _decode(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the KSC report ({exc.strerror})") from None
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        rows = data.get("hosts") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise UsageError(f"{path}: a JSON KSC report is a list of hosts (objects), or an "
                             "object with a `hosts` list")
        return hosts_from_rows(rows, str(path))
    # The delimiter is the header's: KSC writes ';' or ',' by locale, or tabs.
    header = stripped.splitlines()[0] if stripped else ""
    delimiter = max(",;\t", key=header.count)
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    rows = [dict(r) for r in reader]
    if not rows:
        raise UsageError(f"{path}: the KSC report lists no host")
    return hosts_from_rows(rows, str(path))
