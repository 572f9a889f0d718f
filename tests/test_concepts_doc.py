"""docs/concepts.md stays true: every linked symbol is defined in the linked file, and every quoted key line stands
within it. Links name symbols, not line ranges, so that an edit elsewhere in the file breaks none of them."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"\[`(?P<symbol>[\w.]+)`\]\(\.\./(?P<path>[\w/]+\.py)\) \| `(?P<line>.+)` \|$")


def documented_rows():
    rows = [ROW.search(line) for line in (ROOT / "docs" / "concepts.md").read_text().splitlines() if line.startswith("| ")]
    return [row.groupdict() for row in rows if row]


def symbol_lines(path: Path, symbol: str) -> tuple[int, int]:
    """First and last line of a top-level function or class, or of `Class.method`."""
    nodes = ast.parse(path.read_text()).body
    for part in symbol.split("."):
        match = [n for n in nodes if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part]
        if not match:
            raise LookupError(f"{symbol} is not defined in {path.relative_to(ROOT)}")
        node, nodes = match[0], match[0].body
    return node.lineno, node.end_lineno


def test_the_document_lists_every_concept():
    text = (ROOT / "docs" / "concepts.md").read_text()
    assert ".py#L" not in text, "link to the symbol's file, not to line ranges that every edit breaks"
    assert len(documented_rows()) >= 25
    symbols = {row["symbol"] for row in documented_rows()}
    for concept in ("eager_scaled_dot_product_attention", "MultiHeadAttention.split_heads", "PositionwiseFeedForward.forward",
                    "AddAndNorm.forward", "sinusoidal_position_table", "VanillaTransformerDecoder.forward"):
        assert concept in symbols


@pytest.mark.parametrize("row", documented_rows(), ids=lambda row: f"{row['symbol']}:{row['line'][:30]}")
def test_each_reference_points_at_its_code(row):
    path = ROOT / row["path"]
    start, end = symbol_lines(path, row["symbol"])
    lines = path.read_text().splitlines()[start - 1 : end]
    assert any(row["line"] in line for line in lines), f"`{row['line']}` is no longer in {row['symbol']}"
