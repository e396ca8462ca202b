"""lm-eval `custom_dataset` loader, copied beside the task YAMLs that armor.downstream writes."""

import json
from pathlib import Path
from typing import Any

import datasets


def load(file: str, **_: Any) -> datasets.DatasetDict:
    """The JSONL file named by the task YAML, read from this loader's own folder, as the test split."""
    lines = (Path(__file__).parent / file).read_text().splitlines()
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([json.loads(line) for line in lines])})
