"""Rules prefetch_access, prefetch_model, prefetch_text and prefetch_task: one step of filling the Hugging Face cache,
where the network is (local rules: the login node on a cluster), its record written as JSON."""

from armor.hub.environment import use_network

use_network()  # jobs run offline; this must come before huggingface_hub or datasets is imported

from pathlib import Path  # noqa: E402

from armor import logs  # noqa: E402
from armor.pipeline.checkpoint import atomic_write_json  # noqa: E402
from armor.prefetch import fetch  # noqa: E402

logs.setup(snakemake.log[0])
p = snakemake.params
STEPS = {
    "prefetch_access": lambda: fetch.check_access(p.repos),
    "prefetch_model": lambda: fetch.prefetch_model(p.repo, p.revision),
    "prefetch_text": lambda: fetch.prefetch_text(p.repo, p.files),
    "prefetch_task": lambda: fetch.prefetch_task(p.label, p.spec),
}
atomic_write_json(Path(snakemake.output[0]), STEPS[snakemake.rule]())
