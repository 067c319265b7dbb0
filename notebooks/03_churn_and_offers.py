# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Churn and offers
#
# The churn champion beside its baselines, read from its MLflow run (`evaluation.json`): ROC-AUC with 95%
# intervals, calibration and lift. Then, scoring everyone today: what drives the riskiest customers' risk, which
# offer the policy makes to whom, and how a campaign's expected retained value grows with its budget. It reads
# `$LOYAL_HOME` (default `./.loyal`, what `bash scripts/run.sh` leaves).

# %%
from loyal.home import loyal_home
from loyal.serving.campaign import value_by_budget
from loyal.app import reports
from loyal.training import plots

home = loyal_home()
version, report = reports.champion_evaluation(home, "loyal-churn")
window = reports.window_of(report)
part = report[window]
cutoff = report["test_cutoff"] if window == "test" else report["calibration_cutoff"]
print(f"loyal-churn version {version}, trained to {report['train_end']}; figures on its {window} snapshot {cutoff} "
      f"({part['customers']} customers, churn rate {part['churn_rate']:.3f}, horizon {report['horizon_days']} days)")

# %% [markdown]
# ## The network beside its baselines

# %%
models = reports.churn_table(part)
models

# %%
plots.intervals(models, "roc_auc", "ROC-AUC on the held-out snapshot");

# %% [markdown]
# ## Calibration and lift
#
# Calibration: the observed churn rate against the predicted probability, per bin (the diagonal is perfect).
# Lift: how many more churners than random a campaign reaches when it contacts the riskiest first.

# %%
plots.calibration({name: curves["calibration"] for name, curves in part["curves"].items()});

# %%
plots.lift({name: curves["lift"] for name, curves in part["curves"].items()});

# %% [markdown]
# ## What drives the risk of the riskiest
#
# For the customers in the high-risk segment: each input's mean contribution to their churn probability (in points,
# against a typical customer), and the share of them whose risk it raises.

# %%
drivers = reports.drivers_of_risk(home)
drivers.head(12)

# %%
plots.bars(dict(zip(drivers["driver"].head(12), drivers["mean_points"].head(12))),
           f"What raises the risk of the {drivers['customers'].iat[0]} high-risk customers",
           "mean contribution (points of churn probability)");

# %% [markdown]
# ## The offers the policy makes
#
# Every customer scored today and the incentive the offer policy (`serving/policy.yaml`) would give them, with the
# expected retained value it buys. "none" means no incentive pays for itself.

# %%
offers = reports.offers_for_everyone(home)
offers.groupby("incentive").agg(customers=("customer_id", "size"),
                                mean_churn_probability=("churn_probability", "mean"),
                                mean_expected_value=("expected_value", "mean"),
                                total_expected_gain=("expected_gain", "sum"),
                                total_expected_cost=("expected_cost", "sum")).round(3)

# %%
plots.histograms({name: group["churn_probability"].to_numpy() for name, group in offers.groupby("incentive")},
                 "churn probability", "Who gets which incentive");

# %% [markdown]
# ## A campaign's expected value against its budget
#
# The same list `loyal campaign` makes (opted-in customers only, the best expected retained value first), at a
# range of budgets, without recording anything: where the next pound of budget stops buying much.

# %%
budgets = value_by_budget(home, [100, 250, 500, 1000, 2000, 4000, 8000])
budgets

# %%
plots.line(budgets["budget_spent"], budgets["expected_gain"], "budget spent (expected cost of the incentives)",
           "expected retained value", "Expected value against budget");

# %% [markdown]
# ## Whom an offer changes: uplift, risk and random targeting
#
# Every campaign holds out a random control group, so its list is an experiment. `loyal train uplift` learns from
# the measured ones whom each incentive persuades, and `loyal evaluate uplift --budget B` judges three targetings on
# a campaign the model never saw: by learnt uplift, by churn risk (today's policy) and at random, each spending the
# same budget. The Qini is the mean height of the curve of incremental revenue above random targeting's; the
# incremental revenue is estimated from treatment against control among those picked, and on a synthetic shop the
# truth is known. A shop without measured campaigns (the real UCI file) has no such report yet.

# %%
uplift = reports.latest_uplift_evaluation(home)
print("no uplift evaluation yet: run `loyal train uplift` and `loyal evaluate uplift --budget B` on a shop with "
      "measured campaigns" if uplift is None else
      f"campaign {uplift['campaign']} ({uplift['rows']} customers listed), budget {uplift['budget']:,.0f}, "
      f"loyal-uplift version {uplift['uplift_model']['version']}")
reports.uplift_table(uplift) if uplift else None

# %%
plots.budget_curve(uplift["budget_curve"], ("uplift", "risk", "random")) if uplift else None;
