"""Meters are windows: begin() / end() around a region, returning a frozen dataclass with units in
its field names. A meter never imports model code."""
