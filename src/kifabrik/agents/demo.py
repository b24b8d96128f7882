"""Demo company "Schmidt Maschinenbau GmbH": a small SQLite database and the agent tools over it.

The machines and the spare-parts catalogue come from `data/schmidt_maschinenbau.yaml`;
customers' orders are generated from them with a seeded random generator, so every build
of the database holds the same rows. Tools open the database read-only.
"""

from __future__ import annotations

import os
import random
import sqlite3
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from kifabrik.agents.tools import ToolError, agent_tool

DATA = Path(__file__).parent / "data" / "schmidt_maschinenbau.yaml"
SCHEMA = """
CREATE TABLE machines (model TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL);
CREATE TABLE parts (number TEXT PRIMARY KEY, name TEXT NOT NULL, price_eur REAL NOT NULL,
                    stock INTEGER NOT NULL, lead_days INTEGER NOT NULL);
CREATE TABLE part_fits (part TEXT REFERENCES parts(number), machine TEXT REFERENCES machines(model),
                        PRIMARY KEY (part, machine));
CREATE TABLE orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, machine TEXT REFERENCES machines(model),
                     ordered_on TEXT NOT NULL, status TEXT NOT NULL, carrier TEXT, tracking TEXT,
                     expected_on TEXT);
CREATE TABLE order_items (order_id TEXT REFERENCES orders(id), part TEXT REFERENCES parts(number),
                          quantity INTEGER NOT NULL, PRIMARY KEY (order_id, part));
"""

_db_path: Path | None = None


@cache
def demo_data() -> dict[str, Any]:
    return yaml.safe_load(DATA.read_text(encoding="utf-8"))


def build_database(path: Path) -> Path:
    """Write the demo database to `path` (same rows every time), atomically."""
    data = demo_data()
    rng = random.Random(data["seed"])
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        con.executescript(SCHEMA)
        con.executemany("INSERT INTO machines VALUES (?, ?, ?)", [(m["model"], m["name"], m["kind"]) for m in data["machines"]])
        for p in data["parts"]:
            con.execute("INSERT INTO parts VALUES (?, ?, ?, ?, ?)",
                        (p["number"], p["name"], p["price_eur"], p["stock"], p["lead_days"]))
            con.executemany("INSERT INTO part_fits VALUES (?, ?)", [(p["number"], m) for m in p["machines"]])
        start = date(2026, 1, 5)
        for i in range(data["orders"]):
            machine = rng.choice(data["machines"])["model"]
            fitting = [p for p in data["parts"] if machine in p["machines"]]
            ordered = start + timedelta(days=3 * i + rng.randint(0, 2))
            status = rng.choice(data["statuses"])
            shipped = status in ("versandt", "zugestellt")
            carrier = rng.choice(data["carriers"]) if shipped else None
            tracking = f"{carrier.split()[0][:3].upper()}{rng.randint(10**8, 10**9 - 1)}" if carrier else None
            expected = ordered + timedelta(days=max(p["lead_days"] for p in fitting) + rng.randint(1, 6))
            con.execute("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (f"A-{1001 + i}", rng.choice(data["customers"]), machine, ordered.isoformat(), status,
                         carrier, tracking, expected.isoformat()))
            for part in rng.sample(fitting, k=min(len(fitting), rng.randint(1, 3))):
                con.execute("INSERT INTO order_items VALUES (?, ?, ?)", (f"A-{1001 + i}", part["number"], rng.randint(1, 4)))
        con.commit()
    finally:
        con.close()
    os.replace(tmp, path)
    return path


def use_database(path: Path) -> Path:
    """Point the tools at `path`, building the database there first if it is missing."""
    global _db_path
    if not path.exists():
        build_database(path)
    _db_path = path
    return path


def default_path() -> Path:
    from kifabrik.config import Settings

    return Settings.from_env().cache_dir / "agents" / "schmidt_maschinenbau.db"


def _query(sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    path = _db_path or use_database(default_path())
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, args)]
    finally:
        con.close()


@agent_tool("schmidt.order_status", "Look up the status, shipping and items of a customer order by its number "
            "(e.g. A-1007).", {"type": "object", "properties": {"order_id": {
                "type": "string", "pattern": "^A-[0-9]{4}$", "description": "Order number like A-1007"}},
                "required": ["order_id"], "additionalProperties": False})
def order_status(order_id: str) -> dict[str, Any]:
    rows = _query("SELECT * FROM orders WHERE id = ?", (order_id,))
    if not rows:
        raise ToolError(f"no order {order_id} (order numbers run from A-1001 to A-{1000 + demo_data()['orders']})")
    items = _query("SELECT part, quantity FROM order_items WHERE order_id = ? ORDER BY part", (order_id,))
    # compact: fields without a value left out, items as "ET-1001 x3" (a small model reads short results best)
    return {**{k: v for k, v in rows[0].items() if v is not None},
            "items": [f"{i['part']} x{i['quantity']}" for i in items]}


@agent_tool("schmidt.find_spare_parts", "Find spare parts by machine model (e.g. HP-80) and/or a word in the part "
            "name (e.g. Filter).", {"type": "object", "properties": {
                "machine": {"type": "string", "description": "Machine model, e.g. SM-200"},
                "query": {"type": "string", "description": "Word in the part name"}},
                "additionalProperties": False})
def find_spare_parts(machine: str | None = None, query: str | None = None) -> list[dict[str, Any]]:
    if not machine and not query:
        raise ToolError("give a machine model, a search word, or both")
    sql = ("SELECT DISTINCT p.number, p.name FROM parts p JOIN part_fits f ON f.part = p.number WHERE 1=1"
           + (" AND upper(f.machine) = upper(?)" if machine else "") + (" AND p.name LIKE ?" if query else "")
           + " ORDER BY p.number")
    args = tuple(a for a in (machine, f"%{query}%" if query else None) if a)
    return _query(sql, args)


@agent_tool("schmidt.part_availability", "Stock, price and delivery time of one spare part by its number "
            "(e.g. ET-1003).", {"type": "object", "properties": {"part_number": {
                "type": "string", "pattern": "^ET-[0-9]{4}$"}}, "required": ["part_number"],
                "additionalProperties": False})
def part_availability(part_number: str) -> dict[str, Any]:
    rows = _query("SELECT * FROM parts WHERE number = ?", (part_number,))
    if not rows:
        raise ToolError(f"no spare part {part_number}")
    fits = [r["machine"] for r in _query("SELECT machine FROM part_fits WHERE part = ? ORDER BY machine", (part_number,))]
    return {**rows[0], "fits": fits, "available": rows[0]["stock"] > 0}
