"""Read the hosts Kaspersky Security Center manages through its Open API, with KlAkOAPI (the
Python client that ships with KSC, in its install folder as KlAkOAPI.tar.gz; not on the public
package index under that name). Optional: used only when it is installed.

Calls, as Kaspersky's API reference gives them: KlAkAdmServer.Create (basic authentication),
HostGroup.FindHosts (every host, with its display name, DNS name, IP, group and when it was
last visible) through a ChunkAccessor, then HostGroup.GetHostProducts per host (each product
and version). Tested against a recorded exchange with the client itself
(tests/unit/inputs/test_ksc.py); not yet run against a real Administration Server."""

from __future__ import annotations

import importlib
from typing import Any

from orchestrator.core.errors import UsageError
from orchestrator.core.ksc import KscHost
from orchestrator.inputs.ksc import hosts_from_rows

# The group is KSC's numeric id (KLHST_WKS_GROUPID) here: not read; a report names it.
FIELDS = ["KLHST_WKS_DN", "KLHST_WKS_HOSTNAME", "KLHST_WKS_FQDN", "KLHST_WKS_DNSNAME",
          "KLHST_WKS_DNSDOMAIN", "KLHST_WKS_IP_LONG", "KLHST_WKS_LAST_VISIBLE"]
CHUNK = 100


def _client() -> Any:
    try:
        return importlib.import_module("KlAkOAPI")
    except ImportError:
        raise UsageError("reading KSC through its Open API needs KlAkOAPI, which ships with "
                         "Kaspersky Security Center (KlAkOAPI.tar.gz in its install folder): "
                         "pip install it beside avmigrate, or export a hosts report from KSC "
                         "and run `avmigrate ksc import FILE`") from None


def _plain(value: Any) -> Any:
    """A value of the Open API's JSON: typed ones are {"type": ..., "value": ...}."""
    value = getattr(value, "data", value)
    if isinstance(value, dict) and "type" in value and "value" in value:
        return value["value"]
    return value


def _products(found: Any) -> list[dict[str, str]]:
    """GetHostProducts' answer: {product: {version: {DisplayName, ProdVersion, ...}}}."""
    out = []
    for product, versions in (_plain(found) or {}).items():
        for version, info in (_plain(versions) or {}).items():
            fields = _plain(info) or {}
            out.append({"name": str(_plain(fields.get("DisplayName")) or product),
                        "version": str(_plain(fields.get("ProdVersion")) or version)})
    return out


def fetch(url: str, user: str, password: str, verify: bool | str = True) -> list[KscHost]:
    """Every host KSC lists, with its products."""
    api = _client()
    for module in ("AdmServer", "HostGroup", "ChunkAccessor"):
        importlib.import_module(f"KlAkOAPI.{module}")
    try:
        server = api.AdmServer.KlAkAdmServer.Create(url, user, password, verify=verify)
        groups = api.HostGroup.KlAkHostGroup(server)
        chunks = api.ChunkAccessor.KlAkChunkAccessor(server)
        found = groups.FindHosts("", FIELDS, [], {"KLGRP_FIND_FROM_CUR_VS_ONLY": True}, 600)
        accessor = found.OutPar("strAccessor")
        total = int(chunks.GetItemsCount(accessor).RetVal())
        rows: list[dict[str, Any]] = []
        for start in range(0, total, CHUNK):
            chunk = chunks.GetItemsChunk(accessor, start, CHUNK).OutPar("pChunk")
            for item in _plain(chunk)["KLCSP_ITERATOR_ARRAY"]:
                host = dict(_plain(item))
                products = groups.GetHostProducts(host["KLHST_WKS_HOSTNAME"]).RetVal()
                rows.append({**host, "products": _products(products)})
        chunks.Release(accessor)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the client's errors have no common base we may name
        raise UsageError(f"KSC at {url}: {type(exc).__name__}: {exc}") from None
    return hosts_from_rows(rows, url)
