"""Streaming model merging: checkpoints in, one merged checkpoint out, tensor by tensor."""
