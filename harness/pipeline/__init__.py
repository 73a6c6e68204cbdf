"""The cell pipeline: one module that runs a cell on any backend and owns the meter lifecycle
(cell.py), the timed region (timed.py), the cell's meters (meters.py) and the record (assemble.py)."""
