"""Tables generated into README.md: each block between `<!-- table:NAME -->` and `<!-- /table:NAME -->` is
results/tables/NAME.md of the last run, so the README never shows hand-copied numbers.

Run `python -m armor.reporting.readme [README.md] [results/tables]` (`make readme-tables`, also the end of `make demo`).
"""

import re
import sys
from pathlib import Path

from armor.pipeline.checkpoint import atomic_write_text

BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)", re.S)


def table_blocks(text: str) -> dict[str, str]:
    """The generated blocks of a README: table name -> its current body."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def fill(text: str, tables: Path) -> tuple[str, list[str]]:
    """The README with every block whose table exists replaced by that table; and the names of missing tables."""
    missing = [name for name in table_blocks(text) if not (tables / f"{name}.md").is_file()]

    def body(match: re.Match) -> str:
        """A block with its table's current Markdown, or unchanged when the table is missing."""
        path = tables / f"{match['name']}.md"
        return match[1] + path.read_text().rstrip("\n") + "\n" + match[4] if path.is_file() else match[0]

    return BLOCK.sub(body, text), missing


def main() -> None:
    """Fill README.md's table blocks from results/tables/ and say which tables were missing."""
    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    tables = Path(sys.argv[2] if len(sys.argv) > 2 else "results/tables")
    text, missing = fill(readme.read_text(), tables)
    atomic_write_text(readme, text)
    filled = sorted(set(table_blocks(text)) - set(missing))
    print(f"{readme}: filled {', '.join(filled) or 'no tables'} from {tables}" + (f"; missing: {', '.join(missing)}" if missing else ""))


if __name__ == "__main__":
    main()
