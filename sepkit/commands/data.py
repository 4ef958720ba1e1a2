"""``sepkit data synth|spoken --out DIR``: write the built-in mixtures in the LibriMix layout.

``synth``: the synthetic speech-like generator; ``spoken``: utterances of the espeak-ng
synthesizer (:mod:`sepkit.data.spoken`; rendered once into the cache, then mixed by the same
rules)."""
from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    _mixture_arguments(sub.add_parser("synth", help="write synthetic mixtures in the LibriMix layout"))
    p = sub.add_parser("spoken", help="write mixtures of espeak-ng utterances in the LibriMix layout")
    _mixture_arguments(p)
    p.add_argument("--utterances", type=int, default=2000,
                   help="utterances rendered for the training split (default 2000; at most 2 x its mixtures)")
    p.add_argument("--eval-utterances", type=int, default=200,
                   help="utterances rendered for dev and for test each (default 200)")
    p.add_argument("--cache", default=None, help="folder of the rendered utterances (default ~/.cache/sepkit/spoken)")


def _mixture_arguments(p) -> None:
    p.add_argument("--out", required=True, help="folder that receives Libri<n>Mix/wav<k>k/<mode>")
    p.add_argument("--n-src", type=int, default=2, help="speakers per mixture (default 2)")
    p.add_argument("--sample-rate", type=int, default=8000, choices=(8000, 16000), help="Hz (default 8000)")
    p.add_argument("--mode", choices=("min", "max"), default="min", help="mixture length rule (default min)")
    p.add_argument("--train", type=int, default=1000, help="mixtures in the training split (default 1000)")
    p.add_argument("--train-split", default="train-360",
                   help="name of the training split (default train-360, the LibriMix recipes' choice; or train-100)")
    p.add_argument("--dev", type=int, default=100, help="mixtures in dev (default 100)")
    p.add_argument("--test", type=int, default=100, help="mixtures in test (default 100)")
    p.add_argument("--min-duration", type=float, default=3.0, help="seconds (default 3)")
    p.add_argument("--max-duration", type=float, default=6.0, help="seconds (default 6)")
    p.add_argument("--noise", action="store_true", help="add noise (writes mix_both, mix_single, noise/)")
    p.add_argument("--reverb", action="store_true", help="synthetic reverberation")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from pathlib import Path

    from sepkit.data import MixtureSpec, write_synthetic_librimix
    from sepkit.data.librimix import librimix_root

    from sepkit.train.checks import check_output_dir

    name = f"sepkit data {args.data_command}"
    counts = {"--train": args.train, "--dev": args.dev, "--test": args.test}
    if args.data_command == "spoken":
        counts.update({"--utterances": args.utterances, "--eval-utterances": args.eval_utterances})
    bad = [f"{k}={v}" for k, v in counts.items() if v < 0]
    if bad:
        print(f"{name}: {', '.join(bad)}: counts must be >= 0", file=sys.stderr)
        return 2
    if args.train + args.dev + args.test == 0:
        print(f"{name}: --train, --dev and --test are all 0: nothing to write", file=sys.stderr)
        return 2
    make_dataset = None
    if args.data_command == "spoken":
        from sepkit.data.spoken import find_synthesizer

        find_synthesizer()  # before any work: the one line saying how to install it
        if min(args.utterances, args.eval_utterances) < 1:
            print(f"{name}: --utterances and --eval-utterances must be >= 1", file=sys.stderr)
            return 2
    check_output_dir(args.out)
    try:
        spec = MixtureSpec(sample_rate=args.sample_rate, n_src=args.n_src, mode=args.mode,
                           min_duration=args.min_duration, max_duration=args.max_duration,
                           noise=args.noise, reverb=args.reverb)
    except ValueError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    root = librimix_root(args.out, spec.n_src, spec.sample_rate, spec.mode)
    if (root / "metadata").exists() and any((root / "metadata").iterdir()):
        print(f"{name}: {root} already holds a data set; choose another --out (nothing was overwritten)",
              file=sys.stderr)
        return 2
    if args.data_command == "spoken":
        from sepkit.data.spoken import SpokenCorpus, SpokenMixtures

        def make_dataset(split, count):
            size = args.utterances if split.startswith("train") else args.eval_utterances
            corpus = SpokenCorpus.build(args.cache, split, min(size, count * spec.n_src), args.seed, spec.sample_rate)
            return SpokenMixtures(count, spec, corpus, split=split, seed=args.seed)
    splits = {args.train_split: args.train, "dev": args.dev, "test": args.test}
    # a data set without its metadata is no data set: on failure, remove what this run created
    created = [p for p in [root, *root.parents] if not p.exists()]
    ours = [created[-1]] if created else [root / d for d in (*splits, "metadata") if not (root / d).exists()]
    try:
        root = write_synthetic_librimix(Path(args.out), spec, splits, seed=args.seed, progress=True,
                                        make_dataset=make_dataset)
    except BaseException:
        import shutil

        for p in ours:
            shutil.rmtree(p, ignore_errors=True)
        raise
    print(f"wrote {sum(splits.values())} mixtures to {root}")
    return 0
