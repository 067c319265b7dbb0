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
# # The customers
#
# What the data is, before any model: what ingest set aside and why, orders over time, RFM segments, how each
# month's new customers come back, and the channel mix. It reads `$LOYAL_HOME` (default `./.loyal`, what
# `bash scripts/run.sh` leaves); `bash scripts/notebooks.sh` runs it from the repository root. The tables and plots
# come from `loyal.app.explore` and `loyal.training.plots`; this notebook only shows them.

# %%
from loyal.app import explore
from loyal.home import loyal_home
from loyal.training import plots

home = loyal_home()
print(f"LOYAL_HOME: {home.resolve()}")

# %% [markdown]
# ## What ingest set aside
#
# Rows that break the data contract go to the quarantine with the first rule they break. On the UCI file most are
# purchases without a customer id: guest checkouts, which no customer model can use.

# %%
reasons = explore.quarantine_reasons(home)
reasons

# %%
plots.bars(dict(zip(reasons["reason"], reasons["rows"])), "Rows set aside by ingest", "rows");

# %% [markdown]
# ## Orders over time
#
# Weekly orders, buying customers and revenue (returns left out).

# %%
weekly = explore.orders_over_time(home)
plots.over_time(weekly, "Every week");

# %% [markdown]
# ## RFM segments
#
# Recency, frequency and monetary value at the latest feature snapshot, scored 1-5 by quintile (5 is best), and the
# usual segments of the recency-frequency grid. The columns are the feature store's own features, not a second
# computation of them.

# %%
rfm = explore.rfm_segments(home)
segments = rfm.groupby("segment").agg(customers=("customer_id", "size"),
                                      median_recency_days=("recency_days", "median"),
                                      median_orders=("orders_total", "median"),
                                      median_spend=("spend_total", "median"))
segments.sort_values("customers", ascending=False)

# %%
plots.bars(segments["customers"].sort_values(ascending=False).to_dict(), "Customers per RFM segment", "customers");

# %% [markdown]
# ## Cohort retention
#
# Each row is the customers whose first purchase fell in that month; each cell the share of them who bought in the
# month that many months later. Blank cells lie beyond the data. The data's last month may be partial (the UCI file
# ends on 9 December 2011), so the last cell of each row is low for that reason alone.

# %%
retention = explore.cohort_retention(home)
plots.retention_heatmap(retention);

# %% [markdown]
# ## Channel mix
#
# Each channel's share of revenue by month. The UCI file has one channel (web); the synthetic retailer has web, app
# and store.

# %%
mix = explore.channel_mix(home)
plots.shares_over_time(mix, "Share of revenue by channel");
