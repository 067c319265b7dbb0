"""Third-party warnings that tell a Loyal user nothing they can act on, silenced in this one place: by the command
line and the service when they start, and by the tests (tests/conftest.py adds them to pytest's filters).

Each filter is written as Python's -W option and pytest's `filterwarnings` write one,
action:message:category:module (no colon inside a part: "." stands for one in a message). Each names the library and why it is not Loyal's to fix. Loyal's own warnings
(`loyal.errors.LoyalWarning`) are never filtered, and are errors in the tests.
"""

from __future__ import annotations

import importlib
import warnings

THIRD_PARTY = (
    # BentoML 1.4 builds its request models with a Pydantic hook deprecated in Pydantic 2.11, and reads
    # `model_fields` from instances on every request.
    "ignore::pydantic.warnings.PydanticDeprecatedSince211:_bentoml_(sdk|impl)",
    # pymc-marketing's budget optimizer (imported with its BG/NBD models) declares Fields in the Pydantic 1 style.
    "ignore::pydantic.warnings.PydanticDeprecatedSince20:pymc_marketing",
    # ArviZ (imported with those models) announces its coming refactor once a day, on the first import.
    r"ignore:\sArviZ is undergoing a major refactor:FutureWarning:arviz",
    # pathspec deprecated the pattern name BentoML asks it for.
    "ignore:GitWildMatchPattern:DeprecationWarning:pathspec",
    # MLflow's SQL store uses a SQLAlchemy loader strategy SQLAlchemy 2 deprecates.
    "ignore:The ``noload`` loader strategy:sqlalchemy.exc.SADeprecationWarning:mlflow",
    # MLflow's hints when a model is logged: integer columns in the signature (Loyal's ids and counts are never
    # missing), and no input example (the signature is given).
    "ignore:Hint. Inferred schema contains integer column:UserWarning:mlflow",
    "ignore:.*An input example was not provided:UserWarning:mlflow",
    # Feast calls its Spark data source "alpha" on every source it makes (the Spark offline store of `--engine
    # spark`); Loyal pins Feast and tests the engines against each other.
    "ignore:The spark data source API is an experimental feature:RuntimeWarning:feast",
    # SHAP (which causalml, the uplift baselines, imports) sets its colour maps with calls Matplotlib will deprecate.
    "ignore:The set_(bad|over|under) function will be deprecated:PendingDeprecationWarning:shap",
    # Starlette's test client asks for httpx2; the tests use the httpx it works with today.
    "ignore:Using `httpx` with `starlette.testclient` is deprecated::",
)


def silence_third_parties() -> None:
    """Apply THIRD_PARTY to this process's warning filters."""
    for spec in THIRD_PARTY:
        action, message, category, module = (spec.split(":") + ["", "", "", ""])[:4]
        warnings.filterwarnings(action, message=message, category=_category(category), module=module)


def _category(name: str) -> type[Warning]:
    """A warning class by its name: a builtin one, or a dotted path."""
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module or "builtins"), attribute or "Warning")
