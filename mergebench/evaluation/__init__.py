"""Evaluation: for each harness, the parser that turns its raw output into one result record."""
