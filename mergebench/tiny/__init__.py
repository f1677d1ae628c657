"""The CPU-sized MergeBench: a tokenizer, a base and five specialists on synthetic stand-in domains.

Everything here is seeded and small enough to build on a laptop in about a minute, so the whole kit
(merge, score, report) can be developed and tested without a GPU or a download.
"""

from mergebench.tiny.tasks import DOMAINS, GENERAL, SPLITS

__all__ = ["DOMAINS", "GENERAL", "SPLITS"]
