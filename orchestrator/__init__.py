"""avmigrate: move a fleet off a banned antivirus product without a protection gap."""

__version__ = "0.1.0"
