"""``sepkit convert --from torchaudio|speechbrain|asteroid|espnet|sgmse PATH --out DIR``: a published
separator or SGMSE+ checkpoint as a sepkit checkpoint folder.

PATH is a local file or folder (nothing downloads): torchaudio, the ``CONVTASNET_BASE_LIBRI2MIX``
weights file (a ConvTasNet state dict); speechbrain, a Sepformer model folder (hyperparams.yaml,
encoder.ckpt, masknet.ckpt, decoder.ckpt); asteroid, a ConvTasNet or DPRNNTasNet model file;
espnet, a TFGridNetV2 checkpoint file (ESPnet's ``*.pth`` state dict, read with ESPnet's
``config.yaml`` when one lies beside it).
sgmse, an SGMSE+ Lightning ``.ckpt`` (its EMA weights; the diffusion task's config).
Everything loads with ``weights_only=True`` and the YAML is read as plain data. DIR receives
``model.safetensors``, ``meta.json`` and ``config.yaml``, written atomically, for
``sepkit separate --ckpt DIR`` and ``sepkit eval --ckpt DIR``.
"""
from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("path", help="the published checkpoint: a file (torchaudio, asteroid, espnet, sgmse) or a "
                        "folder (speechbrain)")
    parser.add_argument("--from", dest="source", required=True,
                        choices=("torchaudio", "speechbrain", "asteroid", "espnet", "sgmse"),
                        help="where the checkpoint was published")
    parser.add_argument("--out", required=True, help="the sepkit checkpoint folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint folder")


def run(args) -> int:
    from sepkit.train import read_meta
    from sepkit.train.convert import convert_published

    out = convert_published(args.source, args.path, args.out, overwrite=args.overwrite)
    meta = read_meta(out)
    what = f"{meta['n_src']} sources" if meta.get("task") == "separation" else f"task {meta.get('task')}"
    print(f"{args.path} ({args.source}) -> {out}: {meta['model']}, {what} at {meta['sample_rate']} Hz")
    return 0
