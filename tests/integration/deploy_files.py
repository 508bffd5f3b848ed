"""The deployment files, read for the tests: the metric names the dashboard and the alert rules use."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "radbridge.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
# names the service exports; `up` and the like are Prometheus's own
_NAME = re.compile(r"\b((?:radbridge|process)_[a-z0-9_]+)")


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    return exprs


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def used_metric_names() -> set[str]:
    exprs = dashboard_exprs() + [rule["expr"] for rule in alert_rules()]
    return {name for expr in exprs for name in _NAME.findall(expr)}
