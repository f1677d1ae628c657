"""mergebench-kit: reproduce MergeBench, the benchmark for merging domain-specialized LLMs."""

__version__ = "0.1.0"
