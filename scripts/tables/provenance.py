"""Rule provenance: results/provenance.json, what produced this workflow's results."""

import json
from pathlib import Path

from armor import logs
from armor.pipeline.runs import resolve_device
from armor.reporting.provenance import write_provenance

logs.setup(snakemake.log[0])
record = write_provenance(Path(snakemake.output[0]), snakemake.params.state, resolve_device(snakemake.params.device))
print(json.dumps(record, indent=2))
