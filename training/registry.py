"""The model registry: a registered version carries its tags, and the alias `champion` moves only by a decision
whose reason is written on the version (and on the run that asked for it). The gate that takes the decision
reads its margins and guardrails from `champion.yaml` beside this module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
import yaml
from mlflow import MlflowClient

from loyal.errors import LoyalError

CHAMPION = "champion"
GATE = Path(__file__).with_name("champion.yaml")
_GATE_KEYS = {"churn": {"ece"}, "recommender": {"discover_ndcg", "coverage"}}


@dataclass(frozen=True)
class Champion:
    """The version carrying `champion`, loaded: what a challenger is measured against."""
    version: str
    trained_to: str  # its train_window_end tag (YYYY-MM-DD): the day after the last data it learnt from
    model: object


def load_gate(path: Path = GATE) -> dict:
    """The gate's margin and guardrail tolerances per family, checked: all present, numbers, none negative."""
    try:
        gate = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise LoyalError(f"cannot read the champion gate {path}: {error}") from None
    for family, guardrails in _GATE_KEYS.items():
        part = gate.get(family) if isinstance(gate, dict) else None
        values = {"margin": (part or {}).get("margin")} | {
            g: ((part or {}).get("guardrails") or {}).get(g) for g in guardrails}
        for key, value in values.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise LoyalError(f"{path}: {family} {key} must be a number of at least 0, not {value!r}")
    return gate


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decided(failures: list[str], against: str, current, beats: str, better: str) -> Decision:
    """The gate's decision from what failed: kept, giving every reason and the comparison with the champion
    (`against`, empty without one); else promoted, saying what it beat (`beats` with no champion to measure,
    `better` with one)."""
    if failures:
        return Decision(False, "; ".join(failures) + (f" ({against})" if against else ""))
    if not against:
        was = "no champion before" if current is None else f"replaces version {current.version}"
        return Decision(True, f"{beats}; {was}")
    return Decision(True, f"{better} ({against})")


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


def load_champion(name: str) -> Champion | None:
    """The champion of `name` with its model object (the pyfunc's `model` or `recommender`), or None."""
    current = champion_version(name)
    if current is None:
        return None
    wrapper = mlflow.pyfunc.load_model(f"models:/{name}/{current.version}").unwrap_python_model()
    model = getattr(wrapper, "model", None) or getattr(wrapper, "recommender")
    return Champion(str(current.version), current.tags.get("train_window_end", ""), model)
