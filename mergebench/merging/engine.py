"""The streaming merge: validate inputs, find global thresholds, merge tensor by tensor, write.

Peak memory is a few fp32 copies of the largest merged tensor (its T task vectors plus the method's
intermediates), independent of model size. Output goes to a temporary directory that is renamed into
place only after the last byte and the manifest are written.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mergebench.errors import MergeBenchError
from mergebench.merging.device import resolve_device
from mergebench.merging.fingerprint import fingerprint
from mergebench.merging.io.checkpoint import Checkpoint
from mergebench.merging.io.stats_store import CONFIG_FIELDS, FISHER, StatsStore
from mergebench.merging.io.writer import ShardedWriter, parse_size
from mergebench.merging.methods import MethodSpec, TensorContext, get_method
from mergebench.merging.plan import MergePlan, extra_rows_ok
from mergebench.merging.selection import natural_key
from mergebench.merging.sign_fixups import PendingFixups
from mergebench.merging.thresholds import global_thresholds

DTYPE_BY_NAME = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
                 "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}

ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class MergeJob:
    """Everything that determines a merge's output."""

    method: str
    base: str
    experts: list[str]
    out: str
    settings: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    out_dtype: str | None = None
    max_shard_size: str | int = "5GB"
    device: str = "auto"
    force: bool = False
    full_hash: bool = False
    stats: list[str] = field(default_factory=list)  # data-dependent methods: one statistics dir per expert
    data: list[str] = field(default_factory=list)  # RegMean++: validation data, one per expert (or one for all)
    compat: str = "default"  # "reference": pair specialists with the reference code's data domains


@dataclass
class MergeResult:
    out: Path
    seconds: float
    peak_rss_bytes: int
    peak_cuda_bytes: int
    tensors_merged: int
    tensors_copied: int
    thresholds: list[float] | None
    manifest: dict[str, Any]


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Merger:
    """One merge job, prepared (inputs validated) on construction and executed by `run()`."""

    def __init__(self, job: MergeJob, progress: ProgressFn | None = None):
        self.job = job
        self.progress = progress or (lambda phase, done, total: None)
        self.spec: MethodSpec = get_method(job.method)
        if job.compat == "reference" and self.spec.reference_variant is not None:
            self.spec = self.spec.reference_variant  # the reference code's defects, on request
        self.hp = self.spec.settings(job.settings)
        self.needs = self.spec.needs(self.hp)
        if not job.experts:
            raise MergeBenchError("no specialists given (use --expert PATH, once per specialist)")
        self.out = Path(job.out).expanduser()
        if self.out.exists() and not job.force:
            raise MergeBenchError(f"{self.out}: output directory already exists (use --force to replace it)")
        self.device = resolve_device(job.device)
        self.plan = MergePlan.build(self.spec, self.hp, job.base, job.experts, job.labels, job.include, job.exclude,
                                    self.device)
        self.base, self.experts, self.source = self.plan.base, self.plan.experts, self.plan.source
        self.names, self.merged, self.ranked = self.plan.names, self.plan.merged, self.plan.ranked
        self.out_dtype = self._out_dtype()
        # base + scale·Σ τ straight from the mapped files (TaskVectorSource.scaled_sum), where declared
        self.sum_scale = (self.spec.sum_scale(self.hp, len(self.experts))
                          if self.spec.sum_scale is not None and self.device.type == "cpu" else None)
        # the sign-elected merge piece by piece from the mapped files (TaskVectorSource.pieces), where declared
        self.sign_pieces = self.spec.with_sign_pieces if self.device.type == "cpu" else None
        self.stores, self.stat_names = self._open_stats()
        self.data, self.samples = self._load_data()

    # --- validation ---------------------------------------------------------------------------------
    def _out_dtype(self) -> torch.dtype | None:
        if self.job.out_dtype is None:
            return None
        try:
            return DTYPE_BY_NAME[self.job.out_dtype.lower()]
        except KeyError:
            raise MergeBenchError(
                f"--out-dtype {self.job.out_dtype!r}: expected one of bfloat16, float16, float32"
            ) from None

    def _open_stats(self) -> tuple[list[StatsStore], set[str]]:
        """Open and validate one statistics store per specialist before anything is written."""
        kind = self.stats_kind = self.needs.stats
        if kind is None:
            if self.job.stats:
                raise MergeBenchError(f"method {self.spec.name} uses no statistics; drop --stats")
            return [], set()
        if len(self.job.stats) != len(self.experts):
            raise MergeBenchError(
                f"method {self.spec.name} needs {kind.name} statistics for each specialist: {len(self.job.stats)} "
                f"--stats given for {len(self.experts)} --expert (make them with `mergebench stats --kind {kind.name}`)")
        needed = kind.needed(self.merged, {n: self.base.tensors[n].shape for n in self.merged})
        stores = []
        for expert, path in zip(self.experts, self.job.stats, strict=True):
            store = StatsStore(path)
            if store.kind != kind.name:
                raise MergeBenchError(f"{store.path}: holds {store.kind} statistics; method {self.spec.name} "
                                      f"needs {kind.name} (`mergebench stats --kind {kind.name}`)")
            self._check_stats_model(store, expert)
            if kind.needs_base:
                self._check_mask_base(store)
            mean = store.manifest.get("mean")
            if kind is FISHER and not self.hp.get("normalize") and mean is not None and mean < self.hp["epsilon"]:
                warnings.warn(f"{store.path}: the mean Fisher value {mean:.3g} is below epsilon "
                              f"{self.hp['epsilon']:g}, so most entries are floored and the merge tends to the "
                              "plain average; consider --set normalize=true or a smaller epsilon",
                              RuntimeWarning, stacklevel=2)
            for name in sorted(needed, key=natural_key):
                shape = store.shape(name)
                want = kind.expected_shape(self.base.tensors[name].shape)
                if shape is None:
                    raise MergeBenchError(f"{store.file}: no {kind.name} statistics for tensor {name} "
                                          f"(computed for another model or an incomplete pass?)")
                if tuple(shape) != tuple(want) and not (kind.extra_rows and extra_rows_ok(name, shape, want)):
                    raise MergeBenchError(f"{store.file}: {kind.name} statistics of {name} have shape "
                                          f"{list(shape)}, expected {list(want)}")
                dtype = store.infos[store.key(name)].dtype
                if kind.stored is not None and dtype not in kind.stored:
                    allowed = " or ".join(str(d).replace("torch.", "") for d in kind.stored)
                    raise MergeBenchError(f"{store.file}: the {kind.name} of {name} is "
                                          f"{str(dtype).replace('torch.', '')}, expected {allowed}")
            stores.append(store)
        return stores, needed

    def _load_data(self) -> tuple[list[tuple[str, str | None]], list[list]]:
        """Per specialist: (data source, data domain) and its samples, loaded before anything is written."""
        from mergebench.merging.datapass.samples import load_samples
        from mergebench.merging.pairing import COMPAT_MODES, resolve_data

        if self.job.compat not in COMPAT_MODES:
            raise MergeBenchError(f"compatibility mode {self.job.compat!r}: expected one of {', '.join(COMPAT_MODES)}")
        if not self.needs.data:
            if self.job.data:
                raise MergeBenchError(f"method {self.spec.name} reads no validation data; drop --data")
            return [], []
        given = list(self.job.data)
        if not given:
            raise MergeBenchError(f"method {self.spec.name} needs validation data: give --data once per --expert "
                                  "(a domain, a JSONL file) or once for all (`mergebench` or a directory of "
                                  "<domain>.jsonl files, paired by --compat)")
        if len(given) == 1:
            given = given * len(self.experts)
        if len(given) != len(self.experts):
            raise MergeBenchError(f"{len(given)} --data given for {len(self.experts)} --expert")
        data = [resolve_data(d, spec, None, self.job.compat) for d, spec in zip(given, self.job.experts, strict=True)]
        samples = [load_samples(src, self.hp["samples"], self.hp["seed"], dom if Path(src).is_dir() else None,
                                self.hp["template"]) for src, dom in data]
        return data, samples

    def _check_stats_model(self, store: StatsStore, expert: Checkpoint) -> None:
        """Statistics must come from this very specialist: same architecture, same weight files."""
        recorded = store.manifest.get("config") or {}
        for key in CONFIG_FIELDS:
            if recorded.get(key) != expert.config.get(key):
                raise MergeBenchError(
                    f"{store.path}: statistics were computed on a different architecture than {expert.path} "
                    f"({key} = {recorded.get(key)!r}, the specialist has {expert.config.get(key)!r})")
        if not _same_weights(store.manifest.get("model_files") or {}, expert):
            raise MergeBenchError(f"{store.path}: statistics were computed on {store.manifest.get('model')}, "
                                  f"whose weights differ from the specialist {expert.path}")

    def _check_mask_base(self, store: StatsStore) -> None:
        """Masks select entries of τ = specialist − base: they must have been trained against this base."""
        if not _same_weights(store.manifest.get("base_files") or {}, self.base):
            raise MergeBenchError(f"{store.path}: masks were trained against the base {store.manifest.get('base')}, "
                                  f"whose weights differ from the merge's base {self.base.path}")

    # --- passes -------------------------------------------------------------------------------------
    def thresholds(self) -> torch.Tensor:
        """The global magnitude thresholds of the ranked tensors, one per specialist (merging/thresholds.py,
        or the method's own pass)."""
        if self.spec.threshold_pass is not None:
            return self.spec.threshold_pass(self.source, self.ranked, set(self.merged), self.hp, self.progress)
        return global_thresholds(self.source, self.ranked, self.spec, self.hp, self.progress)

    def blocks(self, name: str) -> list:
        return self.source.blocks(name, self.needs.elementwise)

    def run(self) -> MergeResult:
        start = time.time()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        thresholds = self.thresholds() if self.ranked else None
        global_sign = self.needs.sign_election and thresholds is not None
        layout = [(n, self.dtype_for(n), self.base.tensors[n].shape) for n in self.names]
        writer = ShardedWriter(self.out, layout, parse_size(self.job.max_shard_size))
        merged_set = set(self.merged)
        # Tensors that are ranked but never written back (an untied lm_head) still vote in the majority sign.
        voters = [n for n in self.ranked if n not in merged_set] if global_sign else []
        work = self.names + voters
        sign_total = 0.0
        pending = PendingFixups()  # TIES entries whose value waits for the majority sign
        try:
            writer.open()
            for i, name in enumerate(work):
                if name not in merged_set:
                    if i < len(self.names):
                        self.copy_tensor(writer, name)
                    else:  # ranked but never written back: it only votes in the majority sign
                        ctx = self.context(name, thresholds, zero_sign=1.0)
                        for block in self.blocks(name):
                            sign_total += self.spec.with_sign(self.source.task_vectors(name, block)[1], ctx, self.hp)[1]
                    self.progress("merge", i + 1, len(work))
                    continue
                for block in self.blocks(name):
                    sign_total += self._merge_block(writer, name, block, thresholds, global_sign, pending)
                self.progress("merge", i + 1, len(work))
            if global_sign and sign_total <= 0:  # the majority sign is not +1: redo the tied entries
                for name, idx, values in pending:
                    writer.patch(name, idx, values)
            seconds = time.time() - start
            manifest = self.manifest(thresholds, seconds, sign_total if global_sign else None)
            return self.finish(writer, seconds, thresholds.tolist() if thresholds is not None else None, manifest)
        except OSError as e:  # a full disk while writing: say where, leave nothing
            raise writer.failed(e) from None
        except BaseException:
            writer.abort()
            raise

    def _merge_block(self, writer: ShardedWriter, name: str, block: tuple[int, int] | None, thresholds,
                     global_sign: bool, pending: PendingFixups) -> float:
        """Merge a tensor (or a block of its rows) and write it; returns its share of the majority sign."""
        dtype = self.dtype_for(name)
        offset = self.source.first(name, block) * torch.empty((), dtype=dtype).element_size()
        if self.sum_scale is not None and not global_sign:  # a scaled sum, streamed on the CPU
            out = self.source.scaled_sum(name, block, self.sum_scale, dtype)
            if out is not None:  # else not finite: the plain path names the culprit
                writer.write_part(name, offset, out)
                return 0.0
        if global_sign and self.sign_pieces is not None:
            pieces = self.source.pieces(name, block)
            out, sign_sum, idx, values = self.sign_pieces(pieces, self.context(name, thresholds, 1.0, block), self.hp,
                                                          dtype, pieces.count, self.source.work(8, pieces.size))
            if pieces.finite:  # else the plain path names the culprit
                pending.add(name, idx + self.source.first(name, block), values)
                writer.write_part(name, offset, out)
                return sign_sum
        base, tau = self.source.task_vectors(name, block)
        ctx = self.context(name, thresholds, zero_sign=1.0 if global_sign else None, block=block)
        sign_sum = 0.0
        if global_sign:
            delta, sign_sum, idx, alternative = self.spec.with_sign(tau, ctx, self.hp)
            out = base + delta
            if idx.numel():  # exact ties whose value depends on the global majority sign
                values = base.reshape(-1)[idx] + alternative
                pending.add(name, idx.cpu() + self.source.first(name, block), values.cpu())
        else:
            out = base + self.spec.fn(tau, ctx, self.hp)
        writer.write_part(name, offset, out.to(dtype).cpu())
        return sign_sum

    def finish(self, writer: ShardedWriter, seconds: float, thresholds: list[float] | None,
                manifest: dict[str, Any]) -> MergeResult:
        """Record time and peak memory in the manifest, then move the output into place."""
        result = MergeResult(self.out, seconds, peak_rss_bytes(),
                             torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else 0,
                             len(self.merged), len(self.names) - len(self.merged), thresholds, manifest)
        manifest["peak_rss_bytes"] = result.peak_rss_bytes
        manifest["peak_cuda_bytes"] = result.peak_cuda_bytes
        writer.finish(self.base.path, {"merge_manifest.json": json.dumps(manifest, indent=2) + "\n"})
        return result

    def context(self, name: str, thresholds: torch.Tensor | None, zero_sign: float | None = None,
             block: tuple[int, int] | None = None) -> TensorContext:
        """The tensor's context; statistics cover the same rows as the task vectors (a block of an
        element-wise method's large tensor, else the base's rows: extra vocabulary rows are cut)."""
        ctx = TensorContext(name, [e.label for e in self.experts], thresholds, zero_sign,
                            offset=self.source.first(name, block))
        if name in self.stat_names:
            rows = block or (0, self.base.tensors[name].shape[0])
            kind = self.stats_kind
            ctx.stats = [s.read(name, self.device, kind.dtype, rows=None if kind.square else rows) for s in self.stores]
            ctx.stats_meta = [s.manifest for s in self.stores]
        return ctx

    def dtype_for(self, name: str) -> torch.dtype:
        native = self.base.tensors[name].dtype
        if self.out_dtype is not None and native.is_floating_point:
            return self.out_dtype
        return native

    def copy_tensor(self, writer: ShardedWriter, name: str) -> None:
        """Unmerged tensors keep the base's values; bytes pass through when the dtype is unchanged."""
        if self.dtype_for(name) == self.base.tensors[name].dtype:
            writer.write_chunks(name, self.base.iter_bytes(name))
        else:
            writer.write(name, self.base.read(name).to(self.dtype_for(name)))

    def manifest(self, thresholds, seconds: float, sign_total: float | None) -> dict[str, Any]:
        from mergebench import __version__

        def model(c: Checkpoint) -> dict[str, Any]:
            return {"label": c.label, "path": str(c.path),
                    "files": {f.name: fingerprint(f, self.job.full_hash) for f in c.files}}

        return {
            "kind": "merge",
            "kit_version": __version__,
            "method": self.spec.name,
            "settings": self.hp,
            "compat": self.job.compat,
            "base": model(self.base),
            "experts": [model(e) for e in self.experts],
            "merged_tensors": len(self.merged),
            "include": self.job.include,
            "exclude": self.job.exclude,
            "global_thresholds": thresholds.tolist() if thresholds is not None else None,
            "ranked_tensors": len(self.ranked),
            "majority_sign_sum": sign_total,
            "stats": [{"path": str(s.path), **{k: s.manifest.get(k) for k in (
                "kind", "model", "data", "domain", "seed", "samples", "tokens", "settings")}} for s in self.stores],
            "out_dtype": str(self.out_dtype or "base").replace("torch.", ""),
            "device": str(self.device),
            "torch": torch.__version__,
            "seconds": round(seconds, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "argv": list(sys.argv),
        }


def _same_weights(recorded: dict[str, str], ckpt: Checkpoint) -> bool:
    """Recorded weight-file fingerprints against a checkpoint's: the same files, and the same
    fingerprints wherever both are of one kind (an exact SHA-256 and a sampled one cannot be compared)."""
    mine = {f.name: fingerprint(f) for f in ckpt.files}
    if set(recorded) != set(mine):
        return False
    comparable = all(recorded[n].split(":")[0] == mine[n].split(":")[0] for n in mine)
    return not comparable or recorded == mine

