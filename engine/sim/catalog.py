"""Products, carriers and warehouses the generated orders and returns refer to."""

from __future__ import annotations

import random
from dataclasses import dataclass

# Non-ASCII on purpose: names travel through signing, JSON and Postgres untouched.
_STEMS = (
    "Wireless Earbuds",
    "Bluetooth Kopfhörer",
    "Café Mug 350 ml",
    "Jouet éducatif en bois",
    "儿童保温水杯 500ml",
    "Camiseta básica algodón",
    "Ножницы кухонные",
    "LED Strip 5 m 💡",
    "Phone Case",
    "Yoga Mat",
    "Garden Hose 15 m",
    "Kinder-Regenjacke",
    "Porte-clés étoile ★",
    "Stainless Steel Bottle",
    "ワイヤレス充電器",
    "Desk Organizer",
)
_VARIANTS = ("Black", "White", "Rot", "Bleu", "灰色", "Größe M", "Size L", "Pack of 2")


@dataclass(frozen=True, slots=True)
class Product:
    goods_id: int
    sku_id: int
    product_id: int
    product_sku_id: int
    name: str
    spec: str


@dataclass(frozen=True, slots=True)
class Carrier:
    carrier_id: int
    name: str
    tracking_prefix: str


@dataclass(frozen=True, slots=True)
class Warehouse:
    warehouse_id: str
    name: str


CARRIERS: tuple[Carrier, ...] = (
    Carrier(699272611, "UPS", "1Z"),
    Carrier(699272612, "USPS", "9400"),
    Carrier(699272613, "FedEx", "7489"),
    Carrier(699272614, "DHL", "JD01"),
    Carrier(699272615, "OnTrac", "C1"),
    Carrier(699272616, "LaserShip", "LS"),
)
CARRIERS_BY_ID = {c.carrier_id: c for c in CARRIERS}
CARRIERS_BY_NAME = {c.name: c for c in CARRIERS}


def tracking_number(carrier: Carrier, rng: random.Random) -> str:
    return carrier.tracking_prefix + "".join(rng.choices("0123456789", k=16))


def make_products(rng: random.Random, count: int = 240) -> tuple[Product, ...]:
    products = []
    for i in range(count):
        spec = rng.choice(_VARIANTS)
        goods_id = 601099500000000 + rng.randrange(10**9)
        sku_id = 17592300000000 + rng.randrange(10**9)
        products.append(
            Product(
                goods_id=goods_id,
                sku_id=sku_id,
                product_id=goods_id // 1000 + i,
                product_sku_id=sku_id // 1000 + i,
                name=f"{_STEMS[i % len(_STEMS)]} — {spec}",
                spec=spec,
            )
        )
    return tuple(products)


def make_warehouses(shop_index: int) -> tuple[Warehouse, ...]:
    return (
        Warehouse(f"WH-{shop_index:02d}-001", "Returns Center Los Angeles"),
        Warehouse(f"WH-{shop_index:02d}-002", "Returns Center Newark"),
        Warehouse(f"WH-{shop_index:02d}-003", "Retourenlager Köln"),
    )
