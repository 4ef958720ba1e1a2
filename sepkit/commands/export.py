"""``sepkit export --ckpt DIR --format onnx|export|torchscript --out FILE``: a checkpoint's model
as a file other runtimes load.

The model is rebuilt from the checkpoint (:func:`sepkit.train.load_trained`) and written by
:func:`sepkit.exporting.export` with dynamic batch and time axes; the file is run at two batch
sizes and two lengths and compared with the model before it is kept (``--no-check`` skips that).
``--part step`` exports a GCRN's streaming step, ``--part score`` a diffusion model's score
network. ONNX needs the ``export`` extra (``pip install 'sepkit[export]'``).
"""
from __future__ import annotations


def add_arguments(parser) -> None:
    from sepkit.exporting import FORMATS

    parser.add_argument("--ckpt", required=True, help="checkpoint folder, or a run folder (its newest checkpoint)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="onnx, export (torch.export .pt2) or "
                        "torchscript")
    parser.add_argument("--out", required=True, help="the file to write")
    parser.add_argument("--part", choices=("step", "score"), help="GCRN: its streaming step; SGMSE+: its score network")
    parser.add_argument("--no-check", action="store_true", help="do not run the written file against the model")
    parser.add_argument("--no-ema", action="store_true", help="the trained weights, not their moving average")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")


def run(args) -> int:
    from pathlib import Path

    from sepkit.exporting import export
    from sepkit.train import load_trained

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it (nothing was written)")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: the folder {out.parent} does not exist")
    _, model = load_trained(args.ckpt, "cpu", ema=not args.no_ema)
    done = export(model, args.format, out, part=args.part, check=not args.no_check, overwrite=args.overwrite)
    print(f"{done.path}: {type(model).__name__} ({done.kind}) as {done.format}; inputs {', '.join(done.inputs)}; "
          f"outputs {', '.join(done.outputs)}")
    for row in done.checks:
        errors = ", ".join(f"{k} {v:.1e}" for k, v in row.items() if k not in ("batch", "length"))
        print(f"  checked at batch {row['batch']}, length {row['length']}: relative error {errors}")
    return 0
