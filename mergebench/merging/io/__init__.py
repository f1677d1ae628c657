"""The merging core's input and output: checkpoints read through memory maps (checkpoint.py), the task
vectors a merge reads through one public source (source.py), the sharded output written in place and
renamed when complete (writer.py), and statistics directories on disk (stats_store.py). Nothing here
knows a merging method; the engine, the executors and the passes above build on it."""
