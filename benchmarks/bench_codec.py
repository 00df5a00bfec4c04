"""Micro benchmark of the codec: encode and decode of typical messages, in-process.

Decoding is on the worker's hot path (every delivery is decoded once, or twice
when the consumer peeks), so its cost per message matters at high rates.
Prints the best of several ``timeit`` runs per case, in microseconds::

    python benchmarks/bench_codec.py [--signed]

``--signed`` adds the same cases through a codec with message signing on.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from gopherq.message import Message, new_id
from gopherq.serializer import Codec

CASES = {
    "minimal (.delay(2, 3))": Message(new_id(), "tasks.add", args=[2, 3]),
    "every routing field": Message(
        new_id(),
        "shop.orders.send_confirmation",
        kwargs={"order": 12345, "email": "someone@example.com"},
        queue="emails",
        priority=1,
        eta=1_900_000_000.0,
        expires=1_900_000_600.0,
        retries=3,
        timeout=30.0,
        key="order-12345",
        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    ),
}


def best_of(fn: Callable[[], object], number: int = 20_000, repeat: int = 7) -> float:
    """Microseconds per call, best of ``repeat`` runs (the least disturbed one)."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signed", action="store_true", help="also through a signing codec")
    options = parser.parse_args()
    codecs: dict[str, Codec] = {"plain": Codec()}
    if options.signed:
        from gopherq.signing import SignedCodec, Signer

        signer = Signer({"k1": b"0123456789abcdef0123456789abcdef"}, "k1")
        codecs["signed"] = SignedCodec(signer)
    print(f"{'codec':8} {'message':26} {'encode µs':>10} {'decode µs':>10}")
    for codec_name, codec in codecs.items():
        for case, message in CASES.items():
            body = codec.encode(message)
            encode = best_of(lambda: codec.encode(message))  # noqa: B023
            decode = best_of(lambda: codec.decode(body))  # noqa: B023
            print(f"{codec_name:8} {case:26} {encode:10.2f} {decode:10.2f}")


if __name__ == "__main__":
    main()
