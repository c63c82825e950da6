#!/usr/bin/python
"""Ansible module: prove, in one pass, that the replacement protects a Linux host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: verify
short_description: Prove a replacement's protection by its own evidence, in one pass
description:
  - Reads the replacement's service state, its health fields, its signatures' age, its
    build's expiry and detects the EICAR test file by the product's own mechanism (a scan
    through its daemon from standard input or of a private file, or on-access quarantine with
    the product's own record of it), as its catalogue C(verify) (or C(verify_beside)) says.
  - Beside the banned product (C(beside)), also whether the banned product's protecting
    services still run.
  - Fails when the spec's own checks do not hold; the orchestrator judges the report itself.
  - Linux only (systemd); Windows hosts are proven by tasks/verify_windows.yml.
options:
  spec:
    description: The replacement's catalogue C(verify) or C(verify_beside).
    type: dict
    required: true
  beside:
    description: The replacement is proven beside the banned product, which must be seen running.
    type: bool
    default: false
  protecting_units:
    description: The banned product's protecting services (with C(beside)).
    type: list
    elements: str
    default: []
  eicar_b64:
    description: The EICAR test string, base64.
    type: str
    default: ""
author: avmigrate
"""

RETURN = r"""
avmigrate_report:
  description: What the proof read (service, health, health_rc, signatures, expires,
    banned_running, detection, removal_pending_reboot).
  type: dict
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.avmigrate.migration.plugins.module_utils.verify_host import (  # noqa: E402
    VERIFY_OPTION,
    problems,
    verify,
    verify_params,
)


def main():
    module = AnsibleModule(argument_spec=VERIFY_OPTION["options"], supports_check_mode=True)
    spec, beside, units, eicar = verify_params(module.params)
    report = verify(spec, beside, units, eicar)
    missing = problems(report, spec, beside)
    if missing:
        module.fail_json(msg="; ".join(missing), avmigrate_report=report)
    module.exit_json(changed=False, avmigrate_report=report)


if __name__ == "__main__":
    main()
