#!/usr/bin/env python3
"""Check that a noprop-rs checkpoint loads in Python and is what it claims.

Usage:
    check_safetensors.py MODEL.safetensors [--info INFO.json] [--training]

Loads the file with `safetensors.numpy.load_file` and its metadata with
`safe_open(...).metadata()`, then checks (see docs/checkpoint-format.md):
- the metadata keys and values (format, version, kind, variant, the
  configuration JSON, input shape, normalisation);
- the tensors: names sorted-unique, no training state in an exported file,
  float32 model tensors, all finite;
- with --info (the output of `noprop info --checkpoint FILE --json`): the
  exact tensor names, dtypes and shapes Rust saw, and the parameter count.
Exits non-zero with a message naming the problem.
"""

import argparse
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

REQUIRED_KEYS = [
    "format", "format_version", "checkpoint", "variant", "config",
    "variant_config", "crate_version", "epoch", "step", "dataset",
    "in_channels", "image_size", "num_classes", "normalize_mean",
    "normalize_std",
]
TRAINING_PREFIXES = ("optim.", "trainer.")
DTYPES = {"F32": np.float32, "F64": np.float64, "U32": np.uint32, "U8": np.uint8, "I64": np.int64}


def fail(message):
    print(f"check_safetensors: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(path, info_path, training):
    tensors = load_file(path)
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
        keys = list(f.keys())

    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        fail(f"{path}: metadata keys missing: {missing}")
    if meta["format"] != "noprop-rs" or meta["format_version"] != "1":
        fail(f"{path}: format {meta['format']!r} version {meta['format_version']!r}")
    kind = "training" if training else "weights"
    if meta["checkpoint"] != kind:
        fail(f"{path}: checkpoint kind {meta['checkpoint']!r}, expected {kind!r}")
    variant = meta["variant"]
    if variant not in ("dt", "ct", "fm"):
        fail(f"{path}: unknown variant {variant!r}")
    config = json.loads(meta["config"])
    if config.get("variant") != variant or variant not in config:
        fail(f"{path}: config JSON does not describe a {variant} run")
    json.loads(meta["variant_config"])
    channels, size, classes = (int(meta[k]) for k in ("in_channels", "image_size", "num_classes"))
    if channels < 1 or size < 1 or classes < 2:
        fail(f"{path}: impossible input shape {channels}x{size}x{size}, {classes} classes")
    for key in ("normalize_mean", "normalize_std"):
        values = json.loads(meta[key])
        if len(values) != channels:
            fail(f"{path}: {key} has {len(values)} values for {channels} channel(s)")
    if int(meta["epoch"]) < 0 or int(meta["step"]) < 0:
        fail(f"{path}: negative epoch or step")

    if sorted(tensors) != sorted(keys) or len(set(keys)) != len(keys):
        fail(f"{path}: load_file and safe_open disagree on the tensor names")
    model = {n: a for n, a in tensors.items() if not n.startswith(TRAINING_PREFIXES)}
    if not model:
        fail(f"{path}: no model tensors")
    if not training and len(model) != len(tensors):
        extra = sorted(set(tensors) - set(model))
        fail(f"{path}: an exported file must not hold training state, found {extra[:5]}")
    if training and "trainer.rng" not in tensors:
        fail(f"{path}: a training checkpoint must hold trainer.rng")
    for name, array in model.items():
        if array.dtype != np.float32:
            fail(f"{path}: tensor {name} is {array.dtype}, expected float32")
        if not np.all(np.isfinite(array)):
            fail(f"{path}: tensor {name} has non-finite values")

    if info_path:
        with open(info_path) as f:
            info = json.load(f)
        expected = {t["name"]: t for t in info["tensors"]}
        if sorted(expected) != sorted(tensors):
            only_py = sorted(set(tensors) - set(expected))[:5]
            only_rs = sorted(set(expected) - set(tensors))[:5]
            fail(f"{path}: names differ from noprop info: python-only {only_py}, rust-only {only_rs}")
        for name, array in tensors.items():
            want = expected[name]
            if list(array.shape) != list(want["shape"]):
                fail(f"{path}: {name} has shape {list(array.shape)}, noprop info says {want['shape']}")
            if DTYPES.get(want["dtype"]) != array.dtype.type:
                fail(f"{path}: {name} is {array.dtype}, noprop info says {want['dtype']}")
        total = info["parameters"]["total"] + info["parameters"]["buffers"]
        counted = sum(int(np.prod(a.shape)) for a in model.values())
        if counted != total:
            fail(f"{path}: {counted} model scalars, noprop info counts {total}")
        if info["variant"] != variant:
            fail(f"{path}: variant {variant}, noprop info says {info['variant']}")

    scalars = sum(int(np.prod(a.shape)) for a in model.values())
    print(
        f"check_safetensors: OK: {path}: NoProp-{variant.upper()} {meta['checkpoint']} file, "
        f"{len(tensors)} tensors, {scalars} model scalars, epoch {meta['epoch']}, "
        f"{channels}x{size}x{size} -> {classes} classes"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--info", help="output of `noprop info --checkpoint PATH --json`")
    parser.add_argument("--training", action="store_true", help="expect a training checkpoint")
    args = parser.parse_args()
    try:
        check(args.path, args.info, args.training)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        fail(f"{args.path}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
