"""The lab: real Debian hosts booted with systemd on this machine, for demos and tests."""
