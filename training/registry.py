"""The model registry: a registered version carries its tags, and the alias `champion` moves only by a decision
whose reason is written on the version (and on the run that asked for it). The gate that takes the decision
reads its margins and guardrails from `champion.yaml` beside this module."""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import yaml
from mlflow import MlflowClient

from loyal.errors import LoyalError, LoyalWarning

CHAMPION = "champion"
GATE = Path(__file__).with_name("champion.yaml")
_GATE_KEYS = {"churn": {"ece"}, "recommender": {"discover_ndcg", "coverage"}, "uplift": set()}


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


def champion_version(name: str, client: MlflowClient | None = None):
    """The version that carries `champion`, or None. `client`: the registry to ask (default: this process's)."""
    client = client or MlflowClient()
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


def load_champion(name: str, client: MlflowClient | None = None) -> Champion | None:
    """The champion of `name` with its model object (every family's pyfunc holds it as `model`), or None."""
    current = champion_version(name, client)
    if current is None:
        return None
    try:
        wrapper = load_version(name, str(current.version), client).unwrap_python_model()
    except UnloadableModel as error:
        # A champion that cannot be loaded cannot be measured, and must not stand in the way of one that can.
        warnings.warn(f"{error}; the challenger is measured against its baselines alone", LoyalWarning, stacklevel=2)
        return None
    return Champion(str(current.version), current.tags.get("train_window_end", ""), wrapper.model)


# ------------------------------------------------------------------------------------------- sealed artifacts
# A registered model is loaded only if its files are the ones its training run logged: the run records their
# SHA-256 (the tag below) and loading checks it before any file is read. A replaced or damaged artifact is then
# refused with one line naming it, instead of being run. A model is loaded only from code (its MLmodel names a code
# file, and its weights are arrays): a version pickled by an older Loyal is refused, never unpickled.
DIGEST_TAG = "loyal.model_sha256"


class UnloadableModel(LoyalError):
    """A registered model whose artifact is missing, altered or cannot be read."""


# MLflow writes this into a registered model's folder when it downloads it (the name and version asked for): it is
# not part of what was logged.
WRITTEN_ON_DOWNLOAD = {"registered_model_meta"}


def artifact_digest(folder: Path) -> str:
    """SHA-256 over every file under `folder` (but WRITTEN_ON_DOWNLOAD): its path relative to the folder and its
    bytes, in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name not in WRITTEN_ON_DOWNLOAD):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


MODEL_CODE = Path(__file__).with_name("model_code")  # one file per family: what MLflow registers it with


def register(name: str, model, artifact: str, signature, tags: dict[str, str]) -> str:
    """Log `model` on the active run and register it as a version of `name`: its `save(folder)` files as the
    artifact `artifact`, beside the family's code file (MLflow's models from code, so nothing is pickled), sealed
    with their digest and tagged with `tags`. Returns the version."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = model.save(Path(tmp) / artifact)
        # A copy written under the home's umask: MLflow keeps the mode of the file it is given (0644 in a checkout).
        code = Path(tmp) / f"{name.removeprefix('loyal-')}.py"
        code.write_bytes((MODEL_CODE / code.name).read_bytes())
        info = mlflow.pyfunc.log_model(name="model", python_model=str(code), artifacts={artifact: str(folder)},
                                       signature=signature, registered_model_name=name)
    seal(info.model_uri)
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return version


def seal(model_uri: str) -> str:
    """Record the digest of a model just logged on the active run; returns it."""
    with tempfile.TemporaryDirectory() as tmp:
        digest = artifact_digest(Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)))
    mlflow.set_tag(DIGEST_TAG, digest)
    return digest


def load_version(name: str, version: str | None = None, client: MlflowClient | None = None):
    """The registered pyfunc `name` at `version` (default: the one carrying `champion`) from `client`'s registry
    (default: this process's), loaded only after its files are checked against the digest its training run
    recorded. UnloadableModel, naming the artifact, otherwise."""
    with verified_files(name, version, client) as (local, label):
        try:
            return mlflow.pyfunc.load_model(str(local))
        except Exception as error:  # noqa: BLE001 - any failure to read the files is a damaged artifact
            raise UnloadableModel(f"cannot load {label}: {type(error).__name__}: {_first_line(error)}") from None


@contextlib.contextmanager
def verified_files(name: str, version: str | None = None, client: MlflowClient | None = None):
    """(a local folder holding the registered model's files, a label naming it), for as long as the context lasts,
    once the files are checked against the digest its training run recorded: what `load_version` loads, and what
    a Spark UDF ships to its executors."""
    client = client or MlflowClient()
    try:
        found = (client.get_model_version(name, version) if version is not None
                 else client.get_model_version_by_alias(name, CHAMPION))
    except mlflow.exceptions.MlflowException:
        raise LoyalError(f"{name} has no {'version ' + version if version else 'champion'}") from None
    try:
        where = client.get_model_version_download_uri(name, found.version)
    except mlflow.exceptions.MlflowException:
        where = found.source
    label = f"{name} version {found.version} ({where})"
    expected = client.get_run(found.run_id).data.tags.get(DIGEST_TAG) if found.run_id else None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=where, dst_path=tmp,
                                                             tracking_uri=client.tracking_uri))
        except Exception as error:  # noqa: BLE001 - whatever the store says, the model cannot be had
            raise UnloadableModel(f"cannot read {label}: {_first_line(error)}") from None
        if expected is None:
            raise UnloadableModel(f"{label} carries no digest of its files (registered before Loyal checked them): "
                                  "train it again")
        if artifact_digest(local) != expected:
            raise UnloadableModel(f"{label}: its files are not the ones registered (their SHA-256 differs); "
                                  "refusing to load them")
        if "model_code_path" not in _pyfunc_flavour(local):
            raise UnloadableModel(f"{label} was saved with pickle by an older Loyal, which no longer loads pickled "
                                  "models: train it again")
        yield local, label


def _pyfunc_flavour(folder: Path) -> dict:
    """The python_function part of a model folder's MLmodel file ({} where there is none)."""
    try:
        described = yaml.safe_load((folder / "MLmodel").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return ((described or {}).get("flavors") or {}).get("python_function") or {}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
