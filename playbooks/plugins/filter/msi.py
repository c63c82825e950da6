"""Filters that turn catalogue data into msiexec removals (Windows hosts).

The properties msiexec /x takes, with the uninstall password from the credentials written
where the catalogue says (`{secret}`), encoded as the catalogue says; and, from the probe's
Uninstall keys, which product codes to remove, in the order of the products given (KES before
the Network Agent). The tasks that use them are no_log: the arguments never reach a log.
"""

from __future__ import annotations

import fnmatch
import re

_PRODUCT_CODE = re.compile(r"\{[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}\}")

DOCUMENTATION = r"""
name: msi_removals
short_description: msiexec removals (product code, public properties) from catalogue data
description:
  - For each banned product, in the order given, the Uninstall keys of the probe's report
    whose DisplayName matches its C(detect.registry) patterns (PowerShell -like), with the
    properties of its C(remove.msi) and its uninstall password.
positional: products, secrets
options:
  _input:
    description: The probe's report (its C(uninstall) list).
    type: dict
    required: true
  products:
    description: The banned products' catalogue entries, in removal order.
    type: list
    required: true
  secrets:
    description: Credential name to value (an empty value leaves its properties out).
    type: dict
    required: true
"""


def utf16le_hex(text: str) -> str:
    """The hex of a text's UTF-16LE bytes, upper case (as the Network Agent's
    KLUNINSTPASSWD is passed by community scripts; unconfirmed by Kaspersky)."""
    return text.encode("utf-16-le").hex().upper()


def _quote(value: str) -> str:
    """An msiexec property value: always in double quotes, a double quote doubled."""
    return '"' + value.replace('"', '""') + '"'


def msi_properties(msi: dict, secret: str) -> str:
    """`NAME="value" ...` for msiexec, `{secret}` replaced by the (encoded) password; a
    property that needs a password is left out when there is none (no password is set)."""
    encoded = utf16le_hex(secret) if msi.get("secret_encoding") == "utf16le_hex" else secret
    parts = []
    for name, value in msi.get("properties", {}).items():
        if "{secret}" in value:
            if not secret:
                continue
            value = value.replace("{secret}", encoded)
        parts.append(f"{name}={_quote(value)}")
    return " ".join(parts)


def _like(pattern: str, text: str) -> bool:
    return fnmatch.fnmatchcase(text.lower(), pattern.lower().replace("[", "[[]"))


def msi_removals(report: dict, products: list, secrets: dict) -> list:
    """One removal per Uninstall key of each product, in the products' order."""
    keys = [k for k in report.get("uninstall") or () if isinstance(k, dict)]
    removals, seen = [], set()
    for product in products:
        patterns = product["detect"].get("registry", [])
        secret = str(secrets.get(product["remove"].get("secret", ""), "") or "")
        for key in keys:
            code = str(key.get("PSChildName") or "")
            name = str(key.get("DisplayName") or "")
            # Only an MSI product's key is named by its product code: msiexec /x takes that.
            if (code in seen or not _PRODUCT_CODE.fullmatch(code)
                    or not any(_like(p, name) for p in patterns)):
                continue
            seen.add(code)
            removals.append({"name": name, "code": code,
                             "version": str(key.get("DisplayVersion") or ""),
                             "arguments": msi_properties(product["remove"].get("msi", {}),
                                                         secret)})
    return removals


class FilterModule:
    def filters(self):
        return {"msi_removals": msi_removals, "msi_properties": msi_properties,
                "utf16le_hex": utf16le_hex}
