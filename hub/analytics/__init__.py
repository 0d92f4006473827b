"""Analytics: the member view (RFM, churn risk) in the database, the report's tables, and their charts."""

from hub.analytics.charts import to_csv, to_svg
from hub.analytics.report import BUILDERS, ReportTable, build

__all__ = ["BUILDERS", "ReportTable", "build", "to_csv", "to_svg"]
