"""A generated e-bike catalogue with a known truth, sold by four shops in their own words.

Each product is a real-looking e-bike: brand, model line, motor, battery, frame type
and model year. Most model lines come in variants that differ from their base in
exactly one of those (another battery, frame type, year or motor): different
products at different prices, nearly alike in title and photo. Each shop sells
most products in a frame size of its own (so its GTIN, where it has one, differs
from another shop's), words titles its own way (Dutch or English, "500 Wh" or
"0,5 kWh", "dames" or "D53" or "women's", brand aliases, motors abbreviated or left
out, token order), prices them a little differently (the UK shop in pounds), and
photographs them differently: crop, size, background and JPEG quality.
Everything is derived from a seed, so the truth is known.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field, replace

from PIL import Image, ImageDraw

ANCHOR = "fietsvoordeelshop.nl"
#: Pounds a euro buys, in the demo's world: the UK shop's prices are in GBP, and the
#: demo stores this rate (source 'demo') so they compare with the others'.
DEMO_GBP_PER_EURO = 0.86
DEFAULT_PRODUCTS = 48
#: The catalogue `bikematch demo` generates unless given another --seed.
DEFAULT_SEED = 7

BRANDS = {
    "Gazelle": ["Ultimate C380", "Grenoble C7", "Grenoble C8", "Arroyo C5", "Chamonix C7"],
    "Batavus": ["Finez E-go Power", "Altura E-go", "Dinsdag E-go", "Razer E-go"],
    "Sparta": ["c-Grid energy", "d-Burst", "M8b Ltd", "M10b Ltd", "a-Shine"],
    "Cube": ["Kathmandu Hybrid One", "Touring Hybrid Pro", "Ella Ride Hybrid"],
    "Stromer": ["ST3 Pinion", "ST5 ABS", "ST1 Sport"],
    "Riese & Müller": ["Load 75", "Charger4 GT", "Nevo4 GT"],
    "QWIC": ["Premium i MN7", "Performance RD11", "Urban MN7"],
    "Kalkhoff": ["Endeavour 5.B", "Image 3.B", "Entice 7.B"],
}
#: Other ways shops write a brand.
BRAND_ALIASES = {"Riese & Müller": ["Riese und Muller", "R&M", "Riese & Muller"]}
#: Each motor, and shorter ways shops write it.
MOTORS = {
    "Bosch Performance Line CX": ["Bosch Performance Line CX", "Bosch CX"],
    "Bosch Active Line Plus": ["Bosch Active Line Plus", "Bosch Active Plus"],
    "Shimano EP801": ["Shimano EP801", "Shimano Steps EP801"],
    "Bafang M420": ["Bafang M420", "Bafang M420 middenmotor"],
}
BATTERIES = [400, 500, 545, 625, 750]
#: A frame type as Dutch and English titles write it, and the letter a frame size
#: code carries ("D53": a dames frame of 53 cm).
FRAMES = {
    "dames": (["dames", "damesfiets"], ["women's", "ladies"], "D"),
    "heren": (["heren", "herenfiets"], ["men's", "gents"], "H"),
    "lage instap": (["lage instap", "moederfiets"], ["step-through", "low-step"], None),
}
FRAME_SIZES = [46, 49, 50, 53, 54, 57, 61]
YEARS = [2023, 2024, 2025]
#: Later editions of a model line, once a large catalogue has used every line.
EDITIONS = ["Plus", "Pro", "Sport", "Tour", "Comfort"]
COLOURS = {
    "zwart": ("black", (25, 25, 28)),
    "grijs": ("grey", (120, 124, 130)),
    "groen": ("green", (40, 110, 70)),
    "blauw": ("blue", (35, 70, 150)),
    "rood": ("red", (170, 35, 40)),
    "zand": ("sand", (200, 180, 140)),
}


@dataclass(frozen=True)
class Product:
    key: str
    #: The base product of this one's model line (its own key for a base): variants
    #: share its photo, but for the frame and the battery drawn.
    base: str
    brand: str
    model: str
    motor: str
    battery: int
    frame: str
    year: int
    colour: str
    price: int
    #: Whether shops publish GTINs for it (one per frame size).
    has_gtin: bool


@dataclass(frozen=True)
class Shop:
    name: str
    platform: str
    language: str
    currency: str
    price_factor: float
    background: tuple[int, int, int]
    image_size: tuple[int, int]
    crop: float
    quality: int
    coverage: float
    #: Units of the shop's currency a euro buys.
    per_euro: float = 1.0


SHOPS = [
    Shop(ANCHOR, "jsonld", "nl", "EUR", 1.00, (255, 255, 255), (800, 600), 0.00, 90, 0.85),
    Shop(
        "fietsenwinkel.nl",
        "woocommerce",
        "nl",
        "EUR",
        0.97,
        (245, 245, 240),
        (640, 480),
        0.06,
        80,
        0.7,
    ),
    Shop(
        "ebike-outlet.nl", "shopify", "nl", "EUR", 0.93, (235, 238, 242), (1024, 768), 0.10, 70, 0.6
    ),
    Shop(
        "cyclesdirect.co.uk",
        "css",
        "en",
        "GBP",
        1.04,
        (250, 250, 250),
        (600, 600),
        0.04,
        85,
        0.6,
        DEMO_GBP_PER_EURO,
    ),
]


@dataclass
class Listing:
    shop: Shop
    product: Product
    title: str
    price: float
    #: The URL's last part; it carries the product's key (the demo's truth).
    handle: str
    #: The brand as the shop's brand field has it.
    brand: str
    #: The shop's own article number.
    sku: str
    frame_size: int
    gtin: str | None


@dataclass
class Catalogue:
    products: list[Product]
    listings: list[Listing] = field(default_factory=list)

    def of_shop(self, name: str) -> list[Listing]:
        return [listing for listing in self.listings if listing.shop.name == name]


def gtin(product: Product, frame_size: int) -> str:
    """The EAN-13 of one frame size of a product (the same in every shop)."""
    rng = random.Random(f"{product.key}-{frame_size}")
    body = "87" + "".join(str(rng.randrange(10)) for _ in range(10))
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def _price(battery: int, motor: str, year: int, rng: random.Random) -> int:
    """A list price: more for a bigger battery and a stronger motor, less for an
    older model year."""
    price = rng.randrange(2199, 5999, 50) + (battery - 400) * 3
    price += 400 if "CX" in motor else 0
    return int(round(price * (1 - 0.08 * (max(YEARS) - year)), -1) - 1)


def _variant(base: Product, key: str, rng: random.Random, line: list[Product]) -> Product:
    """Another product of the base's model line: one of its battery, frame type, year
    or motor changed, and not a product the line already has (two variants drawing
    the same change would be one product under two keys)."""
    taken = {_identity(product) for product in line}
    changes = [
        *({"battery": b} for b in BATTERIES if b != base.battery),
        *({"frame": f} for f in FRAMES if f != base.frame),
        *({"year": y} for y in YEARS if y != base.year),
        *({"motor": m} for m in MOTORS if m != base.motor),
    ]
    which = rng.choice(["battery", "frame", "year", "motor"])
    fresh = [c for c in changes if _identity(replace(base, **c)) not in taken]
    change = rng.choice([c for c in fresh if which in c] or fresh)
    variant = replace(base, key=key, **change)
    price = _price(variant.battery, variant.motor, variant.year, random.Random(key))
    if "frame" in change:
        price = base.price  # the same bike with another frame costs the same
    return replace(variant, price=price, has_gtin=rng.random() < 0.3)


def _identity(product: Product) -> tuple:
    """What makes a product the product an analyst compares (colour aside)."""
    return (
        product.brand,
        product.model,
        product.motor,
        product.battery,
        product.frame,
        product.year,
    )


def generate(products: int = DEFAULT_PRODUCTS, seed: int = DEFAULT_SEED) -> Catalogue:
    rng = random.Random(seed)
    items: list[Product] = []
    lines = [(brand, model) for brand, models in BRANDS.items() for model in models]
    rng.shuffle(lines)
    bases = 0
    while len(items) < products:
        # Each model line once, then again as its Plus, Pro, ... editions.
        brand, model = lines[bases % len(lines)]
        edition = bases // len(lines)
        if edition:
            # An edition word the line's name does not hold already ("Touring Hybrid
            # Pro Plus", not "... Pro Pro").
            suffixes = [e for e in EDITIONS if e not in model.split()]
            suffix = suffixes[(edition - 1) % len(suffixes)]
            model = f"{model} {suffix}" + (f" {edition}" if edition > len(suffixes) else "")
        bases += 1
        motor, battery, year = rng.choice(list(MOTORS)), rng.choice(BATTERIES), rng.choice(YEARS)
        key = f"p{len(items):03d}"
        base = Product(
            key=key,
            base=key,
            brand=brand,
            model=model,
            motor=motor,
            battery=battery,
            frame=rng.choice(list(FRAMES)),
            year=year,
            colour=rng.choice(list(COLOURS)),
            price=_price(battery, motor, year, rng),
            has_gtin=rng.random() < 0.3,
        )
        items.append(base)
        line = [base]
        # Most model lines come in look-alike variants.
        for _ in range(rng.choice([0, 1, 2, 2, 3])):
            if len(items) >= products:
                break
            line.append(_variant(base, f"p{len(items):03d}", rng, line))
            items.append(line[-1])
    catalogue = Catalogue(items)
    for shop in SHOPS:
        for product in items:
            if rng.random() > shop.coverage:
                continue
            factor = shop.price_factor * rng.uniform(0.97, 1.03) * shop.per_euro
            size = rng.choice(FRAME_SIZES)
            brand = product.brand
            if shop.name != ANCHOR and product.brand in BRAND_ALIASES:
                brand = rng.choice([brand, *BRAND_ALIASES[brand]])
            catalogue.listings.append(
                Listing(
                    shop=shop,
                    product=product,
                    title=title(shop, product, brand, size, rng),
                    price=round(product.price * factor, 0) - 0.01,
                    handle=f"{product.key}-{shop.platform}",
                    brand=brand,
                    sku=f"{shop.platform[:3].upper()}-{rng.randrange(10**5, 10**6)}",
                    frame_size=size,
                    gtin=gtin(product, size) if product.has_gtin else None,
                )
            )
    return catalogue


def title(shop: Shop, product: Product, brand: str, size: int, rng: random.Random) -> str:
    """The product as this shop words it: each shop has its style, and leaves out or
    abbreviates some details now and then."""
    dutch, english, size_letter = FRAMES[product.frame]
    motor = rng.choice(MOTORS[product.motor])
    colour_nl = product.colour
    colour_en = COLOURS[product.colour][0]

    def maybe(text: str, often: float = 0.8) -> str:
        return text if rng.random() < often else ""

    if shop.name == ANCHOR:
        parts = [
            brand,
            product.model,
            f"{product.battery}Wh",
            dutch[0],
            maybe(product.motor, 0.3),
            str(product.year),
            colour_nl,
        ]
    elif shop.platform == "woocommerce":
        battery = rng.choice(
            [f"{product.battery} Wh", f"{product.battery}Wh accu", _kwh(product.battery)]
        )
        parts = [
            brand.upper(),
            product.model,
            "E-bike",
            rng.choice(dutch).title(),
            "-",
            maybe(motor),
            "-",
            battery,
            maybe(f"({product.year})"),
        ]
    elif shop.platform == "shopify":
        frame = f"{size_letter}{size}" if size_letter else f"Lage instap {size}cm"
        year = rng.choice([str(product.year), f"MY{product.year % 100}", ""])
        parts = [brand, product.model, frame, f"{product.battery}Wh", year, colour_nl.title()]
        if rng.random() < 0.3:
            parts = [colour_nl.title(), *parts[:-1]]
    else:
        parts = [
            brand,
            product.model,
            rng.choice(english),
            "electric bike,",
            f"{product.battery}Wh,",
            maybe(f"{motor},", 0.5),
            f"{colour_en},",
            maybe(str(product.year), 0.7),
        ]
    return " ".join(part for part in parts if part).replace("- -", "-").strip(" -,")


def _kwh(battery: int) -> str:
    """625 -> '0,625 kWh'."""
    return f"{battery / 1000:g}".replace(".", ",") + " kWh"


def photo(listing: Listing) -> bytes:
    """A drawing of the bike: its model line's proportions, its colour, frame and
    battery, as this shop shoots it."""
    product, shop = listing.product, listing.shop
    rng = random.Random(product.base)  # the model line itself: the same in every shop
    width, height = 800, 600
    image = Image.new("RGB", (width, height), shop.background)
    draw = ImageDraw.Draw(image)
    colour = COLOURS[product.colour][1]
    wheel = rng.randint(110, 150)
    rear, front = (230, 390), (570 + rng.randint(-30, 30), 390)
    for cx, cy in (rear, front):
        draw.ellipse(
            (cx - wheel, cy - wheel, cx + wheel, cy + wheel), outline=(30, 30, 30), width=14
        )
        draw.ellipse((cx - 18, cy - 18, cx + 18, cy + 18), fill=(90, 90, 90))
    top_height = {"heren": 220, "dames": 280, "lage instap": 330}[product.frame]
    top = (400, top_height + rng.randint(-20, 20))
    seat, bars = (320, 200), (520, 170 + rng.randint(-15, 15))
    for start, end in ((rear, top), (top, front), (rear, seat), (seat, top), (bars, front)):
        draw.line((start, end), fill=colour, width=18 + rng.randint(0, 6))
    battery = product.battery / 750
    draw.rectangle((330, 250, 330 + int(90 * battery), 285), fill=(40, 40, 45))
    draw.text((20, 20), product.brand, fill=colour)
    # The shop's own framing: crop, output size, compression.
    crop = int(min(width, height) * shop.crop)
    image = image.crop((crop, crop // 2, width - crop, height - crop // 2)).resize(shop.image_size)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=shop.quality)
    return buffer.getvalue()
