"""Views of Records: Markdown report and charts. Nothing here imports torch or re-measures."""
from harness.report.charts import write_charts
from harness.report.markdown import render_report, write_report

__all__ = ["render_report", "write_report", "write_charts"]
