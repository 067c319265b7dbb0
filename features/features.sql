-- Every feature of the catalogue (features/compute.py), defined once, in Spark SQL. The embedded engine runs these
-- queries on DuckDB after SQLGlot transpiles them; `--engine spark` runs them as written (features/engines.py).
--
-- Tables the engine provides: transactions, events and customers (the canonical tables, features/../schema.py) and
-- snapshots (event_timestamp, us, day): the snapshot times, as timestamps, as microseconds and as whole days since
-- 1970. A row stamped T holds values computed from events strictly before T, so a point-in-time join that takes the
-- latest row at or before a time never sees anything from at or after it.
--
-- How the windows work: each entity's activity is summed per day; each snapshot is one more row of the entity at
-- its day; a window function over the days, RANGE BETWEEN N PRECEDING AND 1 PRECEDING, then sums the N whole days
-- before the snapshot. Both engines sort each entity's rows once for all of its windows.
--
-- Definitions that the numbers depend on:
-- - a purchase is a transaction row with quantity > 0, a return one with quantity < 0; a customer enters the
--   features with their first purchase, an item with its first sale;
-- - an order is an order_id (where the retailer gives none, the customer's basket at one instant); it counts once
--   per day on which it has purchase rows, on the channel first in alphabetical order among its lines' (an order
--   lives on one channel in practice);
-- - money is summed in whole ten-thousandths of the currency ({money_scale} to the unit), logs in ten-thousandths
--   too, so a sum does not depend on the order of addition and is equal on every engine.
-- Placeholders in braces are Loyal's constants, filled in before the query runs.

-- name: customer_behaviour
WITH lines AS (
  SELECT customer_id, item_id, quantity, unit_price,
         COALESCE(order_id, CONCAT('@', CAST(UNIX_MICROS(timestamp) AS STRING))) AS order_key,
         COALESCE(channel, '{default_channel}') AS channel,
         UNIX_MICROS(timestamp) AS us,
         UNIX_MICROS(timestamp) DIV {day_us} AS day,
         CAST(ROUND(quantity * unit_price * {money_scale}) AS BIGINT) AS money
  FROM transactions
),
buyers AS (
  SELECT customer_id, MIN(us) AS first_us FROM lines WHERE quantity > 0 GROUP BY customer_id
),
orders AS (
  SELECT customer_id, day, order_key, MIN(channel) AS channel
  FROM lines WHERE quantity > 0 GROUP BY customer_id, day, order_key
),
order_days AS (
  SELECT customer_id, day, COUNT(*) AS orders,
         SUM(CASE WHEN channel = 'web' THEN 1 ELSE 0 END) AS web_orders,
         SUM(CASE WHEN channel = 'app' THEN 1 ELSE 0 END) AS app_orders,
         SUM(CASE WHEN channel = 'store' THEN 1 ELSE 0 END) AS store_orders
  FROM orders GROUP BY customer_id, day
),
-- The gap before each purchase day (whole days since the customer's previous one); none before the first.
gaps AS (
  SELECT customer_id, day, day - LAG(day) OVER (PARTITION BY customer_id ORDER BY day) AS gap FROM order_days
),
bought AS (
  SELECT DISTINCT customer_id, item_id, day FROM lines WHERE quantity > 0
),
-- Views and add-to-carts of customers with a purchase; an add-to-cart converts when its item was bought that day.
browsing AS (
  SELECT e.customer_id, UNIX_MICROS(e.timestamp) DIV {day_us} AS day,
         CASE WHEN e.event_type = 'view' THEN 1 ELSE 0 END AS views,
         CASE WHEN e.event_type = 'add_to_cart' THEN 1 ELSE 0 END AS carts,
         CASE WHEN e.event_type = 'add_to_cart' AND b.item_id IS NOT NULL THEN 1 ELSE 0 END AS converted
  FROM events e
  JOIN buyers USING (customer_id)
  LEFT JOIN bought b ON b.customer_id = e.customer_id AND b.item_id = e.item_id
                    AND b.day = UNIX_MICROS(e.timestamp) DIV {day_us}
),
activity AS (
  SELECT customer_id, day,
         SUM(CASE WHEN quantity > 0 THEN money ELSE 0 END) AS spend,
         SUM(CASE WHEN quantity < 0 THEN -money ELSE 0 END) AS returned,
         SUM(CASE WHEN quantity > 0 THEN 1 ELSE 0 END) AS purchase_lines,
         SUM(CASE WHEN quantity > 0 THEN CAST(ROUND(LN(1 + quantity) * {log_scale}) AS BIGINT) ELSE 0 END)
           AS log_quantity,
         SUM(CASE WHEN quantity > 0 THEN CAST(ROUND(LN(1 + GREATEST(unit_price, 0)) * {log_scale}) AS BIGINT)
             ELSE 0 END) AS log_price,
         MAX(CASE WHEN quantity > 0 THEN us END) AS last_us,
         0 AS orders, 0 AS web_orders, 0 AS app_orders, 0 AS store_orders, 0 AS purchase_days,
         0 AS gap_sum, 0 AS gap_squares, 0 AS views, 0 AS carts, 0 AS converted
  FROM lines JOIN buyers USING (customer_id) GROUP BY customer_id, day
  UNION ALL
  SELECT o.customer_id, o.day, 0, 0, 0, 0, 0, NULL, o.orders, o.web_orders, o.app_orders, o.store_orders, 1,
         COALESCE(g.gap, 0), COALESCE(g.gap * g.gap, 0), 0, 0, 0
  FROM order_days o JOIN gaps g ON g.customer_id = o.customer_id AND g.day = o.day
  UNION ALL
  SELECT customer_id, day, 0, 0, 0, 0, 0, NULL, 0, 0, 0, 0, 0, 0, 0, views, carts, converted FROM browsing
),
-- One row per customer and snapshot from their first purchase on, beside their activity, then the windows (an
-- empty window sums to NULL, which counts 0). Money goes back to the currency unit only at the end.
timeline AS (
  SELECT customer_id, day, NULL AS snapshot_us, NULL AS first_us, spend, returned, purchase_lines, log_quantity,
         log_price, last_us, orders, web_orders, app_orders, store_orders, purchase_days, gap_sum, gap_squares,
         views, carts, converted
  FROM activity
  UNION ALL
  SELECT b.customer_id, s.day, s.us, b.first_us, 0, 0, 0, 0, 0, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
  FROM buyers b JOIN snapshots s ON b.first_us < s.us
),
windows AS (
  SELECT customer_id, snapshot_us, first_us,
         MAX(last_us) OVER (PARTITION BY customer_id ORDER BY day {before}) AS last_us,
         COALESCE(SUM(orders) OVER (PARTITION BY customer_id ORDER BY day {last_30}), 0) AS orders_30d,
         COALESCE(SUM(orders) OVER (PARTITION BY customer_id ORDER BY day {last_90}), 0) AS orders_90d,
         COALESCE(SUM(orders) OVER (PARTITION BY customer_id ORDER BY day {last_365}), 0) AS orders_365d,
         COALESCE(SUM(orders) OVER (PARTITION BY customer_id ORDER BY day {before}), 0) AS orders_total,
         COALESCE(SUM(spend) OVER (PARTITION BY customer_id ORDER BY day {last_30}), 0) AS spend_30d,
         COALESCE(SUM(spend) OVER (PARTITION BY customer_id ORDER BY day {last_90}), 0) AS spend_90d,
         COALESCE(SUM(spend) OVER (PARTITION BY customer_id ORDER BY day {the_90_before_the_last_90}), 0)
           AS spend_previous_90d,
         COALESCE(SUM(spend) OVER (PARTITION BY customer_id ORDER BY day {last_365}), 0) AS spend_365d,
         COALESCE(SUM(spend) OVER (PARTITION BY customer_id ORDER BY day {before}), 0) AS spend_total,
         COALESCE(SUM(returned) OVER (PARTITION BY customer_id ORDER BY day {last_365}), 0) AS returns_365d,
         COALESCE(SUM(purchase_days) OVER (PARTITION BY customer_id ORDER BY day {before}), 0) AS purchase_days_total,
         COALESCE(SUM(purchase_days) OVER (PARTITION BY customer_id ORDER BY day {last_180}), 0) AS purchase_days_180d,
         COALESCE(SUM(gap_sum) OVER (PARTITION BY customer_id ORDER BY day {before}), 0) AS gap_sum,
         COALESCE(SUM(gap_squares) OVER (PARTITION BY customer_id ORDER BY day {before}), 0) AS gap_squares,
         COALESCE(SUM(purchase_lines) OVER (PARTITION BY customer_id ORDER BY day {last_365}), 0) AS lines_365d,
         COALESCE(SUM(log_quantity) OVER (PARTITION BY customer_id ORDER BY day {last_365}), 0) AS log_quantity_365d,
         COALESCE(SUM(log_price) OVER (PARTITION BY customer_id ORDER BY day {last_365}), 0) AS log_price_365d,
         COALESCE(SUM(web_orders) OVER (PARTITION BY customer_id ORDER BY day {last_365}), 0) AS web_orders_365d,
         COALESCE(SUM(app_orders) OVER (PARTITION BY customer_id ORDER BY day {last_365}), 0) AS app_orders_365d,
         COALESCE(SUM(store_orders) OVER (PARTITION BY customer_id ORDER BY day {last_365}), 0) AS store_orders_365d,
         COALESCE(SUM(views) OVER (PARTITION BY customer_id ORDER BY day {last_30}), 0) AS views_30d,
         COALESCE(SUM(carts) OVER (PARTITION BY customer_id ORDER BY day {last_30}), 0) AS add_to_carts_30d,
         COALESCE(SUM(converted) OVER (PARTITION BY customer_id ORDER BY day {last_30}), 0) AS converted_30d
  FROM timeline
)
SELECT s.customer_id, t.event_timestamp,
       CAST((s.snapshot_us - s.last_us) DIV {day_us} AS BIGINT) AS recency_days,
       CAST((s.snapshot_us - s.first_us) DIV {day_us} AS BIGINT) AS tenure_days,
       CAST(s.orders_30d AS BIGINT) AS orders_30d, CAST(s.orders_90d AS BIGINT) AS orders_90d,
       CAST(s.orders_365d AS BIGINT) AS orders_365d, CAST(s.orders_total AS BIGINT) AS orders_total,
       CAST(s.spend_30d AS DOUBLE) / {money_scale} AS spend_30d,
       CAST(s.spend_90d AS DOUBLE) / {money_scale} AS spend_90d,
       CAST(s.spend_365d AS DOUBLE) / {money_scale} AS spend_365d,
       CAST(s.spend_total AS DOUBLE) / {money_scale} AS spend_total,
       CAST(s.returns_365d AS DOUBLE) / {money_scale} AS returns_365d,
       CASE WHEN s.orders_365d > 0 THEN CAST(s.spend_365d AS DOUBLE) / s.orders_365d / {money_scale} ELSE 0.0 END
         AS avg_order_value_365d,
       CASE WHEN s.orders_total >= 2
            THEN CAST(s.last_us - s.first_us AS DOUBLE) / {day_us} / (s.orders_total - 1) END
         AS mean_days_between_orders,
       CAST(s.purchase_days_total AS BIGINT) AS purchase_days_total,
       CAST(s.purchase_days_180d AS BIGINT) AS purchase_days_180d,
       -- the population std of the gaps, from integer sums: sqrt(n * sum(g^2) - sum(g)^2) / n
       CASE WHEN s.purchase_days_total >= 2
            THEN SQRT(CAST((s.purchase_days_total - 1) * s.gap_squares - s.gap_sum * s.gap_sum AS DOUBLE))
                 / (s.purchase_days_total - 1) END AS gap_std_days,
       CASE WHEN s.orders_365d > 0 THEN CAST(s.lines_365d AS DOUBLE) / s.orders_365d ELSE 0.0 END
         AS lines_per_order_365d,
       CASE WHEN s.lines_365d > 0 THEN EXP(CAST(s.log_quantity_365d AS DOUBLE) / s.lines_365d / {log_scale}) - 1
            ELSE 0.0 END AS typical_quantity_per_line_365d,
       CASE WHEN s.lines_365d > 0 THEN EXP(CAST(s.log_price_365d AS DOUBLE) / s.lines_365d / {log_scale}) - 1
            ELSE 0.0 END AS typical_unit_price_365d,
       CASE WHEN s.spend_90d + s.spend_previous_90d > 0
            THEN CAST(s.spend_90d - s.spend_previous_90d AS DOUBLE) / (s.spend_90d + s.spend_previous_90d)
            ELSE 0.0 END AS spend_trend,
       CASE WHEN s.orders_365d > 0 THEN CAST(s.web_orders_365d AS DOUBLE) / s.orders_365d ELSE 0.0 END
         AS web_share_365d,
       CASE WHEN s.orders_365d > 0 THEN CAST(s.app_orders_365d AS DOUBLE) / s.orders_365d ELSE 0.0 END
         AS app_share_365d,
       CASE WHEN s.orders_365d > 0 THEN CAST(s.store_orders_365d AS DOUBLE) / s.orders_365d ELSE 0.0 END
         AS store_share_365d,
       CAST(s.views_30d AS BIGINT) AS views_30d, CAST(s.add_to_carts_30d AS BIGINT) AS add_to_carts_30d,
       CASE WHEN s.add_to_carts_30d > 0 THEN CAST(s.converted_30d AS DOUBLE) / s.add_to_carts_30d ELSE 0.0 END
         AS cart_conversion_30d
FROM windows s JOIN snapshots t ON t.us = s.snapshot_us;

-- name: item_statistics
WITH sales AS (
  SELECT item_id, customer_id, quantity, UNIX_MICROS(timestamp) AS us, UNIX_MICROS(timestamp) DIV {day_us} AS day,
         CAST(ROUND(quantity * unit_price * {money_scale}) AS BIGINT) AS money
  FROM transactions WHERE quantity > 0
),
items AS (
  SELECT item_id, MIN(us) AS first_us FROM sales GROUP BY item_id
),
-- Each customer's purchase days of an item, with their previous and next such day.
buyer_days AS (
  SELECT item_id, day,
         LAG(day) OVER (PARTITION BY item_id, customer_id ORDER BY day) AS previous_day,
         LEAD(day) OVER (PARTITION BY item_id, customer_id ORDER BY day) AS next_day
  FROM (SELECT DISTINCT item_id, customer_id, day FROM sales)
),
-- A buyer counts for a window of N days at the snapshots T in [day + 1, min(next day, day + N)]: from the day
-- after the purchase until it leaves the window or the next purchase of the item takes over. A repeat buyer (two
-- purchase days inside 365 days) counts from the later day until the earlier leaves the window or the next takes
-- over. Each interval is a +1 at its first day and a -1 the day after its last; a running sum counts them.
counted AS (
  SELECT item_id, day + 1 AS day, 1 AS buyers_7d, 1 AS buyers_30d, 1 AS buyers_90d, 1 AS buyers_365d,
         CASE WHEN previous_day IS NOT NULL AND previous_day + 365 > day THEN 1 ELSE 0 END AS repeat_buyers
  FROM buyer_days
  UNION ALL
  SELECT item_id, LEAST(COALESCE(next_day, day + 7), day + 7) + 1, -1, 0, 0, 0, 0 FROM buyer_days
  UNION ALL
  SELECT item_id, LEAST(COALESCE(next_day, day + 30), day + 30) + 1, 0, -1, 0, 0, 0 FROM buyer_days
  UNION ALL
  SELECT item_id, LEAST(COALESCE(next_day, day + 90), day + 90) + 1, 0, 0, -1, 0, 0 FROM buyer_days
  UNION ALL
  SELECT item_id, LEAST(COALESCE(next_day, day + 365), day + 365) + 1, 0, 0, 0, -1, 0 FROM buyer_days
  UNION ALL
  SELECT item_id, LEAST(COALESCE(next_day, previous_day + 365), previous_day + 365) + 1, 0, 0, 0, 0, -1
  FROM buyer_days WHERE previous_day IS NOT NULL AND previous_day + 365 > day
),
activity AS (
  SELECT item_id, day, SUM(money) AS revenue, SUM(quantity) AS units, COUNT(*) AS sale_lines,
         0 AS buyers_7d, 0 AS buyers_30d, 0 AS buyers_90d, 0 AS buyers_365d, 0 AS repeat_buyers
  FROM sales GROUP BY item_id, day
  UNION ALL
  -- Summed per item and day first: at most items x days rows for the windows, whatever the number of buyers.
  SELECT item_id, day, 0, 0, 0, SUM(buyers_7d), SUM(buyers_30d), SUM(buyers_90d), SUM(buyers_365d),
         SUM(repeat_buyers)
  FROM counted GROUP BY item_id, day
),
timeline AS (
  SELECT item_id, day, NULL AS snapshot_us, revenue, units, sale_lines, buyers_7d, buyers_30d, buyers_90d,
         buyers_365d, repeat_buyers
  FROM activity
  UNION ALL
  SELECT i.item_id, s.day, s.us, 0, 0, 0, 0, 0, 0, 0, 0 FROM items i JOIN snapshots s ON i.first_us < s.us
),
windows AS (
  SELECT item_id, snapshot_us,
         COALESCE(SUM(buyers_7d) OVER (PARTITION BY item_id ORDER BY day {up_to_today}), 0) AS item_buyers_7d,
         COALESCE(SUM(buyers_30d) OVER (PARTITION BY item_id ORDER BY day {up_to_today}), 0) AS item_buyers_30d,
         COALESCE(SUM(buyers_90d) OVER (PARTITION BY item_id ORDER BY day {up_to_today}), 0) AS item_buyers_90d,
         COALESCE(SUM(buyers_365d) OVER (PARTITION BY item_id ORDER BY day {up_to_today}), 0) AS item_buyers_365d,
         COALESCE(SUM(repeat_buyers) OVER (PARTITION BY item_id ORDER BY day {up_to_today}), 0) AS repeat_buyers_365d,
         COALESCE(SUM(revenue) OVER (PARTITION BY item_id ORDER BY day {last_30}), 0) AS revenue_30d,
         COALESCE(SUM(revenue) OVER (PARTITION BY item_id ORDER BY day {last_365}), 0) AS revenue_365d,
         COALESCE(SUM(units) OVER (PARTITION BY item_id ORDER BY day {last_365}), 0) AS units_365d,
         COALESCE(SUM(sale_lines) OVER (PARTITION BY item_id ORDER BY day {last_30}), 0) AS lines_30d,
         COALESCE(SUM(sale_lines) OVER (PARTITION BY item_id ORDER BY day {the_30_before_the_last_30}), 0)
           AS lines_previous_30d
  FROM timeline
)
SELECT s.item_id, t.event_timestamp,
       CAST(s.item_buyers_7d AS BIGINT) AS item_buyers_7d, CAST(s.item_buyers_30d AS BIGINT) AS item_buyers_30d,
       CAST(s.item_buyers_90d AS BIGINT) AS item_buyers_90d,
       CAST(s.item_buyers_365d AS BIGINT) AS item_buyers_365d,
       CAST(s.revenue_30d AS DOUBLE) / {money_scale} AS item_revenue_30d,
       CAST(s.revenue_365d AS DOUBLE) / {money_scale} AS item_revenue_365d,
       CASE WHEN s.units_365d > 0 THEN CAST(s.revenue_365d AS DOUBLE) / {money_scale} / s.units_365d END
         AS item_avg_price_365d,
       CASE WHEN s.item_buyers_365d > 0 THEN CAST(s.repeat_buyers_365d AS DOUBLE) / s.item_buyers_365d ELSE 0.0 END
         AS item_repeat_rate_365d,
       CASE WHEN s.lines_30d + s.lines_previous_30d > 0
            THEN CAST(s.lines_30d - s.lines_previous_30d AS DOUBLE) / (s.lines_30d + s.lines_previous_30d)
            ELSE 0.0 END AS item_trend_30d
FROM windows s JOIN snapshots t ON t.us = s.snapshot_us;

-- name: customer_profile
-- One row per customer of the customers table, stamped with when the customer became known: the earliest of the
-- signup date and their first transaction or event, else the build's last snapshot. The table keeps only the
-- latest attributes, so a profile is its current value at every time.
WITH seen AS (
  SELECT customer_id, MIN(timestamp) AS first_seen
  FROM (SELECT customer_id, timestamp FROM transactions UNION ALL SELECT customer_id, timestamp FROM events)
  GROUP BY customer_id
)
SELECT c.customer_id,
       COALESCE(LEAST(c.signup_date, s.first_seen), c.signup_date, s.first_seen,
                (SELECT MAX(event_timestamp) FROM snapshots)) AS event_timestamp,
       c.country, c.loyalty_tier, c.email_opt_in
FROM customers c LEFT JOIN seen s USING (customer_id);

-- name: purchase_history
-- Each customer's purchase history, the state the rails read at request time (features/state.py keeps it online):
-- their latest {history_lines} distinct (time, item, order, quantity) purchase lines, oldest first; an order id is
-- "" where the line has none, a time is in microseconds since 1970.
SELECT customer_id, item_id, timestamp, order_id, quantity FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY customer_id
                               ORDER BY timestamp DESC, item_id DESC, order_id DESC, quantity DESC) AS newest
  FROM (SELECT DISTINCT CAST(customer_id AS STRING) AS customer_id, CAST(item_id AS STRING) AS item_id,
               UNIX_MICROS(timestamp) AS timestamp, COALESCE(CAST(order_id AS STRING), '') AS order_id,
               CAST(quantity AS BIGINT) AS quantity
        FROM transactions WHERE quantity > 0)
)
WHERE newest <= {history_lines}
ORDER BY customer_id, timestamp, item_id, order_id, quantity;

-- name: session
-- Each customer's session: their latest {session_events} distinct views and add-to-carts, oldest first.
SELECT customer_id, item_id, timestamp, event_type FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY timestamp DESC, item_id DESC, event_type DESC)
            AS newest
  FROM (SELECT DISTINCT CAST(customer_id AS STRING) AS customer_id, CAST(item_id AS STRING) AS item_id,
               UNIX_MICROS(timestamp) AS timestamp, COALESCE(CAST(event_type AS STRING), '') AS event_type
        FROM events)
)
WHERE newest <= {session_events}
ORDER BY customer_id, timestamp, item_id, event_type;
