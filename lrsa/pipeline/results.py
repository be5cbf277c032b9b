"""What :func:`compress` returns besides the model: one row per layer (paper Table I) and the
totals, describing the model as it is stored."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from ..utils import format_table


@dataclass
class LayerReport(Mapping):
    """One layer's row of :class:`CompressionReport`'s ``layers`` (paper Table I). Read its
    fields as attributes or by key (``row["size"]``, ``row.get("choice")``, ``dict(row)``).

    Attributes
    ----------
    name : str
        Module name.
    type : str
        ``"Conv2d"`` or ``"Linear"``.
    n, d : int
        Rows and columns of the lowered weight W (outputs; k_h k_w c inputs).
    params_original : int
        n d.
    kind : str
        ``"factored"`` (runs A + U V), ``"dense"`` (solved, but stored with its original
        weights: see ``decision`` and ``tried``), ``"original"`` (not approximated by the
        plan). Every field below describes the layer as stored: a dense or original layer
        has its full size, CR 100 %, rank min(n, d), all columns.
    size_a, size_b, size : float
        Stored sizes of A (kept columns x n), B (r (n + d)) and of both, over n d: the
        paper's CR(A), CR(B), CR(A+B) (eq. 15), named as :class:`LayerPlan`'s ``size``.
    rank : int
        r, the rank of B.
    nonzero_columns : int
        Columns of A kept (kept channels x k_h k_w).
    params_compressed : int
        Parameters the layer stores as it runs (n d when dense or original).
    rel_error : float or None
        ||Y - r(W X + b)||_F / ||Y||_F on the calibration samples (None for the data-free SVD).
    seconds : float
        Time to sample and solve the layer.
    converged : bool
        The ADMM's convergence flag (True where no ADMM ran).
    response : str or None
        The response fitted: ``"relu"`` where a ReLU follows the layer, else ``"linear"``.
    choice : str or None
        ``"A+B"``, ``"A only"`` or ``"B only"``: the split of the budget chosen on held-out
        samples; ``"B only (A+B not faster)"`` where the chosen A + B ran no faster than the
        dense layer and B alone at the same size did (``fallback="time"``).
    kept_channels : int or None
        Input channels (columns for a Linear layer) the sparse part keeps.
    relative_lam1 : float or None
        lam1 relative to the layer's gradient scale (lrsa only).
    method : str or None
        ``"lrsa"``, ``"svd"`` or ``"rrr"``.
    refined : bool
        The ReLU refinement was kept (it lowered the held-out error).
    ranked_by : str or None
        What ranked the input channels: ``"admm"`` or ``"energy"`` (very large layers).
    layer_speedups : dict or None
        Batch size -> the factored layer's measured speed-up in place (median of interleaved
        repeats; ``fallback="time"``).
    decision : str or None
        Why the solved layer is stored factored or dense, with the figures behind it (the
        multiply-add ratio, or the timings).
    heldout : list or None
        ``[kept channels, rank, error]`` for each split of the layer's size that was judged
        (B alone has 0 kept channels), the error relative on the held-out 20 % of the
        samples (post-ReLU where a ReLU follows; fitted on the other 80 %); None where only
        one split was possible.
    sized_by : str or None
        Why a whole-network spread gave the layer its size: which limit of the
        :class:`~lrsa.pipeline.Budget` its next rank step would exceed, or that it stays
        whole (None without a spread).
    tried : dict or None
        For a ``"dense"`` layer: the solved structure it did not use (``choice``, ``rank``,
        ``kept_channels``, ``size_a``, ``size_b``, ``size``, ``params_compressed``,
        ``rel_error``).
    sparsity : str or None
        What A keeps: ``"channel"`` (whole input channels), ``"unstructured"`` or an N:M
        pattern such as ``"2:4"`` (single weights; then ``size_a`` and ``params_compressed``
        count A's values with their index cost, :func:`lrsa.decompose.entry_storage`).
    nonzeros : int or None
        Nonzero entries of A.
    """

    name: str
    type: str
    n: int
    d: int
    params_original: int
    kind: str = "original"
    size_a: float = 0.0
    size_b: float = 1.0
    size: float = 1.0
    rank: int = 0
    nonzero_columns: int = 0
    params_compressed: int = 0
    rel_error: float | None = 0.0
    seconds: float = 0.0
    converged: bool = True
    response: str | None = None
    choice: str | None = None
    kept_channels: int | None = None
    relative_lam1: float | None = None
    method: str | None = None
    refined: bool = False
    ranked_by: str | None = None
    layer_speedups: dict | None = None
    decision: str | None = None
    heldout: list | None = None
    sized_by: str | None = None
    tried: dict | None = None
    sparsity: str | None = None
    nonzeros: int | None = None

    def __getitem__(self, key):
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self.__dataclass_fields__)

    def __len__(self):
        return len(self.__dataclass_fields__)

    @classmethod
    def original(cls, name, type_name, n, d, **fields):
        """The row of a layer stored as it is, an n x d lowered weight (``fields``: why,
        e.g. ``decision`` or ``sized_by``); the row every solved row starts from."""
        return cls(name=name, type=type_name, n=n, d=d, params_original=n * d, rank=min(n, d),
                   nonzero_columns=d, params_compressed=n * d, **fields)

    def solved(self, fit, **fields):
        """This row (the layer's :meth:`original`) for the factored layer ``fit`` (a
        :class:`lrsa.pipeline.LayerFit`): its sizes, rank and what was chosen;
        ``fields``: the rest (``response``, ``rel_error``, ``seconds``). Every field the
        fit and the row share by name is copied as it is."""
        n, d, r = self.n, self.d, fit.rank
        chosen = {f.name: getattr(fit, f.name) for f in dataclasses.fields(fit)
                  if f.name in self.__dataclass_fields__}
        return dataclasses.replace(
            self, kind="factored", rank=r, size_b=r * (n + d) / (n * d),
            size_a=(fit.params_compressed - r * (n + d)) / (n * d),
            size=fit.params_compressed / (n * d), converged=fit.converged,
            **chosen, **fields)

    def stored_dense(self, decision):
        """This solved row as stored with the original weights: full size, and what was
        tried in ``tried``."""
        tried = {k: self[k] for k in ("choice", "rank", "kept_channels", "size_a", "size_b",
                                      "size", "rel_error")}
        tried["params_compressed"] = self.params_compressed
        return dataclasses.replace(
            self, kind="dense", decision=decision, tried=tried, size_a=0.0, size_b=1.0,
            size=1.0,
            rank=min(self.n, self.d), nonzero_columns=self.d, kept_channels=None, choice=None,
            params_compressed=self.params_original, rel_error=0.0, refined=False,
            nonzeros=None)


@dataclass
class CompressionReport:
    """Per-layer results (paper Table I) and totals. CR = approximated / original size.

    Attributes
    ----------
    layers : list of LayerReport
        In the order the forward pass calls the layers.
    strategy, response, method : str
        The settings of the run.
    fallback : str or None
        The rule that decided where a solved layer is stored dense (see :func:`compress`).
    budget : dict or None
        The :class:`Budget` asked for (as a dict), or None for per-layer plans.
    seconds : float
        Wall time of :func:`compress`.
    speed : dict or None
        The whole-model check of ``fallback="time"``: measured ``speedups`` per batch size,
        ``faster``, and the layers ``reverted`` to their original weights.
    """

    layers: list = field(default_factory=list)
    strategy: str = "asymmetric"
    response: str = "relu"
    method: str = "lrsa"
    fallback: str | None = "macs"
    budget: dict | None = None
    seconds: float = 0.0
    speed: dict | None = None

    @property
    def params_original(self):
        return sum(r["params_original"] for r in self.layers)

    @property
    def params_compressed(self):
        return sum(r["params_compressed"] for r in self.layers)

    def to_dict(self):
        """Plain JSON-able dict (layers as dicts) with the totals."""
        d = asdict(self)
        d.update(params_original=self.params_original, params_compressed=self.params_compressed)
        return d

    @classmethod
    def from_dict(cls, d):
        """The report :meth:`to_dict` wrote (the totals are recomputed from the rows);
        ValueError naming any field this version of lrsa does not know. Rows written under an
        older name (``RENAMED_FIELDS`` in this module) are read under the current one."""
        d = dict(d, layers=[renamed(row) for row in d.get("layers", [])])
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields - {"params_original", "params_compressed"}
        unknown |= {k for row in d.get("layers", []) for k in row
                    if k not in LayerReport.__dataclass_fields__}
        if unknown:
            raise ValueError(f"a compression report with fields this lrsa does not know: "
                             f"{sorted(unknown)} (written by another version?)")
        return cls(**{k: v for k, v in d.items() if k in fields and k != "layers"},
                   layers=[LayerReport(**row) for row in d.get("layers", [])])

    def markdown(self):
        """The Table-I rows as stored, then why each layer is stored so (:meth:`reasons`)."""
        table = format_table(
            ["layer", "kind", "structure", "size(A) %", "size(B) %", "size(A+B) %", "rank",
             "kept channels", "rel. error", "s"],
            [_markdown_row(r) for r in self.layers])
        reasons = self.reasons()
        return table if not reasons else "\n".join(
            [table, "", "Why each layer is stored as it is:", "", *reasons])

    def reasons(self, names=None):
        """Markdown list items, one per layer the budget or the fall-back decided: how it is
        stored and why (``sized_by``, then ``decision``); ``names`` maps module names to the
        names shown (e.g. :data:`lrsa.paper.VGG16_LAYER_NAMES`)."""
        names = names or {}
        return [f"- {names.get(r.name, r.name)}: {r.kind}, rank {r.rank}"
                + "".join(f"; {why}" for why in (r.sized_by, r.decision) if why)
                for r in self.layers if r.sized_by or r.decision]


def _markdown_row(r):
    """A Table-I row as stored: the structure columns only for a factored layer."""
    factored = r["kind"] == "factored"
    return [r["name"], r["kind"], r.get("choice") if factored else None,
            f"{100 * r['size_a']:.1f}" if factored else None,
            f"{100 * r['size_b']:.1f}" if factored else None, f"{100 * r['size']:.1f}",
            r["rank"] if factored else None, r.get("kept_channels") if factored else None,
            None if r["rel_error"] is None else f"{r['rel_error']:.3f}", f"{r['seconds']:.1f}"]


#: report fields renamed since a saved report may have been written: old name -> new name
RENAMED_FIELDS = {"frac": "relative_lam1", "cr_a": "size_a", "cr_b": "size_b", "cr": "size",
                  "params": "params_compressed"}  # "params": in ``tried``


def renamed(row):
    """One saved layer row (or its ``tried`` dict) with its fields under their current
    names."""
    return {RENAMED_FIELDS.get(k, k): renamed(v) if k == "tried" and v else v
            for k, v in row.items()}
