"""``sepkit separate --ckpt PATH IN.wav [IN2.wav ...] -o DIR``: what the model makes of each file.

The task and model come from the checkpoint. Each input is read (mono; ``--channel`` picks one
of several) and given to the task's inference at its own rate (the task resamples to the model's
rate and back, with a notice): a separator writes ``DIR/<input stem>_s<k>.wav`` per source
(long inputs in overlapping chunks, sources aligned across chunks, read and written block by
block: memory bounded by the chunk), an enhancer ``DIR/<stem>_enhanced.wav``. Every input and
output path is checked before anything is written. The same code path as
:meth:`sepkit.Separator.separate_file` (:func:`sepkit.train.inference.infer_file`).
"""
from __future__ import annotations

from .options import add_compile_arguments


# flags a task may support; passed to its ``infer`` only when the user set them
TASK_OPTIONS = ("target_slot", "stream", "steps")


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", help="audio files (WAV, FLAC)")
    parser.add_argument("--ckpt", required=True, help="checkpoint folder, or a run folder (its newest checkpoint)")
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("--channel", type=int, help="channel to separate from a multi-channel file")
    parser.add_argument("--chunk", type=float, default=8.0, help="chunk length in seconds (default 8)")
    parser.add_argument("--overlap", type=float, default=1.0, help="chunk overlap in seconds, > 0 (default 1)")
    parser.add_argument("--target-slot", type=int, help="target speaker extraction: the predicted speaker to extract")
    parser.add_argument("--stream", action="store_true", default=None, help="streaming inference (causal models)")
    parser.add_argument("--steps", type=int, help="sampler steps (diffusion models)")
    parser.add_argument("--no-ema", action="store_true", help="the trained weights, not their moving average")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--device")
    add_compile_arguments(parser)


def run(args) -> int:
    from pathlib import Path

    from sepkit.train import ConfigError, load_trained
    from sepkit.train.checks import check_output_dir, resolve_device
    from sepkit.train.inference import infer_file, plan_files

    out = Path(args.out)
    options = {k: getattr(args, k) for k in TASK_OPTIONS if getattr(args, k) is not None}
    if not args.chunk > 0 or not 0 < args.overlap < args.chunk:
        raise ConfigError(f"--chunk={args.chunk} --overlap={args.overlap}: need chunk > 0 and 0 < overlap < chunk "
                          "(seconds; consecutive chunks are aligned and cross-faded on their overlap)")
    if args.channel is not None and args.channel < 0:
        raise ConfigError(f"--channel={args.channel}: must be >= 0")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps={args.steps}: must be >= 1")
    check_output_dir(out, "-o/--out")
    device = resolve_device(args.device)
    task, model = load_trained(args.ckpt, device, ema=not args.no_ema, compile=args.compile or "none")
    task.check_options(model, options)
    # every input and output path checked before anything is written
    plans = plan_files(task, args.inputs, out, channel=args.channel, overwrite=args.overwrite)
    for path, targets in plans:
        infer_file(task, model, path, targets, chunk=args.chunk, overlap=args.overlap, channel=args.channel,
                   options=options, progress=True)
        print(f"{path}: {len(targets)} output(s) -> {', '.join(str(t) for t in targets.values())}")
    return 0
