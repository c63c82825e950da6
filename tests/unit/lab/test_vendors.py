"""The replacements' stand-in programs are valid Python as the lab writes them."""

from __future__ import annotations

import ast

from orchestrator.lab import vendors


def test_every_stand_in_program_parses() -> None:
    onaccess = vendors._onaccess()
    programs = {
        "wdavdaemon": vendors._WDAVDAEMON.format(
            onaccess=onaccess, released=vendors.MDATP_RELEASED, version=vendors.MDATP.version),
        "mdatp": vendors._MDATP.replace("{version}", vendors.MDATP.version),
        "falcond": vendors._FALCOND.format(onaccess=onaccess),
        "falconctl": vendors._FALCONCTL.replace("{version}", "7.18.17106.0"),
    }
    for name, source in programs.items():
        ast.parse(source, filename=name)
        assert source.startswith("#!/usr/bin/python3\n"), name
