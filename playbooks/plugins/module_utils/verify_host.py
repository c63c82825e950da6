"""The proof of protection read on a Linux host in one pass, by the replacement's own evidence
(its catalogue `verify` or `verify_beside`): its service, its health fields, its signatures'
age, its build's expiry, and the EICAR test file detected by its own mechanism. Shared by the
verify, install and swap modules, so that installing and proving is one module run.

The report has the shape the orchestrator judges (core/facts.verification_problem); the
spec's own checks (`problems`) only fail the task, so that Ansible's log says the same."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import tempfile
import time


def run(argv, stdin=None, timeout=300):
    """(rc, stdout, stderr) of a command, trailing newlines stripped as Ansible's command
    module does; rc 127 when it could not run."""
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", str(exc)
    return (proc.returncode, proc.stdout.decode(errors="replace").rstrip("\r\n"),
            proc.stderr.decode(errors="replace").rstrip("\r\n"))


def _detect(detection, eicar):
    """The EICAR test: through the product's scanner from standard input (nothing on disk,
    where the banned product's own on-access scanning could take it first), or a private
    file scanned, or left for on-access quarantine, with the product's own record read."""
    seen = {"rc": None, "output": "", "gone": False, "path": "", "evidence": ""}
    if not detection:
        return seen
    if detection.get("input", "file") != "file":
        seen["rc"], seen["output"], _ = run(detection["command"], stdin=eicar)
        return seen
    fd, path = tempfile.mkstemp(suffix=".avmigrate-eicar")
    seen["path"] = path
    try:
        try:
            os.write(fd, eicar)
        finally:
            os.close(fd)
        if detection["method"] == "scan":
            seen["rc"], seen["output"], _ = run(detection["command"] + [path])
        else:
            ends = time.monotonic() + float(detection.get("wait_s", 30))
            while os.path.exists(path) and time.monotonic() < ends:
                time.sleep(0.2)
        seen["gone"] = not os.path.exists(path)
        if detection.get("evidence_command"):
            _, seen["evidence"], _ = run(detection["evidence_command"])
    except OSError as exc:
        seen["output"] = str(exc)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return seen


def verify(spec, beside=False, protecting_units=(), eicar_b64=""):
    """What the replacement's proof reads on this host (`spec`: its catalogue verify or
    verify_beside)."""
    _, service, _ = run(["systemctl", "is-active", spec["service"]])
    banned_running = []
    if beside and protecting_units:
        _, out, _ = run(["systemctl", "is-active", *protecting_units])
        banned_running = out.splitlines()
    health, health_rc = {}, {}
    for field in spec.get("health", ()):
        health_rc[field["name"]], health[field["name"]], _ = run(field["command"])
    signatures = run(spec["signatures"]["command"])[1] if spec.get("signatures") else ""
    expires = run(spec["expires"]["command"])[1] if spec.get("expires") else ""
    detection = spec.get("detection") or {}
    return {
        "service": service.strip(),
        "health": health,
        "health_rc": health_rc,
        "signatures": signatures,
        "expires": expires,
        "banned_running": banned_running,
        "detection": _detect(detection, base64.b64decode(eicar_b64) if detection else b""),
        # Linux removals never wait for a boot.
        "removal_pending_reboot": False,
    }


def problems(report, spec, beside=False):
    """What the spec's own checks find missing in the report (Ansible's log says it; the
    orchestrator judges the report itself)."""
    out = []
    if report["service"] != "active":
        out.append("%s is %s" % (spec["service"], report["service"] or "not answering"))
    if beside and (not report["banned_running"]
                   or any(u != "active" for u in report["banned_running"])):
        out.append("the banned product's protection does not run: nothing is known to "
                   "protect the host until the replacement proves its detection")
    for field in spec.get("health", ()):
        value = report["health"].get(field["name"], "").strip()
        if report["health_rc"].get(field["name"]) != 0 or not re.fullmatch(
                "(?:%s)" % field["expect"], value):
            out.append("%s is %s (must match %s)" % (field["name"], value, field["expect"]))
    det, seen = spec.get("detection") or {}, report["detection"]
    if det and not (
            (det["method"] == "scan" and seen["rc"] == det["detected_rc"]
             and det["detected_text"] in seen["output"])
            or (det["method"] == "on_access" and seen["gone"]
                and (not det.get("evidence_command") or seen["path"] in seen["evidence"]))):
        out.append("the EICAR test file was not detected")
    return out


def prove(module, report, done, changed):
    """The proof a module's `verify` option asks for, after its own work (`done`: "installed",
    "removed"): its readings join `report`; the task fails when the spec's checks do not
    hold. Nothing happens without the option."""
    if not module.params.get("verify"):
        return
    spec, beside, units, eicar = verify_params(module.params["verify"])
    report.update(verify(spec, beside, units, eicar))
    missing = problems(report, spec, beside)
    if missing:
        module.fail_json(msg="%s, but protection is not proven: %s" % (done, "; ".join(missing)),
                         changed=changed, avmigrate_report=report)


def verify_params(params):
    """The `verify` option shared by the modules that prove: (spec, beside, units, eicar)."""
    return (params["spec"], bool(params.get("beside")), params.get("protecting_units") or [],
            params.get("eicar_b64") or "")


VERIFY_OPTION = {
    "type": "dict",
    "options": {
        "spec": {"type": "dict", "required": True},
        "beside": {"type": "bool", "default": False},
        "protecting_units": {"type": "list", "elements": "str", "default": []},
        "eicar_b64": {"type": "str", "default": ""},
    },
}
