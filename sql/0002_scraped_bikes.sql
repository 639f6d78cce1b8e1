-- One row per listing: a product page of one webshop, as last scraped.
create table if not exists scraped_bikes (
    id uuid primary key default gen_random_uuid(),
    webshop text not null,
    url text not null,
    name text not null,
    image_url text,
    price numeric(12, 2),
    currency char(3),
    brand text,
    gtin text,
    sku text,
    availability text,
    first_seen_at timestamptz not null default now(),
    last_seen_at timestamptz not null default now(),
    constraint scraped_bikes_webshop_url_key unique (webshop, url),
    constraint scraped_bikes_price_check check (price >= 0),
    constraint scraped_bikes_currency_check check (currency ~ '^[A-Z]{3}$'),
    constraint scraped_bikes_seen_check check (last_seen_at >= first_seen_at)
);

create index if not exists scraped_bikes_webshop_idx on scraped_bikes (webshop);
create index if not exists scraped_bikes_gtin_idx on scraped_bikes (gtin)
where gtin is not null;

-- A row only when a listing's price changes (the first price seen included).
create table if not exists price_history (
    bike_id uuid not null references scraped_bikes (id) on delete cascade,
    price numeric(12, 2),
    currency char(3),
    seen_at timestamptz not null default now(),
    primary key (bike_id, seen_at)
);
