#!/usr/bin/python
"""Ansible module: install, configure, start and prove a replacement on a Debian host, in one
module run (one round trip instead of a task per file, package and service)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: install
short_description: Install, configure, start and prove a replacement on Debian in one pass
description:
  - Trusts the internal repository through its own key (a deb822 source with C(Signed-By)),
    refreshes that repository's lists alone, installs the packages (or, with C(staged),
    exactly the packages staged on the host, with nothing downloaded), fetches files into the
    stage directory and installs them, writes configuration files and lines, masks units that
    must stay off, starts the product's services (restarted when anything changed), waits for
    the path that says it is up, then proves protection as C(verify) says (the verify module's
    report and checks).
  - Idempotent: what is already as asked is left alone and reported unchanged.
  - The repository key is read on the controller by the action plugin (C(key_src)).
  - Debian only; the roles keep their tasks for the RHEL family and Windows.
options:
  packages:
    description: Packages to install.
    type: list
    elements: str
    required: true
  repository:
    description: The internal repository (C(url), C(suite), C(keyring), C(sources_file),
      C(key_b64) set by the action plugin from C(key_src)). Not used with C(staged).
    type: dict
  staged:
    description: Install exactly the .deb files staged in C(stage_dir)/debs, download nothing.
    type: bool
    default: false
  stage_dir:
    description: The host's stage directory (downloads land in C(stage_dir)/signatures).
    type: str
    default: /var/cache/avmigrate/stage
  downloads:
    description: Files (C(files)) fetched from C(base_url) into the stage's signatures
      directory (unless C(staged)) and installed in C(dest_dir) with C(owner), C(group) and
      C(mode).
    type: dict
  lines:
    description: Lines set in files (C(path), C(regexp), C(line)), as lineinfile does.
    type: list
    elements: dict
    default: []
  files:
    description: Files written whole (C(path), C(content), C(mode)).
    type: list
    elements: dict
    default: []
  masked:
    description: Units masked before the packages arrive (their postinst must not start them).
    type: list
    elements: str
    default: []
  unmasked:
    description: Units unmasked.
    type: list
    elements: str
    default: []
  start:
    description: Units enabled and started (restarted when anything changed).
    type: list
    elements: str
    default: []
  wait_for:
    description: A path that exists once the product is up (C(path), C(timeout) in seconds).
    type: dict
  lock_timeout:
    description: Seconds to wait for the dpkg lock.
    type: int
    default: 300
  verify:
    description: The proof after the install (C(spec), C(beside), C(protecting_units),
      C(eicar_b64)); see the verify module.
    type: dict
author: avmigrate
"""

RETURN = r"""
avmigrate_report:
  description: The verify module's report, with C(install) (C(seconds) on the host,
    C(package_seconds), C(changed)).
  type: dict
  returned: when the install completed (its proof may still have failed)
"""

import base64  # noqa: E402
import glob  # noqa: E402
import grp  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.avmigrate.migration.plugins.module_utils.verify_host import (  # noqa: E402
    VERIFY_OPTION,
    prove,
    run,
)

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}


class Failed(Exception):
    """A step of the install that failed: its message fails the task."""


def _write(path, data, mode=0o644, owner=None, group=None):
    """Write `data` (bytes) at `path` when it differs, keeping an existing file's owner unless
    one is given; True when anything changed."""
    try:
        before = os.stat(path)
        with open(path, "rb") as fh:
            same = fh.read() == data
    except OSError:
        before, same = None, False
    if not same:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        tmp = path + ".avmigrate-tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        if before is not None:
            os.chown(path, before.st_uid, before.st_gid)
    changed = not same
    if (os.stat(path).st_mode & 0o7777) != mode:
        os.chmod(path, mode)
        changed = True
    if owner or group:
        uid = pwd.getpwnam(owner).pw_uid if owner else -1
        gid = grp.getgrnam(group).gr_gid if group else -1
        st = os.stat(path)
        if (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid):
            os.chown(path, uid, gid)
            changed = True
    return changed


def _line(path, regexp, line):
    """As lineinfile: the last line matching `regexp` replaced by `line`, else `line`
    appended; the file must exist (its owner and mode are kept)."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise Failed("%s: %s (it should come with the packages)" % (path, exc.strerror or exc)
                     ) from exc
    pattern = re.compile(regexp)
    hits = [i for i, old in enumerate(lines) if pattern.search(old)]
    if hits and lines[hits[-1]] == line:
        return False
    if hits:
        lines[hits[-1]] = line
    else:
        lines.append(line)
    return _write(path, ("\n".join(lines) + "\n").encode(), os.stat(path).st_mode & 0o7777)


def _mask(units, masked):
    changed = False
    for unit in units:
        _, state, _ = run(["systemctl", "is-enabled", unit])
        if (state.strip() == "masked") != masked:
            rc, _, err = run(["systemctl", "mask" if masked else "unmask", unit])
            if rc != 0:
                raise Failed("systemctl %s %s: %s" % ("mask" if masked else "unmask", unit,
                                                      err.strip()))
            changed = True
    return changed


def _installed(packages):
    _, out, _ = run(["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Status}\n", *packages])
    return {p for p, _, s in (ln.partition("\t") for ln in out.splitlines())
            if s == "installed"}


def _apt(argv, lock_timeout):
    """apt-get with the lock waited for; its first error line when it fails."""
    env = dict(os.environ, **APT_ENV)
    cmd = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=%d" % lock_timeout, *argv]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                              timeout=lock_timeout + 1800)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise Failed("%s: %s" % (" ".join(cmd[:2]), exc)) from exc
    return proc.returncode, proc.stdout, proc.stderr


def _why(out, err, rc):
    lines = [ln.strip() for ln in (err + "\n" + out).splitlines() if ln.strip()]
    said = next((ln for ln in lines if ln.startswith("E:")), lines[-1] if lines else "")
    return "%s (rc %s)" % (said, rc)


def _repository(repo):
    """The internal repository trusted through its own key; True when anything changed."""
    changed = _write(repo["keyring"], base64.b64decode(repo["key_b64"]))
    source = ("# Managed by avmigrate: the internal repository the replacement is installed "
              "from.\nTypes: deb\nURIs: %s\nSuites: %s\nSigned-By: %s\n"
              % (repo["url"], repo.get("suite") or "./", repo["keyring"]))
    return _write(repo["sources_file"], source.encode()) or changed


def _refresh(repo, lock_timeout):
    """The internal repository's lists alone refreshed: the host's other sources are neither
    fetched nor dropped. An Err or W line on the internal repository fails (apt-get update
    only warns)."""
    rc, out, err = _apt(["update", "-o", "Dir::Etc::SourceList=" + repo["sources_file"],
                         "-o", "Dir::Etc::SourceParts=-", "-o", "APT::Get::List-Cleanup=0"],
                        lock_timeout)
    bad = [ln for ln in (out + "\n" + err).splitlines()
           if re.match(r"^(Err|E|W):", ln) and repo["url"] in ln]
    if rc != 0 or bad:
        raise Failed("refreshing the internal repository: %s" % (
            bad[0].strip() if bad else _why(out, err, rc)))


def _fetch(url, dest):
    """A file fetched into the stage, once: a retry needs no download."""
    if os.path.exists(dest):
        return False
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            data = answer.read()
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        raise Failed("fetching %s: %s" % (url, exc)) from exc
    return _write(dest, data)


def _install(params):
    """Everything but the proof; (changed steps, seconds the packages took)."""
    changed = []
    stage = params["stage_dir"]
    lock = params["lock_timeout"]
    if _mask(params["masked"], True) | _mask(params["unmasked"], False):
        changed.append("units masked")
    repo = params["repository"]
    downloads = params["downloads"] or {}
    files = downloads.get("files") or []
    if not params["staged"]:
        for name in files:
            if _fetch("%s/%s" % (downloads["base_url"], name),
                      os.path.join(stage, "signatures", name)):
                changed.append("fetched " + name)
        if repo and _repository(repo):
            changed.append("internal repository")
    missing = [p for p in params["packages"] if p not in _installed(params["packages"])]
    package_s = 0.0
    if missing or params["staged"]:
        t0 = time.monotonic()
        if params["staged"]:
            debs = sorted(glob.glob(os.path.join(stage, "debs", "*.deb")))
            if not debs:
                raise Failed("nothing is staged in %s/debs" % stage)
            argv = ["install", "--yes", "--no-download", "--no-install-recommends",
                    "-o", "Dir::Cache::archives=%s/debs" % stage, *debs]
        else:
            if repo:
                _refresh(repo, lock)
            argv = ["install", "--yes", "--no-install-recommends", *missing]
        rc, out, err = _apt(argv, lock)
        package_s = time.monotonic() - t0
        if rc != 0:
            raise Failed("installing %s: %s" % (", ".join(missing or params["packages"]),
                                                _why(out, err, rc)))
        if " 0 newly installed" not in out or missing:
            changed.append("packages")
    for name in files:
        try:
            with open(os.path.join(stage, "signatures", name), "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise Failed("the staged %s is missing: %s" % (name, exc)) from exc
        if _write(os.path.join(downloads["dest_dir"], name), data,
                  int(str(downloads.get("mode", "0644")), 8), downloads.get("owner"),
                  downloads.get("group")):
            changed.append("installed " + name)
    for item in params["lines"]:
        if _line(item["path"], item["regexp"], item["line"]):
            changed.append(item["path"])
    for item in params["files"]:
        if _write(item["path"], item["content"].encode(),
                  int(str(item.get("mode", "0644")), 8)):
            changed.append(item["path"])
    _start(params["start"], restart=bool(changed))
    _wait(params["wait_for"])
    return changed, package_s


def _start(units, restart):
    if not units:
        return
    run(["systemctl", "daemon-reload"])
    rc, _, err = run(["systemctl", "enable", *units])
    if rc != 0:
        raise Failed("systemctl enable %s: %s" % (" ".join(units), err.strip()))
    rc, _, err = run(["systemctl", "restart" if restart else "start", *units])
    if rc != 0:
        _, status, _ = run(["systemctl", "status", "--no-pager", "--lines=5", *units])
        raise Failed("starting %s: %s %s" % (" ".join(units), err.strip(),
                                             " ".join(status.split())[-300:]))


def _wait(wait_for):
    if not wait_for:
        return
    ends = time.monotonic() + float(wait_for.get("timeout", 180))
    while not os.path.exists(wait_for["path"]):
        if time.monotonic() > ends:
            raise Failed("%s did not appear within %s s" % (wait_for["path"],
                                                           wait_for.get("timeout", 180)))
        time.sleep(0.2)


def main():
    module = AnsibleModule(
        argument_spec={
            "packages": {"type": "list", "elements": "str", "required": True},
            "repository": {"type": "dict"},
            "staged": {"type": "bool", "default": False},
            "stage_dir": {"type": "str", "default": "/var/cache/avmigrate/stage"},
            "downloads": {"type": "dict"},
            "lines": {"type": "list", "elements": "dict", "default": []},
            "files": {"type": "list", "elements": "dict", "default": []},
            "masked": {"type": "list", "elements": "str", "default": []},
            "unmasked": {"type": "list", "elements": "str", "default": []},
            "start": {"type": "list", "elements": "str", "default": []},
            "wait_for": {"type": "dict"},
            "lock_timeout": {"type": "int", "default": 300},
            "verify": VERIFY_OPTION,
        },
        supports_check_mode=False,
    )
    t0 = time.monotonic()
    try:
        changed, package_s = _install(module.params)
    except Failed as exc:
        module.fail_json(msg=str(exc))
    except (OSError, KeyError) as exc:  # a full disk, a user the packages did not create
        module.fail_json(msg="installing: %s" % exc)
    installed = {"seconds": round(time.monotonic() - t0, 3),
                 "package_seconds": round(package_s, 3), "changed": changed}
    report = {"install": installed}
    prove(module, report, "installed", bool(changed))
    module.exit_json(changed=bool(changed), avmigrate_report=report)


if __name__ == "__main__":
    main()
