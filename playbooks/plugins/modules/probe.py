#!/usr/bin/python
"""Ansible module: read, in one pass, what avmigrate needs to know about a host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: probe
short_description: Read banned products, the replacement and host health in one pass
description:
  - Reads installed packages, unit states, paths, processes, product info commands,
    free space, and package manager health for the products named in the arguments.
  - Never changes the host; supports check mode.
  - On Debian reads dpkg and apt; on the RHEL family (RHEL, Rocky, Alma, CentOS, Fedora,
    Oracle Linux) rpm and dnf. win_probe (win_probe.ps1) is its Windows twin (same report);
    the probe action plugin picks it on a PowerShell host.
options:
  banned:
    description: Catalogue entries of the banned products, by id (their C(detect) part is used).
    type: dict
  replacement:
    description: Catalogue entry of the replacement (packages, services, requirements).
    type: dict
  catalogue:
    description:
      - The catalogue per platform (C(banned), C(replacements)); the probe reads the host's
        platform itself and takes that platform's entries. Instead of C(banned) and
        C(replacement), for a host whose platform is not known yet.
    type: dict
  replacement_id:
    description: With C(catalogue), the id of the host's replacement.
    type: str
  preflight:
    description:
      - On Debian, also the preflight checks (read-only), reported as
        C(avmigrate_report.preflight) (C(problems) that must stop the migration, C(notes)).
      - C(apt_url), C(apt_suite) (the internal repository, asked through apt with the host's
        own settings in a scratch directory), C(signature_url) and C(signature_files) (asked
        by HEAD from the host), C(lock_timeout).
    type: dict
  fail_on_problems:
    description: Fail the task when a preflight check found a problem (the preflight step).
    type: bool
    default: false
author: avmigrate
"""

RETURN = r"""
avmigrate_report:
  description: Raw observations; the orchestrator interprets them.
  type: dict
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.avmigrate.migration.plugins.module_utils.probe_host import (  # noqa: E402
    platform_entries,
    preflight,
    report,
)


def main():
    module = AnsibleModule(
        argument_spec={"banned": {"type": "dict"},
                       "replacement": {"type": "dict"},
                       "catalogue": {"type": "dict"},
                       "replacement_id": {"type": "str"},
                       "preflight": {"type": "dict"},
                       "fail_on_problems": {"type": "bool", "default": False}},
        required_one_of=[("banned", "catalogue")],
        required_together=[("catalogue", "replacement_id"), ("banned", "replacement")],
        supports_check_mode=True,
    )
    params = module.params
    out = report(params["banned"], params["replacement"], params["catalogue"],
                 params["replacement_id"])
    checks = params["preflight"]
    if checks is not None and out["os_family"] != "Debian" and params["fail_on_problems"]:
        module.fail_json(msg="the preflight checks asked for are Debian's; this host is %s: "
                         "run discover again so that its platform is known"
                         % out["os_family"], avmigrate_report=out)
    if checks is not None and out["os_family"] == "Debian":
        _, _, _, _, banned, repl = platform_entries(
            params["banned"], params["replacement"], params["catalogue"],
            params["replacement_id"])
        out["preflight"] = preflight(out, banned, repl, checks)
        problems = out["preflight"]["problems"]
        if problems and params["fail_on_problems"]:
            module.fail_json(msg="; ".join(problems), avmigrate_report=out,
                             ansible_facts={"avmigrate_notes": out["preflight"]["notes"]})
    notes = out.get("preflight", {}).get("notes") or []
    module.exit_json(changed=False, avmigrate_report=out,
                     **({"ansible_facts": {"avmigrate_notes": notes}} if notes else {}))


if __name__ == "__main__":
    main()
