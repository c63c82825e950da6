#!/usr/bin/python
"""Documentation of avmigrate.migration.win_probe: the module is win_probe.ps1."""

DOCUMENTATION = r"""
---
module: win_probe
short_description: Read banned products, the replacement and host health on Windows
description:
  - The Windows twin of M(avmigrate.migration.probe) (its action plugin picks it for a
    PowerShell host), with the same options and report. Reads the Uninstall keys (both
    registry views) matching the banned products' DisplayName patterns, services (patterns
    allowed), paths, processes, free space, whether Windows Installer is busy, pending
    reboots and whether the banned products' files are among the renames made at boot.
  - Never changes the host; supports check mode. Not yet run on a Windows host.
options:
  banned:
    description: Catalogue entries of the banned products, by id.
    type: dict
  replacement:
    description: Catalogue entry of the replacement.
    type: dict
  catalogue:
    description: The catalogue per platform; the C(windows) entries are used.
    type: dict
  replacement_id:
    description: With C(catalogue), the id of the host's replacement.
    type: str
author: avmigrate
"""

RETURN = r"""
avmigrate_report:
  description: Raw observations, in the shape probe.py reports; the orchestrator interprets them.
  type: dict
  returned: always
"""
