"""``sepkit separate --ckpt PATH IN.wav [IN2.wav ...] -o DIR``: what the model makes of each file.

The task and model come from the checkpoint. Each input is read (mono; ``--channel`` picks one
of several) and given to the task's inference at its own rate (the task resamples to the model's
rate and back, with a notice): a separator writes ``DIR/<input stem>_s<k>.wav`` per source
(long inputs in overlapping chunks, sources aligned across chunks), an enhancer
``DIR/<stem>_enhanced.wav``. Every input and output path is checked before anything is written.
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
    parser.add_argument("--overlap", type=float, default=1.0, help="chunk overlap in seconds (default 1)")
    parser.add_argument("--target-slot", type=int, help="target speaker extraction: the predicted speaker to extract")
    parser.add_argument("--stream", action="store_true", default=None, help="streaming inference (causal models)")
    parser.add_argument("--steps", type=int, help="sampler steps (diffusion models)")
    parser.add_argument("--no-ema", action="store_true", help="the trained weights, not their moving average")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--device")
    add_compile_arguments(parser)


def run(args) -> int:
    from pathlib import Path

    import torch

    from sepkit.data import AudioError, read_audio, write_audio
    from sepkit.train import ConfigError, load_trained
    from sepkit.train.checks import check_output_dir, resolve_device

    out = Path(args.out)
    options = {k: getattr(args, k) for k in TASK_OPTIONS if getattr(args, k) is not None}
    if not args.chunk > 0 or not 0 <= args.overlap < args.chunk:
        raise ConfigError(f"--chunk={args.chunk} --overlap={args.overlap}: need chunk > 0 and 0 <= overlap < chunk")
    if args.channel is not None and args.channel < 0:
        raise ConfigError(f"--channel={args.channel}: must be >= 0")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps={args.steps}: must be >= 1")
    check_output_dir(out, "-o/--out")
    device = resolve_device(args.device)
    task, model = load_trained(args.ckpt, device, ema=not args.no_ema, compile=args.compile or "none")
    task.check_options(model, options)
    rate = task.sample_rate
    min_samples = max(1, int(0.05 * rate))
    jobs = []
    for path in args.inputs:  # read and check everything before writing anything
        wav, in_rate = read_audio(path, channel=args.channel, min_samples=1)
        if int(wav.shape[-1] * rate / in_rate) < min_samples:
            raise AudioError(f"{path}: audio too short ({wav.shape[-1]} samples at {in_rate} Hz; need 50 ms)")
        targets = {name: out / f"{Path(path).stem}_{name}.wav" for name in task.output_names()}
        existing = [t for t in targets.values() if t.exists()]
        if existing and not args.overwrite:
            raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it (nothing was written)")
        jobs.append((path, wav, in_rate, targets))
    seen = [t for _, _, _, targets in jobs for t in targets.values()]
    if len(set(seen)) != len(seen):
        dup = next(t for t in seen if seen.count(t) > 1)
        raise FileExistsError(f"two inputs would both write {dup} (inputs with the same name); separate them "
                              "into different --out folders (nothing was written)")
    for path, wav, in_rate, targets in jobs:
        with torch.no_grad():
            outputs = task.infer(model, wav.to(torch.float32), in_rate, chunk=args.chunk, overlap=args.overlap,
                                 **options)
        peak = max(float(o.abs().max()) for o in outputs.values())
        scale = 0.99 / peak if peak > 0.99 else 1.0  # keep the relative levels, avoid clipping
        written = []
        try:
            for name, target in targets.items():
                written.append(write_audio(target, outputs[name] * scale, in_rate))
        except BaseException:  # no half-written set of outputs: remove this input's files
            for p in written:
                p.unlink(missing_ok=True)
            raise
        print(f"{path}: {len(targets)} output(s) -> {', '.join(str(t) for t in targets.values())}")
    return 0
