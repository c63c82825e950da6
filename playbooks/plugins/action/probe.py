"""Action plugin for avmigrate.migration.probe: runs the module's Linux implementation
(modules/probe.py) or, on a host whose shell is PowerShell, its Windows twin
(modules/win_probe.ps1). Ansible would otherwise pick between two files of one module name by
their order on disk, whatever the host."""

from __future__ import annotations

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        windows = getattr(self._connection._shell, "SHELL_FAMILY", "") == "powershell"
        module = "avmigrate.migration.win_probe" if windows else "avmigrate.migration.probe"
        args = dict(self._task.args)
        if windows:  # the preflight checks are Debian's (win_probe reads what Windows has)
            args.pop("preflight", None)
            args.pop("fail_on_problems", None)
        result.update(self._execute_module(module_name=module, module_args=args,
                                           task_vars=task_vars))
        return result
