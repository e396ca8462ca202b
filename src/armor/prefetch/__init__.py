"""The prefetch stage, where the network is: what a config needs from the Hugging Face hub (`plan`) and fetching it
into the cache with a record per item (`fetch`); the jobs then read the cache offline (`armor.hub`)."""
