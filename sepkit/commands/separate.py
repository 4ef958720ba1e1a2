"""``sepkit separate --ckpt PATH IN.wav [IN2.wav ...] -o DIR``: one file per separated source.

Each input is read (mono; ``--channel`` picks one of several), resampled to the model's rate,
separated in overlapping chunks when long, resampled back to the input's rate and written as
``DIR/<input stem>_s<k>.wav``.
"""
from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", help="audio files (WAV, FLAC)")
    parser.add_argument("--ckpt", required=True, help="checkpoint folder, or a run folder (its newest checkpoint)")
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("--channel", type=int, help="channel to separate from a multi-channel file")
    parser.add_argument("--chunk", type=float, default=8.0, help="chunk length in seconds (default 8)")
    parser.add_argument("--overlap", type=float, default=1.0, help="chunk overlap in seconds (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--device")


def run(args) -> int:
    from pathlib import Path

    import torch

    from sepkit.data import AudioError, read_audio, resample, write_audio
    from sepkit.train import CheckpointError, load_weights, read_meta, resolve_checkpoint, separate_waveform
    from sepkit.train.builders import model_from_meta

    out = Path(args.out)
    try:
        ckpt = resolve_checkpoint(args.ckpt)
        meta = read_meta(ckpt)
        model = model_from_meta(meta)
        load_weights(ckpt, model)
        rate = int(meta["sample_rate"])
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = model.to(device).eval()
        min_samples = max(1, int(0.05 * rate))
        jobs = []
        for path in args.inputs:  # read and check everything before writing anything
            wav, in_rate = read_audio(path, channel=args.channel, min_samples=1)
            if int(wav.shape[-1] * rate / in_rate) < min_samples:
                raise AudioError(f"{path}: audio too short ({wav.shape[-1]} samples at {in_rate} Hz; need 50 ms)")
            targets = [out / f"{Path(path).stem}_s{k + 1}.wav" for k in range(meta["n_src"])]
            existing = [t for t in targets if t.exists()]
            if existing and not args.overwrite:
                raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it (nothing was written)")
            jobs.append((path, wav, in_rate, targets))
    except (CheckpointError, AudioError, FileExistsError, ValueError) as exc:
        print(f"sepkit separate: {exc}", file=sys.stderr)
        return 2
    for path, wav, in_rate, targets in jobs:
        x = resample(wav, in_rate, rate).to(device)
        est = separate_waveform(model, x, chunk=int(args.chunk * rate), overlap=int(args.overlap * rate)).cpu()
        est = resample(est, rate, in_rate)[:, : wav.shape[-1]]
        peak = float(est.abs().max())
        if peak > 0.99:  # keep the relative levels, avoid clipping
            est = est * (0.99 / peak)
        for src, target in zip(est, targets):
            write_audio(target, src, in_rate)
        print(f"{path}: {len(targets)} sources -> {', '.join(str(t) for t in targets)}")
    return 0
