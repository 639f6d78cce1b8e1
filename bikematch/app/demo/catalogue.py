"""A generated e-bike catalogue with a known truth, sold by four shops in their own words.

Each product is a real-looking e-bike (brand, model, motor, battery, frame,
year). Look-alike variants (the same model with another battery or frame)
make matching non-trivial. Each shop sells most products, words titles its
own way (Dutch or English, abbreviations, order), prices them a little
differently (the UK shop in pounds), and photographs them differently: crop,
size, background and JPEG quality. Everything is derived from a seed, so the
truth is known.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

ANCHOR = "fietsvoordeelshop.nl"
#: Pounds a euro buys, in the demo's world: the UK shop's prices are in GBP, and the
#: demo stores this rate (source 'demo') so they compare with the others'.
DEMO_GBP_PER_EURO = 0.86

BRANDS = {
    "Gazelle": ["Ultimate C380", "Grenoble C7", "Arroyo C5", "Chamonix C7", "Avignon C380"],
    "Batavus": ["Finez E-go Power", "Altura E-go", "Dinsdag E-go", "Razer E-go"],
    "Sparta": ["c-Grid energy", "d-Burst", "M8b Ltd", "a-Shine"],
    "Cube": ["Kathmandu Hybrid One", "Touring Hybrid Pro", "Ella Ride Hybrid"],
    "Stromer": ["ST3 Pinion", "ST5 ABS", "ST1 Sport"],
    "Riese & Müller": ["Load 75", "Charger4 GT", "Roadster Mixte"],
    "QWIC": ["Premium i MN7", "Performance RD11", "Urban MN7"],
    "Kalkhoff": ["Endeavour 5.B", "Image 3.B", "Entice 7.B"],
}
MOTORS = ["Bosch Performance Line CX", "Bosch Active Line Plus", "Shimano EP801", "Bafang M420"]
BATTERIES = [400, 500, 545, 625, 750]
FRAMES = [("heren", "men's", "H"), ("dames", "women's", "D"), ("lage instap", "step-through", "LI")]
YEARS = [2023, 2024, 2025]
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
    brand: str
    model: str
    motor: str
    battery: int
    frame: tuple[str, str, str]
    year: int
    colour: str
    price: int
    gtin: str | None


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
    handle: str


@dataclass
class Catalogue:
    products: list[Product]
    listings: list[Listing] = field(default_factory=list)

    def of_shop(self, name: str) -> list[Listing]:
        return [listing for listing in self.listings if listing.shop.name == name]


def _gtin(rng: random.Random) -> str:
    body = "87" + "".join(str(rng.randrange(10)) for _ in range(10))
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def generate(products: int = 48, seed: int = 7) -> Catalogue:
    rng = random.Random(seed)
    items: list[Product] = []
    bases = [(brand, model) for brand, models in BRANDS.items() for model in models]
    rng.shuffle(bases)
    while len(items) < products:
        brand, model = bases[len(items) % len(bases)]
        # Every base model comes in two or three look-alike variants.
        for _ in range(rng.choice([1, 2, 2, 3])):
            if len(items) >= products:
                break
            battery = rng.choice(BATTERIES)
            frame = rng.choice(FRAMES)
            items.append(
                Product(
                    key=f"p{len(items):03d}",
                    brand=brand,
                    model=model,
                    motor=rng.choice(MOTORS),
                    battery=battery,
                    frame=frame,
                    year=rng.choice(YEARS),
                    colour=rng.choice(list(COLOURS)),
                    price=rng.randrange(1899, 6499, 50) + (battery - 400) * 2,
                    gtin=_gtin(rng) if rng.random() < 0.3 else None,
                )
            )
    catalogue = Catalogue(items)
    for shop in SHOPS:
        for product in items:
            if shop.name != ANCHOR and rng.random() > shop.coverage:
                continue
            if shop.name == ANCHOR and rng.random() > shop.coverage:
                continue
            factor = shop.price_factor * rng.uniform(0.97, 1.03) * shop.per_euro
            price = round(product.price * factor, 0) - 0.01
            catalogue.listings.append(
                Listing(
                    shop,
                    product,
                    title(shop, product, rng),
                    price,
                    f"{product.key}-{shop.platform}",
                )
            )
    return catalogue


def title(shop: Shop, product: Product, rng: random.Random) -> str:
    """The product as this shop words it."""
    dutch, english, short = product.frame
    colour_nl = product.colour
    colour_en = COLOURS[product.colour][0]
    if shop.name == ANCHOR:
        return (
            f"{product.brand} {product.model} {product.battery}Wh {dutch} "
            f"{product.year} {colour_nl}"
        )
    if shop.platform == "woocommerce":
        return (
            f"{product.brand.upper()} {product.model} E-bike {dutch.title()} - "
            f"{product.motor} - {product.battery} Wh ({product.year})"
        )
    if shop.platform == "shopify":
        return f"{product.brand} {product.model} {short} {product.battery}Wh {colour_nl.title()}"
    return (
        f"{product.brand} {product.model} {english} electric bike, {product.battery}Wh, "
        f"{colour_en}, {product.year}"
    )


def photo(listing: Listing) -> bytes:
    """A drawing of the bike: its colour and proportions, as this shop shoots it."""
    product, shop = listing.product, listing.shop
    rng = random.Random(product.key)  # the bike itself: the same in every shop
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
    low = product.frame[2] == "LI"
    top = (400, 330 if low else 220 + rng.randint(-20, 20))
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
