from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from orchestrator.cli.main import cli
from orchestrator.core.models import Plan, Wave
from orchestrator.plan import planfile
from orchestrator.store.sqlite import SqliteStore


def all_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # with the groups loaded from entry points
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        out.append((prefix + name, cmd))
        if isinstance(cmd, click.Group):
            out.extend(all_commands(cmd, prefix + name + " "))
    return out


@pytest.mark.parametrize(("name", "cmd"), all_commands(cli))
def test_every_command_has_help(name: str, cmd: click.Command) -> None:
    assert cmd.help, f"{name} has no help text"
    result = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def one_line_error(result: object) -> str:
    output = getattr(result, "output", "")
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_missing_inventory_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "discover", "-i",
                                      str(tmp_path / "nope.ini")])
    assert result.exit_code == 2
    assert "inventory" in one_line_error(result)
    assert "does not exist" in result.output


def test_unreadable_state_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 200)
    result = CliRunner().invoke(cli, ["--state", str(bad), "status"])
    assert result.exit_code == 2
    assert "not a usable SQLite database" in one_line_error(result)


def test_status_without_state_says_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "none.db"), "status"])
    assert result.exit_code == 2
    assert "run `avmigrate discover`" in one_line_error(result)


def test_empty_inventory_is_refused(tmp_path: Path) -> None:
    inv = tmp_path / "inv.ini"
    inv.write_text("[web]\n")
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "plan", "-i", str(inv),
                                      "--no-discover"])
    assert result.exit_code == 2
    assert "has no hosts" in one_line_error(result)


def test_plan_without_discovery_writes_plan_files(tmp_path: Path) -> None:
    inv = tmp_path / "inv.ini"
    inv.write_text("[web]\n" + "".join(f"w{i} ansible_host=192.0.2.{i}\n" for i in range(1, 8)))
    out = tmp_path / "plan"
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "plan", "-i", str(inv),
                                      "--no-discover", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "plan.json").read_text())
    assert [len(w["hosts"]) for w in data["waves"]] == [1, 2, 4]
    plan = planfile.load_plan(out / "plan.json")
    assert len(plan.hosts) == 7
    assert "Canary wave" in (out / "plan.md").read_text()


def test_tampered_plan_is_refused(tmp_path: Path) -> None:
    plan = Plan(1.0, "a" * 64, "b" * 64, "clamav", "make-before-break", (Wave(0, ("h1",)),))
    data = planfile.plan_to_json(plan)
    data["waves"][0]["hosts"].append("intruder")
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    inv = tmp_path / "inv.ini"
    inv.write_text("h1\n")
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "run", "-i", str(inv),
                                      "--plan", str(path), "--yes"])
    assert result.exit_code == 2
    assert "edited after it was made" in one_line_error(result)


def test_plan_for_another_inventory_is_refused(tmp_path: Path) -> None:
    plan = Plan(1.0, "a" * 64, "b" * 64, "clamav", "make-before-break", (Wave(0, ("h1",)),))
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(planfile.plan_to_json(plan)))
    inv = tmp_path / "inv.ini"
    inv.write_text("h1\n")
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "run", "-i", str(inv),
                                      "--plan", str(path), "--yes"])
    assert result.exit_code == 2
    assert "inventory changed" in one_line_error(result)


def test_run_without_yes_and_without_terminal_refuses(tmp_path: Path) -> None:
    inv = tmp_path / "inv.ini"
    inv.write_text("h1 ansible_host=192.0.2.1\n")
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "run", "-i", str(inv)])
    assert result.exit_code == 2
    assert "--yes" in one_line_error(result)
    store = SqliteStore(tmp_path / "s.db")
    assert store.runs() == []  # nothing was started


def test_report_formats_from_state(tmp_path: Path) -> None:
    state = tmp_path / "s.db"
    store = SqliteStore(state)
    store.ensure_hosts(["h1"])
    store.close()
    for fmt, needle in (("md", "# avmigrate migration report"), ("csv", "host,state"),
                        ("json", '"hosts"')):
        result = CliRunner().invoke(cli, ["--state", str(state), "report", "--format", fmt])
        assert result.exit_code == 0, result.output
        assert needle in result.output


def test_lab_name_is_validated() -> None:
    result = CliRunner().invoke(cli, ["lab", "status", "--lab", "bad name!"])
    assert result.exit_code == 7
    assert "lab name" in one_line_error(result)


def test_lab_status_without_a_lab_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    monkeypatch.setenv("AVMIGRATE_LAB_ROOT", str(tmp_path))
    result = CliRunner().invoke(cli, ["lab", "status", "--lab", "nolab"])
    assert result.exit_code == 7
    assert "run `avmigrate lab up` first" in one_line_error(result)


def test_second_operator_is_refused_naming_the_holder(tmp_path: Path) -> None:
    from orchestrator.store.records import LeaseHolder  # noqa: PLC0415

    state = tmp_path / "s.db"
    store = SqliteStore(state)
    store.acquire_lease(LeaseHolder("alice", "ops-box-7", 4242, machine="ops-box-7"), ttl=600)
    store.close()
    inv = tmp_path / "inv.ini"
    inv.write_text("h1 ansible_host=192.0.2.1\n")
    result = CliRunner().invoke(cli, ["--state", str(state), "run", "-i", str(inv), "--yes"])
    assert result.exit_code == 8
    line = one_line_error(result)
    assert "alice on ops-box-7, pid 4242" in line
    assert SqliteStore(state).runs() == []  # refused before anything started


def test_approve_records_the_operator_for_the_plan(tmp_path: Path) -> None:
    from orchestrator.plan import planner  # noqa: PLC0415

    plan = Plan(1.0, "a" * 64, "b" * 64, "clamav", "make-before-break",
                (Wave(0, ("h1",)), Wave(1, ("h2", "h3"))))
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(planfile.plan_to_json(plan)))
    state = tmp_path / "s.db"
    result = CliRunner().invoke(cli, ["--state", str(state), "approve", "--wave", "1",
                                      "--plan", str(path)])
    assert result.exit_code == 0, result.output
    approvals = SqliteStore(state).approvals(planner.plan_key(plan))
    assert set(approvals) == {1}
    bad = CliRunner().invoke(cli, ["--state", str(state), "approve", "--wave", "5",
                                   "--plan", str(path)])
    assert bad.exit_code == 2
    assert "has waves 0 to 1" in one_line_error(bad)


def test_require_approval_needs_a_plan(tmp_path: Path) -> None:
    inv = tmp_path / "inv.ini"
    inv.write_text("h1\n")
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "run", "-i", str(inv),
                                      "--yes", "--require-approval"])
    assert result.exit_code == 2
    assert "needs --plan" in one_line_error(result)


def test_zero_budget_is_refused(tmp_path: Path) -> None:
    inv = tmp_path / "inv.ini"
    inv.write_text("h1\n")
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "run", "-i", str(inv),
                                      "--yes", "--max-unprotected", "0"])
    assert result.exit_code == 2
    assert "--max-unprotected: must be at least 1" in one_line_error(result)


def test_plan_with_policy_writes_every_format_and_json(tmp_path: Path) -> None:
    inv = tmp_path / "inv.ini"
    inv.write_text("[workstations]\n" + "".join(f"ws{i} ansible_host=192.0.2.{i}\n"
                                                for i in range(1, 6))
                   + "[servers]\nsrv1 ansible_host=192.0.2.100\n")
    out = tmp_path / "plan"
    policy = Path(__file__).resolve().parents[3] / "inventory" / "policy.example.yml"
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "plan", "-i", str(inv),
                                      "--no-discover", "--policy", str(policy),
                                      "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed == json.loads((out / "plan.json").read_text())
    # Workstations first, in their own waves; the server last, alone in its window.
    assert printed["waves"][-1] == {"number": len(printed["waves"]) - 1, "hosts": ["srv1"],
                                    "window": "servers"}
    assert printed["policy"]["approvals"] == {"required": True}
    html = (out / "plan.html").read_text()
    assert "<svg" in html and "srv1" in html and "ws5" in html
    rows = (out / "plan.csv").read_text().splitlines()
    assert rows[0].startswith("wave,host,groups,window,estimated_start")
    assert len(rows) == 1 + 6
    assert "## Waves" in (out / "plan.md").read_text()


def test_run_of_a_plan_says_what_changed_in_the_inventory(tmp_path: Path) -> None:
    inv = tmp_path / "inv.ini"
    inv.write_text("h1 ansible_host=192.0.2.1\nh2 ansible_host=192.0.2.2\n")
    out = tmp_path / "plan"
    made = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "plan", "-i", str(inv),
                                    "--no-discover", "--out", str(out)])
    assert made.exit_code == 0, made.output
    inv.write_text("h1 ansible_host=192.0.2.9\nh3 ansible_host=192.0.2.3\n")
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "run", "-i", str(inv),
                                      "--plan", str(out / "plan.json"), "--yes"])
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "hosts added: h3" in line
    assert "hosts removed: h2" in line
    assert "groups or variables changed on h1" in line


def test_run_of_a_plan_refuses_options_that_would_change_it(tmp_path: Path) -> None:
    inv = tmp_path / "inv.ini"
    inv.write_text("h1 ansible_host=192.0.2.1\n")
    out = tmp_path / "plan"
    CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "plan", "-i", str(inv),
                             "--no-discover", "--out", str(out)])
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "run", "-i", str(inv),
                                      "--plan", str(out / "plan.json"), "--yes",
                                      "--max-unprotected", "5"])
    assert result.exit_code == 2
    assert "--max-unprotected cannot be used with --plan" in one_line_error(result)
    for extra in (["--replacement", "mde"], ["--protect-unprotected"]):
        result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "run", "-i",
                                          str(inv), "--plan", str(out / "plan.json"), "--yes",
                                          *extra])
        assert result.exit_code == 2
        assert f"{extra[0]} cannot be used with --plan" in one_line_error(result)


def test_a_replacement_that_needs_a_missing_credential_stops_the_run_first(
        tmp_path: Path) -> None:
    inv = tmp_path / "inv.ini"
    inv.write_text("h1 ansible_host=192.0.2.1 avmigrate_replacement=falcon\n")
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "run", "-i", str(inv),
                                      "--yes"])
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "CrowdStrike Falcon sensor needs the credential falcon_cid" in line
    assert "--credentials" in line


def test_an_invalid_policy_is_one_line_naming_file_line_and_key(tmp_path: Path) -> None:
    inv = tmp_path / "inv.ini"
    inv.write_text("h1 ansible_host=192.0.2.1\n")
    pol = tmp_path / "policy.yml"
    pol.write_text("gates:\n  soak_minutes: -3\n")
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "plan", "-i", str(inv),
                                      "--no-discover", "--policy", str(pol)])
    assert result.exit_code == 2
    assert one_line_error(result).startswith(
        f"avmigrate: error: {pol}:2: gates.soak_minutes: must be a number")


def test_status_of_a_large_fleet_counts_and_lists_what_needs_attention(tmp_path: Path) -> None:
    from orchestrator.core.models import HostState  # noqa: PLC0415
    from orchestrator.store.records import Move  # noqa: PLC0415
    from orchestrator.store.sqlite import SqliteStore  # noqa: PLC0415

    state = tmp_path / "s.db"
    store = SqliteStore(state)
    names = [f"h{i:04d}" for i in range(300)]
    store.ensure_hosts(names)
    store.apply([Move(n, HostState.CLEAN, "none") for n in names[:200]], None)
    store.apply([Move(n, HostState.INSTALLING, "go") for n in names[200:270]], None)
    store.apply([Move(n, HostState.INSTALL_FAILED, "disk full") for n in names[200:260]], None)
    store.close()
    result = CliRunner().invoke(cli, ["--state", str(state), "status"])
    assert result.exit_code == 4, result.output  # a step failed on some hosts
    lines = result.output.splitlines()
    assert lines[0] == "300 hosts: pending 30, clean 200, installing 10, install_failed 60"
    assert "h0200" in result.output and "h0249" in result.output  # the first 50 of 70
    assert "h0250" not in result.output and "h0000" not in result.output
    assert lines[-1] == ("and 20 more that need attention: avmigrate status "
                         "--only install_failed --only installing")
    only = CliRunner().invoke(cli, ["--state", str(state), "status", "--only", "installing"])
    assert {f"h{i:04d}" for i in range(260, 270)} <= set(only.output.split())
    assert "h0200" not in only.output
    every = CliRunner().invoke(cli, ["--state", str(state), "status", "--all"])
    assert "h0000" in every.output and "h0299" in every.output


def test_the_cli_offers_the_engines_strategies() -> None:
    from orchestrator.core.models import Strategy  # noqa: PLC0415

    run = cli.get_command(click.Context(cli), "run")
    assert run is not None
    option = next(p for p in run.params if p.name == "strategy")
    assert isinstance(option.type, click.Choice)
    assert list(option.type.choices) == [s.value for s in Strategy]


def test_the_fleet_budget_is_shown_set_and_refused_when_bad(tmp_path: Path) -> None:
    state = str(tmp_path / "s.db")
    SqliteStore(Path(state)).ensure_hosts([f"h{i}" for i in range(300)])
    shown = CliRunner().invoke(cli, ["--state", state, "budget"])
    assert shown.exit_code == 0, shown.output
    assert "fleet budget: not set" in shown.output
    assert "0 host(s) hold a slot now" in shown.output
    set_ = CliRunner().invoke(cli, ["--state", state, "budget", "--set", "1%"])
    assert set_.exit_code == 0, set_.output
    assert "fleet budget: 1% (3 host(s) of 300 at once; set by" in set_.output
    bad = CliRunner().invoke(cli, ["--state", state, "budget", "--set", "0"])
    assert bad.exit_code == 2
    assert "must be at least 1" in one_line_error(bad)
    audit = CliRunner().invoke(cli, ["--state", state, "audit", "show"])
    assert '"to": "1%"' in audit.output


@pytest.mark.parametrize(("given", "needle"), [("1%x", "neither a number of hosts"),
                                               ("150%", "at most 100%")])
def test_a_bad_budget_on_the_command_line_is_one_line(tmp_path: Path, given: str,
                                                      needle: str) -> None:
    inv = tmp_path / "inv.ini"
    inv.write_text("h1\n")
    result = CliRunner().invoke(cli, ["--state", str(tmp_path / "s.db"), "run", "-i", str(inv),
                                      "--yes", "--max-unprotected", given])
    assert result.exit_code == 2
    assert needle in one_line_error(result)


@click.group()
def extra_group() -> None:
    """A command group another package registers."""


@extra_group.command()
def hello() -> None:
    """Say hello."""
    click.echo("hello from a plugin")


def test_command_groups_are_loaded_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint  # noqa: PLC0415

    from orchestrator.cli import main  # noqa: PLC0415

    points = (EntryPoint("extra", f"{__name__}:extra_group", main.ENTRY_POINT_GROUP),
              EntryPoint("gone", "no_such_package.cli:group", main.ENTRY_POINT_GROUP))
    monkeypatch.setattr(main, "command_entry_points", lambda: points)
    assert "extra" in cli.list_commands(click.Context(cli))
    result = CliRunner().invoke(cli, ["extra", "hello"])
    assert result.exit_code == 0, result.output
    assert "hello from a plugin" in result.output
    assert CliRunner().invoke(cli, ["gone"]).exit_code == 2  # no such command
    assert CliRunner().invoke(cli, ["lab", "--help"]).exit_code == 2  # not registered here


def test_the_lab_is_offered_through_its_installed_entry_point(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata  # noqa: PLC0415

    from orchestrator.cli import main  # noqa: PLC0415

    installed = {ep.name: ep.value for ep in main.command_entry_points()}
    assert installed.get("lab") == "orchestrator.lab.cli:lab", installed
    result = CliRunner().invoke(cli, ["lab", "--help"])
    assert result.exit_code == 0, result.output
    assert "systemd-nspawn" in result.output
    # Nothing in production code names the lab: without the entry point, no lab command.
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: ())
    assert CliRunner().invoke(cli, ["lab", "--help"]).exit_code == 2


def test_the_production_commands_never_import_the_lab(tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = ("import sys; from orchestrator.cli.cli import cli; "
            "from click.testing import CliRunner; "
            f"CliRunner().invoke(cli, ['--state', {str(tmp_path / 'none.db')!r}, 'status']); "
            "print(sorted(m for m in sys.modules if m.startswith('orchestrator.lab')))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
    assert found.stdout.strip() == "[]", found.stdout


def test_status_loads_no_template_engine_ansible_or_report_module(tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    state = tmp_path / "s.db"
    SqliteStore(state).close()
    code = ("import importlib.util, sys; from orchestrator.cli.cli import cli; "
            "from click.testing import CliRunner; "
            f"CliRunner().invoke(cli, ['--state', {str(state)!r}, 'status']); "
            "print(sorted(m for m, mod in sys.modules.items() "
            "if m.split('.')[0] in ('jinja2', 'ansible_runner') "
            "or (m.startswith('orchestrator.report.') "
            "and not isinstance(mod, importlib.util._LazyModule))))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
    assert found.stdout.strip() == "[]", found.stdout
