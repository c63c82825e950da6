#!/usr/bin/python
"""Ansible module: remove banned products from a Linux host and prove that nothing of them
remains, in one module run."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: remove
short_description: Remove banned products and prove nothing of them remains, in one pass
description:
  - Stops and disables the products' services, hands each uninstall password to its product
    in a root-only file for the length of the purge (the password travels in this module's
    arguments, never on a command line), purges their packages in one transaction (apt on
    Debian, dnf on the RHEL family), removes what the packages left behind and the shared
    vendor directories left empty, then probes the host (the probe module's report) and fails
    when anything of the products remains.
  - Linux only; Windows hosts are handled by tasks/remove_windows.yml.
options:
  products:
    description: Catalogue entries of the banned products to remove, by id (their C(remove)
      and C(detect) parts).
    type: dict
    required: true
  replacement:
    description: Catalogue entry of the replacement (for the probe after the removal).
    type: dict
    required: true
  secrets:
    description: Uninstall passwords by the file their product reads them from.
    type: dict
    default: {}
  manager:
    description: The package manager (C(apt) on Debian, C(dnf) on the RHEL family).
    type: str
    choices: [apt, dnf]
    default: apt
  lock_timeout:
    description: Seconds to wait for the package manager's lock.
    type: int
    default: 300
  verify:
    description: When nothing of the products remains, the proof of protection after the
      removal (C(spec), C(eicar_b64)); see the verify module. Its readings join the report.
    type: dict
author: avmigrate
"""

RETURN = r"""
avmigrate_report:
  description: C(removed) (nothing remains), C(left) (what remains), C(reboot_required)
    (never on Linux), C(removal) (C(seconds) on the host, C(stopped_at)), C(probe) (the probe's
    report after the removal).
  type: dict
  returned: always
"""

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.avmigrate.migration.plugins.module_utils.probe_host import (  # noqa: E402
    left_behind,
    report,
)
from ansible_collections.avmigrate.migration.plugins.module_utils.verify_host import (  # noqa: E402
    VERIFY_OPTION,
    prove,
)


def _run(argv, env=None, timeout=1800):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def _unique(values):
    return list(dict.fromkeys(values))


def _stop(units):
    """Stop and disable the services systemd knows (a purged unit lingers as not-found)."""
    known = []
    for unit in units:
        _, state, _ = _run(["systemctl", "show", "-p", "LoadState", "--value", unit])
        if state.strip() not in ("", "not-found"):
            known.append(unit)
    if known:
        rc, _, err = _run(["systemctl", "disable", "--now", *known])
        if rc != 0:
            raise Failed("stopping %s: %s" % (", ".join(known), " ".join(err.split())[:300]))
    return known


def _installed(packages, manager):
    if not packages:
        return []
    if manager == "dnf":
        # rpm prints "package X is not installed" for a missing one: exact lines only.
        _, out, _ = _run(["rpm", "-q", "--qf", "%{NAME}\n", *packages])
        there = set(out.splitlines())
        return [p for p in packages if p in there]
    _, out, _ = _run(["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Status}\n", *packages])
    there = {p for p, _, s in (ln.partition("\t") for ln in out.splitlines())
             if s not in ("not-installed", "")}
    return [p for p in packages if p in there]


def _purge(packages, manager, lock_timeout):
    """One transaction (the package manager orders the removals); why it failed, or None."""
    if manager == "dnf":
        argv = ["dnf", "-y", "remove", "--setopt=clean_requirements_on_remove=False",
                *packages]
    else:
        argv = ["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=%d" % lock_timeout, "purge",
                *packages]
    rc, out, err = _run(argv, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive",
                                      LC_ALL="C"))
    if rc == 0:
        return None
    lines = [ln.strip() for ln in (err + "\n" + out).splitlines() if ln.strip()]
    said = next((ln for ln in lines if ln.startswith("E:")), lines[-1] if lines else "")
    for word in ("refused", "denied", "not allowed", "password"):
        hit = next((ln for ln in lines if word in ln.lower() and "error code" not in ln), None)
        if hit:
            said = "%s (%s)" % (hit, said)
            break
    return "%s (rc %s)" % (said, rc)


class Failed(Exception):
    """A step of the removal that failed: its message fails the task."""


def _hand_over(secrets, written):
    """Each password in a root-only file its product reads; `written` lists every file made
    (even one whose write failed), for the caller to take back whatever happens."""
    for path, password in sorted(secrets.items()):
        if not password:
            continue
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        written.append(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, password.encode())
        finally:
            os.close(fd)


def _clean(removes):
    """What the packages left behind, and shared vendor directories left empty; the paths
    that could not be removed."""
    stuck = []
    for path in _unique(p for r in removes for p in r.get("leftovers", [])):
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
        except OSError as exc:
            stuck.append("%s (%s)" % (path, exc.strerror or exc))
    for path in _unique(p for r in removes for p in r.get("shared_parents", [])):
        try:
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
        except OSError as exc:
            stuck.append("%s (%s)" % (path, exc.strerror or exc))
    return stuck


def main():
    module = AnsibleModule(
        argument_spec={
            "products": {"type": "dict", "required": True},
            "replacement": {"type": "dict", "required": True},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
            "manager": {"type": "str", "choices": ["apt", "dnf"], "default": "apt"},
            "lock_timeout": {"type": "int", "default": 300},
            "verify": VERIFY_OPTION,
        },
        supports_check_mode=True,
    )
    products = module.params["products"]
    manager = module.params["manager"]
    removes = [entry.get("remove") or {} for entry in products.values()]
    if module.check_mode:
        out = report(products, module.params["replacement"])
        module.exit_json(changed=bool(left_behind(out, products)),
                         avmigrate_report={"removed": False, "left": left_behind(out, products),
                                           "reboot_required": False, "probe": out})
    t0 = time.monotonic()
    stopped_at = time.time()
    failure, stopped, packages, written = None, [], [], []
    try:
        stopped = _stop(_unique(u for r in removes for u in r.get("services", [])))
        packages = _installed(_unique(p for r in removes for p in r.get("packages", [])),
                              manager)
        _hand_over(module.params["secrets"], written)
        if packages:
            failure = _purge(packages, manager, module.params["lock_timeout"])
    except (Failed, OSError) as exc:
        failure = str(exc)
    finally:
        for path in written:  # the passwords are taken back, whatever happened
            if os.path.lexists(path):
                os.unlink(path)
    if failure is None:
        stuck = _clean(removes)
        if stuck:
            failure = "could not remove what the packages left behind: " + ", ".join(stuck)
    out = report(products, module.params["replacement"])
    left = left_behind(out, products)
    result = {"removed": failure is None and not left, "left": left, "reboot_required": False,
              "removal": {"seconds": round(time.monotonic() - t0, 3), "stopped_at": stopped_at,
                          "stopped": stopped, "purged": packages},
              "probe": out}
    if failure is not None:
        module.fail_json(msg="removing %s: %s" % (", ".join(packages) or "the products", failure),
                         changed=True, avmigrate_report=result)
    if left:
        module.fail_json(msg="left behind: " + ", ".join(left), changed=True,
                         avmigrate_report=result)
    prove(module, result, "removed", True)
    module.exit_json(changed=bool(stopped or packages), avmigrate_report=result)


if __name__ == "__main__":
    main()
