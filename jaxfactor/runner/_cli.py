"""The ``jaxfactor`` command line.

    jaxfactor run CONFIG.toml [--set section.key=value ...] [--out DIR] [--force] [--device D] [--quiet]
                  [--coordinator HOST:PORT --num-processes N --process-id I | --distributed]
    jaxfactor predict RUN_DIR DATA.h5ad --out OUT.h5ad [--batch-size B] [--device D]
    jaxfactor clones CELLSNP_DIR_OR_H5AD [--celltypes FILE.csv --celltype-key COL --healthy ... --cancer ...] --out OUT
    jaxfactor models

Errors in the config or the data print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog="jaxfactor", description="Fit jaxfactor models from TOML experiment configs.")
    p.add_argument("--version", action="version", version=f"jaxfactor {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run an experiment config")
    r.add_argument("config", help="path to a .toml experiment config")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set model.n_components=8")
    r.add_argument("--out", default=None, help="output folder (default: runs/<config name>)")
    r.add_argument("--force", action="store_true", help="replace an existing output folder")
    r.add_argument("--device", choices=("auto", "cpu", "gpu", "tpu"), default=None, help="override run.device")
    r.add_argument("--quiet", action="store_true", help="no progress lines or bars on stderr (also when CI is set)")
    m = r.add_argument_group("multi-process runs (jax.distributed.initialize; only process 0 writes)")
    m.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="address of process 0's coordinator (default: $JAX_COORDINATOR_ADDRESS)")
    m.add_argument("--num-processes", type=int, default=None, metavar="N", help="default: $JAX_NUM_PROCESSES")
    m.add_argument("--process-id", type=int, default=None, metavar="I", help="0 .. N-1 (default: $JAX_PROCESS_ID)")
    m.add_argument("--distributed", action="store_true",
                   help="initialise from the cluster JAX detects (SLURM, Open MPI, Kubernetes, Cloud TPU)")
    pr = sub.add_parser("predict", help="apply a fitted run to new cells (compiled fixed-size batches)")
    pr.add_argument("run_dir", help="a results folder written by jaxfactor run")
    pr.add_argument("data", help="an .h5ad with the new cells (read in backed mode, streamed in batches)")
    pr.add_argument("--out", required=True, help="output .h5ad (obs of the new cells, predictions in obsm/obs)")
    pr.add_argument("--batch-size", type=int, default=None, help="cells per compiled batch (default: per model)")
    pr.add_argument("--device", choices=("auto", "cpu", "gpu", "tpu"), default="auto")
    pr.add_argument("--force", action="store_true", help="replace an existing output file")
    pr.add_argument("--x64", action="store_true", help="compute in float64")
    pr.add_argument("--quiet", action="store_true", help="no progress lines or bars on stderr (also when CI is set)")
    c = sub.add_parser("clones", help="call every cell cancer / healthy and its clone from REF/ALT counts",
                       description="Call every cell cancer / healthy (and its clone) with a posterior, from a cellSNP-lite "
                                   "folder or an .h5ad with layers REF and ALT, and a cell-type annotation.")
    c.add_argument("input", nargs="?", help="cellSNP-lite output folder, or .h5ad (cells x variants, layers REF and ALT)")
    c.add_argument("--demo", action="store_true", help="run on the embedded simulation and score the calls against its truth")
    c.add_argument("--celltypes", default=None, metavar="FILE.csv",
                   help="table of cell types: barcodes in the first column (CSV, or TSV by suffix)")
    c.add_argument("--celltype-key", default=None, metavar="COL", help="cell-type column (of --celltypes, or of the .h5ad's obs)")
    c.add_argument("--healthy", default=None, metavar="TYPES", help='comma-separated healthy types, e.g. "T cells,B cells,NK cells"')
    c.add_argument("--cancer", default=None, metavar="TYPES", help='comma-separated cancer types, e.g. "Immature,Early myeloid"')
    c.add_argument("--n-clones", default="auto", metavar="K", help="'auto' (choose among 2-6), K, or a list such as 2,3,4")
    c.add_argument("--method", default="allele", choices=("allele", "binomial", "cclone"),
                   help="allele: allele-count model with dropout (default); binomial: vireoSNP's mixture; cclone: CCLONE")
    c.add_argument("--n-init", type=int, default=None, metavar="N", help="random starts per candidate K (default 20 for allele, 10 otherwise)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--threshold", type=float, default=0.3, help="cancer when P(cancer) - P(healthy) > T (default 0.3)")
    c.add_argument("--out", required=True, help="output folder (result.h5ad, calls.csv, tables, clones.png, summary.txt)")
    c.add_argument("--force", action="store_true", help="replace an existing output folder")
    c.add_argument("--no-figures", action="store_true", help="skip clones.png")
    c.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    m = sub.add_parser("models", help="list the models; with a NAME, its config keys (type, default, help)")
    m.add_argument("name", nargs="?", help="a model name (e.g. gmm)")
    return p


def _summary(out: str, records: list[dict]) -> str:
    lines = [f"wrote {out}"]
    if all("summary" in r for r in records):  # pipeline models describe themselves
        return "\n".join(lines + [r["summary"] for r in records])
    for r in records:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k in r["shown"])
        if r.get("truth"):
            params += "; vs truth: " + ", ".join(f"{k}={v:.4g}" for k, v in r["truth"].items())
        state = "converged" if r["converged"] else "max_iter reached"
        chosen = " <- saved in model/ (lowest objective)" if r.get("chosen") and len(records) > 1 else ""
        lines.append(f"  {r['id']}: objective {r['objective']:.6g} after {r['n_iter']} iterations ({state}); {params}{chosen}")
    if len({r["params"].get("n_components") for r in records}) > 1:
        lines.append("  (the objective always falls as n_components grows: compare ranks by the elbow in selection.csv)")
    fitted = [r for r in records if not r.get("resumed")]
    if fitted:
        lines.append(f"  compile {sum({r['group']: r['compile_seconds'] for r in fitted}.values()):.2f} s, "
                     f"fit {sum({r['group']: r['seconds'] for r in fitted}.values()):.2f} s "
                     f"({fitted[0]['group_points']} point(s) per compiled call)")
    if len(fitted) < len(records):
        lines.append(f"  {len(records) - len(fitted)} point(s) resumed from an interrupted run, {len(fitted)} fitted now")
    verdicts = records[-1].get("verdicts") or []
    if verdicts:
        lines.append("verdict:" + "".join(f"\n  - {line}" for line in verdicts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "models":
        from ._models import describe_models

        try:
            _print(describe_models(args.name))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    from .._progress import quiet

    try:
        if args.command == "clones":
            from ._clones import clones_command
            from ._output import out_lock

            with out_lock(args.out), quiet(args.quiet):
                return clones_command(args, lambda m: print(m, file=sys.stderr, flush=True))
        if args.command == "predict":
            from ._predict import predict

            with quiet(args.quiet):
                predict(args.run_dir, args.data, args.out, batch_size=args.batch_size, device=args.device,
                        force=args.force, x64=args.x64)
            return 0
        from ._precheck import precheck

        precheck(args.config, args.overrides, args.out or _default_out(args.config), args.force)
        from ._distributed import initialize, process_index

        initialize(args.coordinator, args.num_processes, args.process_id, auto=args.distributed)
        from ._run import run

        with quiet(args.quiet):
            out, records = run(args.config, overrides=args.overrides, out=args.out, force=args.force, device=args.device)
    except (ValueError, FloatingPointError) as exc:
        msg = " ".join(str(exc).split())
        print(f"jaxfactor: error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the OS or HDF5 could not read or write (corrupt, truncated, full disk, ...)
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        msg = " ".join(str(exc.strerror or exc).split())
        print(f"jaxfactor: error: {type(exc).__name__}{where}: {msg}; check the file, the folder's permissions and "
              "free space", file=sys.stderr)
        return 2
    if process_index() != 0:
        print(f"process {process_index()}: finished {len(records)} sweep point(s); process 0 writes {out}")
        return 0
    _print(_summary(out, records))
    return 0


def _default_out(config: str) -> str:
    import os

    return os.path.join("runs", os.path.splitext(os.path.basename(config))[0])


def _print(text: str) -> None:
    """Print to stdout; a reader that stops early (``| head``) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit


if __name__ == "__main__":
    sys.exit(main())
