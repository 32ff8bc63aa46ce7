-- E-commerce model, source (operational) tables: customers, products, orders.
--
-- The second dataset of `cdc` (after the surgical-robotics platform): it shows
-- that a new dataset is this DDL, its warehouse DDL (warehouse.sql) and a
-- mapping file, with no new code. Shapes follow the e-commerce warehouse seed
-- (customers, products, orders), kept deliberately small.
--
-- Unqualified names: the tables are created in the first schema of the
-- search_path (public by default), e.g.
--
--   psql -v ON_ERROR_STOP=1 --single-transaction -f schemas/models/ecommerce/source.sql
--
-- Key types differ on purpose (bigint customers and orders, text product SKU)
-- so that the mapping is exercised with both.

CREATE TABLE customers (
    customer_id    bigint PRIMARY KEY,
    customer_name  text NOT NULL,
    email          text,
    country        text,                          -- ISO 3166-1 alpha-2, 'US'
    segment        text                           -- 'Consumer' | 'Corporate' | 'Home Office'
);

CREATE TABLE products (
    product_id    text PRIMARY KEY,               -- SKU, 'SKU-00001'
    product_name  text NOT NULL,
    category      text,                           -- 'Electronics', 'Books', ...
    list_price    numeric(10,2),
    launched_at   timestamptz
);

CREATE TABLE orders (
    order_id     bigint PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES customers (customer_id),
    product_id   text   NOT NULL REFERENCES products (product_id),
    quantity     int    NOT NULL CHECK (quantity > 0),
    amount       numeric(12,2) NOT NULL,          -- order total, currency of the shop
    ordered_at   timestamptz NOT NULL
);

CREATE INDEX orders_customer_id_idx ON orders (customer_id);
CREATE INDEX orders_product_id_idx  ON orders (product_id);
