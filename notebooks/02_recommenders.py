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
# # The recommenders
#
# The recommender champion beside every baseline, read from its MLflow run (`evaluation.json`, the figures training
# measured; nothing is measured again here): NDCG@10 with 95% intervals, recall at k, catalogue coverage and
# popularity bias, then example rails for a few customers, with product descriptions. It reads `$LOYAL_HOME`
# (default `./.loyal`, what `bash scripts/run.sh` leaves).

# %%
from loyal.home import loyal_home
from loyal.store import read_table
from loyal.app import reports
from loyal.training import plots

home = loyal_home()
version, report = reports.champion_evaluation(home, "loyal-recommender")
window = reports.window_of(report)
part = report[window]
print(f"loyal-recommender version {version}, trained to {report['cutoff']}; figures on its {window} window "
      f"({part['test_customers']['all']} customers, {part['test_days']} days, {part['catalogue']} items)")

# %% [markdown]
# ## Every model, "all" view (what `for_you` is judged in)
#
# Any item the customer buys in the window counts. The baselines are fitted on the same purchases.

# %%
everything = reports.recommender_table(part, "all")
everything

# %%
plots.intervals(everything, "ndcg@10", "NDCG@10, all view");

# %% [markdown]
# ## "Explore" view (what `discover` is judged in)
#
# Only items new to the customer count: what they would not have found by themselves.

# %%
explore = reports.recommender_table(part, "explore")
plots.intervals(explore, "ndcg@10", "NDCG@10, explore view");

# %% [markdown]
# ## Each rail against its best baseline
#
# The paired difference in NDCG@10 over the same customers, with its 95% bootstrap interval: what the champion
# decision reads.

# %%
import pandas as pd  # noqa: E402

pd.DataFrame(part["comparison"]).T

# %% [markdown]
# ## Recall at k, coverage and popularity bias
#
# How much of what customers bought each model finds in its top k; how much of the catalogue its top 10 lists show
# at all; and how popular (distinct buyers before the cutoff) the items it recommends are: the higher, the more a
# model leans on best sellers.

# %%
plots.recall_at_k({name: m["recall_curve_all"] for name, m in part["models"].items()}, "all");

# %%
plots.bars({name: m["all"]["coverage"]["value"] for name, m in part["models"].items()},
           "Catalogue coverage of the top 10 (all view)", "share of the catalogue");

# %%
plots.bars({name: m["mean_buyers_of_top_10"] for name, m in part["models"].items()},
           "Popularity bias: mean distinct buyers of the recommended items", "distinct buyers before the cutoff");

# %% [markdown]
# ## Example rails
#
# Three customers with many purchases: what they bought lately, then what the champion shows them on `for_you`,
# `buy_again` and `discover`.

# %%
regulars = read_table(home, "transactions")["customer_id"].value_counts().index[[0, 10, 100]].tolist()
reports.example_rails(home, regulars)
