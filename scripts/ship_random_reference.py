"""Compute the random reference of ``noiseclr demo``'s defaults on the embedded model, into the package.

    python scripts/ship_random_reference.py --domain faces --domain cats

Writes ``src/noiseclr/assets/chance/random-<key>.json`` (:data:`noiseclr.chance.SHIPPED_DIR`), the
same file the demo's first run would write to the user's cache. Rerun it whenever the shipped
weights or the demo's defaults change: ``tests/test_basemodel_shipped.py`` checks that the shipped
file's key is the one the demo asks for.
"""

from __future__ import annotations

import argparse
import time

import torch

from noiseclr.chance import SHIPPED_DIR, ReferenceCache, split_reference
from noiseclr.demo import DemoSettings
from noiseclr.measure import load_reader, prepare_split, reader_factor_names
from noiseclr.model import DiffusionModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", action="append", choices=["faces", "cats"], required=True)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = DiffusionModel.load("embedded", device="cpu")
    for domain in args.domain:
        started = time.monotonic()
        settings = DemoSettings(domain=domain).validate()
        reader = load_reader(domain)
        protocol = settings.protocol()
        test = prepare_split(model, reader, domain, "demo-test", settings.naming_images, protocol, progress=False)
        reference, cached = split_reference(
            model,
            reader,
            test,
            reader_factor_names(reader, domain),
            settings.strength,
            protocol=protocol,
            cache=ReferenceCache(SHIPPED_DIR),
            count=settings.random_reference,
            seed=settings.seed,
        )
        state = "already there" if cached else f"computed in {(time.monotonic() - started) / 60:.1f} min"
        print(f"{domain}: {ReferenceCache(SHIPPED_DIR).path(reference.key)} ({state})")


if __name__ == "__main__":
    main()
