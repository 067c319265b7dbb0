"""The model registry: a registered version carries its tags, and the alias `champion` moves only by a decision
whose reason is written on the version (and on the run that asked for it)."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient

CHAMPION = "champion"


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def champion_version(name: str):
    """The version that carries `champion`, or None."""
    client = MlflowClient()
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None


def record_decision(name: str, version: str, decision: Decision) -> None:
    """Write the decision on the version (and the active run); move `champion` to it when promoted."""
    client = MlflowClient()
    previous = champion_version(name)
    client.set_model_version_tag(name, version, "champion_decision", "promoted" if decision.promote else "kept")
    client.set_model_version_tag(name, version, "champion_reason", decision.reason)
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, version)
        if previous is not None:
            client.set_model_version_tag(name, previous.version, "champion_replaced_by", str(version))
    if mlflow.active_run() is not None:
        mlflow.set_tags({"champion_decision": "promoted" if decision.promote else "kept",
                         "champion_reason": decision.reason})
