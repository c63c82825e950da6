"""ansible-runner's events of one step turned into per-host results, as they are known: the
same for a local run and for events streamed back from an execution node."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from orchestrator.core.errors import ExecutionError
from orchestrator.core.models import StepOutcome, StepResult
from orchestrator.execute.step import ResultCallback, StepRequest


def host_key_message(msg: str) -> str:
    """ssh's host key refusals, said plainly; other messages unchanged."""
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in msg:
        return ("host key changed: the host's SSH key no longer matches known_hosts (rebuilt, "
                "or someone is impersonating it); nothing was done to it. Check the new key out "
                "of band, then replace its line in known_hosts")
    if "Host key verification failed" in msg or "No ED25519 host key is known" in msg:
        return ("host key unknown: the host is not in known_hosts; nothing was done to it. "
                "Record its key (ssh-keyscan, checked out of band) in known_hosts")
    return msg


def _failure_message(res: dict[str, Any]) -> str:
    msg = res.get("msg") or res.get("stderr") or res.get("reason") or ""
    if (not msg or msg == "One or more items failed") and "results" in res:
        # A loop: the first failed item says why.
        for item in res["results"]:
            if isinstance(item, dict) and item.get("failed"):
                return _failure_message(item)
    text = " ".join(str(msg).split())
    if text == "non-zero return code" and res.get("stderr"):
        # A command's own words say more than its return code: apt's first "E:" line, say.
        lines = [ln.strip() for ln in str(res["stderr"]).splitlines() if ln.strip()]
        said = next((ln for ln in lines if ln.startswith("E:")), lines[-1])
        text = f"{' '.join(said.split())} (rc {res.get('rc', '?')})"
    # A package manager's "sub-process returned an error code" hides the real cause, which a
    # maintainer script printed: name the first line of its output that says why.
    if "returned an error code" in text:
        lines = (str(res.get("stderr", "")) + "\n" + str(res.get("stdout", ""))).splitlines()
        for why in _WHY:
            line = next((ln for ln in lines if why.search(ln)
                         and "returned an error code" not in ln), None)
            if line is not None:
                text = f"{' '.join(line.split())} ({text})"
                break
    return text[:500]


# The most telling lines first: a refusal, then any error.
_WHY = (re.compile(r"refused|denied|not allowed", re.IGNORECASE),
        re.compile(r"cannot|can't|error:", re.IGNORECASE))


class Collector:
    """Per-host results of one step from ansible-runner's events, reported as they are known.

    The same for a local run and for events streamed back from an execution node.
    """

    def __init__(self, request: StepRequest, on_result: ResultCallback) -> None:
        self.request = request
        self.on_result = on_result
        self.names = {h.name for h in request.hosts}
        self.results: dict[str, StepResult] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, str] = {}
        self.changes: dict[str, list[str]] = {}
        # What a step noted about a host without failing it (`avmigrate_notes` facts).
        self.notes: dict[str, list[str]] = {}

    def emit(self, result: StepResult) -> None:
        if result.host in self.results or result.host not in self.names:
            return
        self.results[result.host] = result
        self.on_result(result)

    def handle(self, event: dict[str, Any]) -> bool:
        """ansible-runner's event handler; True keeps the event in the artifacts."""
        step = self.request.step
        kind = event.get("event", "")
        data = event.get("event_data", {})
        host = data.get("host")
        res = data.get("res") or {}
        if kind == "runner_on_ok" and host:
            self._ok(host, str(data.get("task", "task")), res)
        elif kind == "runner_on_failed" and host and not data.get("ignore_errors"):
            msg = f"{data.get('task', 'task')}: {_failure_message(res)}"
            self.failures.setdefault(host, msg)
            # What the host's tasks reported up to the failure (a removal done, then a failed
            # proof): the orchestrator judges it.
            self._report(host, res)
            self.emit(StepResult(host, step, StepOutcome.FAILED, msg,
                                 dict(self.reports.get(host, {}))))
            return True
        elif kind == "runner_on_unreachable" and host:
            msg = host_key_message(_failure_message(res)) or "unreachable"
            self.emit(StepResult(host, step, StepOutcome.UNREACHABLE, msg))
            return True
        elif kind == "playbook_on_stats":
            self._stats(data)
        return False

    def _ok(self, host: str, task: str, res: dict[str, Any]) -> None:
        """A task done on a host: what it changed (check mode says so), and our report."""
        if res.get("changed") and task not in self.changes.setdefault(host, []):
            self.changes[host].append(task)
        self._report(host, res)
        notes = (res.get("ansible_facts") or {}).get("avmigrate_notes")
        if isinstance(notes, list) and notes:
            self.notes.setdefault(host, []).extend(str(n) for n in notes)

    def _report(self, host: str, res: dict[str, Any]) -> None:
        """A task's `avmigrate_report`, merged into the host's: a step whose tasks each
        report a part (the removal, then the proof after it) gives one report."""
        if isinstance(report := res.get("avmigrate_report"), dict):
            self.reports.setdefault(host, {}).update(report)

    def _stats(self, data: dict[str, Any]) -> None:
        """The play's recap: every host not reported yet, by its tally."""
        step = self.request.step
        for h in sorted(self.names):
            if h in (data.get("dark") or {}):
                self.emit(StepResult(h, step, StepOutcome.UNREACHABLE, "unreachable"))
            elif h in (data.get("failures") or {}):
                self.emit(StepResult(h, step, StepOutcome.FAILED,
                                     self.failures.get(h, "failed")))
            elif h in (data.get("ok") or {}) or h in (data.get("skipped") or {}):
                data_out = dict(self.reports.get(h, {}))
                if h in self.notes:
                    data_out["notes"] = self.notes[h]
                if self.request.check:
                    data_out["would_change"] = self.changes.get(h, [])
                self.emit(StepResult(h, step, StepOutcome.OK, "", data_out))

    def finish(self, status: str, pdd: Path, rc: int | None = 0) -> None:
        """After the run: Ansible that never ran is an error; a host with no result failed.
        Ansible ended by a signal (its guard ended it, the OOM killer) may have been anywhere
        on a host with no result: that host's outcome is unknown, to be re-probed."""
        if rc is None or rc < 0 or rc >= 128:
            self._without_result(StepOutcome.UNKNOWN, f"Ansible was ended (exit {rc}) before "
                                 "this host's result; what happened on it is unknown")
            return
        if not self.results and self.names:
            # Not one host answered or failed: Ansible itself did not run. Touch no host state.
            stdout = pdd / "artifacts"
            first = ""
            for f in sorted(stdout.glob("*/stdout")):
                first = f.read_text(encoding="utf-8", errors="replace").strip()[:300]
            raise ExecutionError(f"{self.request.step}: Ansible did not run (runner status "
                                 f"{status}): {first or 'no output'}; see {stdout}")
        self._without_result(StepOutcome.FAILED, f"no result from Ansible (runner status "
                             f"{status}); see {pdd}/artifacts")

    def _without_result(self, outcome: StepOutcome, message: str) -> None:
        for h in sorted(self.names - set(self.results)):
            self.emit(StepResult(h, self.request.step, outcome, message))
