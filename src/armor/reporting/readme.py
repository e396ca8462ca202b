"""Tables generated into README.md: each block between `<!-- table:NAME -->` and `<!-- /table:NAME -->` is NAME.md of
the last run, from results/tables/ (the workflow's) or results/benchmarks/ (`make bench-armor`'s), so the README never
shows hand-copied numbers.

Run `python -m armor.reporting.readme [README.md] [folder ...]` (`make readme-tables`: a developer refreshes the
README's snapshot for a commit; no run writes a tracked file); the folders default to results/tables and
results/benchmarks.
"""

import re
import sys
from pathlib import Path

from armor.pipeline.checkpoint import atomic_write_text

BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)", re.S)


def table_blocks(text: str) -> dict[str, str]:
    """The generated blocks of a README: table name -> its current body."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def fill(text: str, *folders: Path) -> tuple[str, list[str]]:
    """The README with every block whose table exists in one of the folders (the first that has it) replaced by that
    table; and the names of missing tables."""

    tables = {name: next((path for folder in folders if (path := folder / f"{name}.md").is_file()), None) for name in table_blocks(text)}
    missing = [name for name, path in tables.items() if path is None]

    def body(match: re.Match) -> str:
        """A block with its table's current Markdown, or unchanged when the table is missing."""
        path = tables[match["name"]]
        return match[1] + path.read_text().rstrip("\n") + "\n" + match[4] if path else match[0]

    return BLOCK.sub(body, text), missing


def main() -> None:
    """Fill README.md's table blocks from the results folders and say which tables were missing."""
    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    folders = [Path(x) for x in sys.argv[2:]] or [Path("results/tables"), Path("results/benchmarks")]
    text, missing = fill(readme.read_text(), *folders)
    atomic_write_text(readme, text)
    filled = sorted(set(table_blocks(text)) - set(missing))
    where = ", ".join(str(f) for f in folders)
    print(f"{readme}: filled {', '.join(filled) or 'no tables'} from {where}" + (f"; missing: {', '.join(missing)}" if missing else ""))


if __name__ == "__main__":
    main()
