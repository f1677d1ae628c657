"""Stages, keys, plans, the runner and manifests: how one (model, suite) becomes a resumable DAG."""
