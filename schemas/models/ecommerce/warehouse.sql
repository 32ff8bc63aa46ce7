-- E-commerce model, warehouse: dim_customers and dim_products (SCD Type 2)
-- and fact_orders, fed from source.sql's customers, products and orders.
--
-- Same conventions as schemas/warehouse/001_tables.sql (see its header and
-- schemas/warehouse/README.md): unqualified names (run with the warehouse
-- schema on the search_path), no transaction control, re-runnable,
-- surrogate keys assigned by the projector (no identity/sequence), the
-- SCD2 columns valid_from/valid_to (source commit times, half-open),
-- effective_date/expiration_date (their dates), is_current, change_type,
-- record_hash, source_lsn, is_inferred, an unknown member with key -1, and
-- source commit times in created_at/updated_at.
--
--   psql -v ON_ERROR_STOP=1 --single-transaction \
--        -c 'SET search_path TO shop_dw' -f schemas/models/ecommerce/warehouse.sql
--
-- date_key is YYYYMMDD of orders.ordered_at in the warehouse time zone, the
-- key of dim_date (schemas/warehouse/001 + 002) when that is loaded in the
-- same schema.
-- Redshift: dimensions DISTSTYLE ALL SORTKEY (<business key>, effective_date);
-- fact_orders DISTSTYLE KEY DISTKEY (customer_key) SORTKEY (date_key).

-- dim_customers (SCD2) <- customers
CREATE TABLE IF NOT EXISTS dim_customers (
    customer_key     integer     NOT NULL PRIMARY KEY,
    customer_id      bigint,                     -- business key; NULL only for key < 0
    customer_name    text        NOT NULL,
    email            text,
    country          text,
    segment          text,
    effective_date   date        NOT NULL,
    expiration_date  date,
    is_current       boolean     NOT NULL DEFAULT true,
    valid_from       timestamptz NOT NULL,
    valid_to         timestamptz,
    change_type      text,
    record_hash      text,
    source_lsn       pg_lsn,
    is_inferred      boolean     NOT NULL DEFAULT false,
    CONSTRAINT dim_customers_business_key_chk CHECK (customer_id IS NOT NULL OR customer_key < 0),
    CONSTRAINT dim_customers_current_chk      CHECK (is_current = (valid_to IS NULL)),
    CONSTRAINT dim_customers_expiration_chk   CHECK ((expiration_date IS NULL) = (valid_to IS NULL)),
    CONSTRAINT dim_customers_interval_chk     CHECK (valid_to IS NULL OR valid_to >= valid_from),
    CONSTRAINT dim_customers_change_type_chk  CHECK (change_type IN ('INSERT', 'UPDATE', 'DELETE'))
);
CREATE UNIQUE INDEX IF NOT EXISTS dim_customers_current_uidx
    ON dim_customers (customer_id) WHERE is_current;
CREATE INDEX IF NOT EXISTS dim_customers_id_valid_from_idx
    ON dim_customers (customer_id, valid_from);

-- dim_products (SCD2) <- products
CREATE TABLE IF NOT EXISTS dim_products (
    product_key      integer       NOT NULL PRIMARY KEY,
    product_id       text,                       -- business key (SKU); NULL only for key < 0
    product_name     text          NOT NULL,
    category         text,
    list_price       numeric(10,2),
    launched_at      timestamptz,
    effective_date   date          NOT NULL,
    expiration_date  date,
    is_current       boolean       NOT NULL DEFAULT true,
    valid_from       timestamptz   NOT NULL,
    valid_to         timestamptz,
    change_type      text,
    record_hash      text,
    source_lsn       pg_lsn,
    is_inferred      boolean       NOT NULL DEFAULT false,
    CONSTRAINT dim_products_business_key_chk CHECK (product_id IS NOT NULL OR product_key < 0),
    CONSTRAINT dim_products_current_chk      CHECK (is_current = (valid_to IS NULL)),
    CONSTRAINT dim_products_expiration_chk   CHECK ((expiration_date IS NULL) = (valid_to IS NULL)),
    CONSTRAINT dim_products_interval_chk     CHECK (valid_to IS NULL OR valid_to >= valid_from),
    CONSTRAINT dim_products_change_type_chk  CHECK (change_type IN ('INSERT', 'UPDATE', 'DELETE'))
);
CREATE UNIQUE INDEX IF NOT EXISTS dim_products_current_uidx
    ON dim_products (product_id) WHERE is_current;
CREATE INDEX IF NOT EXISTS dim_products_id_valid_from_idx
    ON dim_products (product_id, valid_from);

-- fact_orders: one row per orders row (business key order_id).
--   customer_key / product_key: the dimension versions current for the
--   order's customer_id / product_id when the projector wrote the row (-1 = unknown).
--   created_at: commit time of the source INSERT; updated_at: of the latest
--   source UPDATE (NULL if none); source_lsn: of the latest change applied.
CREATE TABLE IF NOT EXISTS fact_orders (
    order_id      bigint        NOT NULL PRIMARY KEY,   -- business key (orders.order_id)
    customer_key  integer       NOT NULL DEFAULT -1,
    product_key   integer       NOT NULL DEFAULT -1,
    date_key      integer       NOT NULL,              -- YYYYMMDD of ordered_at
    quantity      integer       NOT NULL,
    amount        numeric(12,2) NOT NULL,
    source_lsn    pg_lsn        NOT NULL,
    created_at    timestamptz   NOT NULL,
    updated_at    timestamptz
);
CREATE INDEX IF NOT EXISTS fact_orders_customer_key_idx ON fact_orders (customer_key);
CREATE INDEX IF NOT EXISTS fact_orders_product_key_idx  ON fact_orders (product_key);
CREATE INDEX IF NOT EXISTS fact_orders_date_key_idx     ON fact_orders (date_key);

-- Unknown members (surrogate key -1).
INSERT INTO dim_customers (customer_key, customer_id, customer_name, email, country, segment,
                           effective_date, expiration_date, is_current, valid_from, valid_to,
                           change_type, record_hash, source_lsn, is_inferred)
VALUES (-1, NULL, 'Unknown', NULL, NULL, NULL,
        DATE '1900-01-01', NULL, true, TIMESTAMPTZ '1900-01-01 00:00:00+00', NULL,
        NULL, NULL, NULL, false)
ON CONFLICT (customer_key) DO NOTHING;

INSERT INTO dim_products (product_key, product_id, product_name, category, list_price, launched_at,
                          effective_date, expiration_date, is_current, valid_from, valid_to,
                          change_type, record_hash, source_lsn, is_inferred)
VALUES (-1, NULL, 'Unknown', NULL, NULL, NULL,
        DATE '1900-01-01', NULL, true, TIMESTAMPTZ '1900-01-01 00:00:00+00', NULL,
        NULL, NULL, NULL, false)
ON CONFLICT (product_key) DO NOTHING;
