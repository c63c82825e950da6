"""Action plugin for avmigrate.migration.install: the internal repository's key is a file on
the controller (`repository.key_src`); it travels to the module as an argument, in the same
round trip as everything else the install needs."""

from __future__ import annotations

import base64

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    _supports_check_mode = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        repo = args.get("repository")
        if repo and "key_src" in repo:
            repo = dict(repo)
            src = repo.pop("key_src")
            try:
                with open(self._find_needle("files", src), "rb") as fh:
                    repo["key_b64"] = base64.b64encode(fh.read()).decode()
            except (OSError, Exception) as exc:  # noqa: BLE001 - said in one line
                raise AnsibleActionFail(f"cannot read the repository key {src}: {exc}") from exc
            args["repository"] = repo
        result.update(self._execute_module(module_name="avmigrate.migration.install",
                                           module_args=args, task_vars=task_vars))
        return result
