"""The Hugging Face cache as the jobs see it: their offline environment (`environment`) and reading files from the
cache (`cache`). Fetching into it is the prefetch stage (`armor.prefetch`)."""
