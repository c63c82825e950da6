"""The engine: drives each host through its migration steps (see engine.py for the map)."""
