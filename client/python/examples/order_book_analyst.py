#!/usr/bin/env python3
"""A Python analyst next to the C++ order book (client/examples/order_book.cc).

The C++ writer publishes the top of a book under its mutex field and
signals its condition field; this process declares the same struct in
Python, binds behavior of its own to it (the C++ readers bound theirs),
and follows the updates until the writer closes the book:

    build/client/order_book 200 -- python3 client/python/examples/order_book_analyst.py

(The writer appends the channel's name and member capability. Run it with
PYTHONPATH=build/client/python, or after cmake --install.)
"""

import os
import sys

import structd


class Book(structd.Struct):
    """order_book.cc's BOOK_FIELDS, field for field: the same key and
    layout, so the same type token in the channel."""
    lock: structd.mutex
    changed: structd.condition
    version: structd.u64
    bid: structd.f64
    bid_qty: structd.u64
    ask: structd.f64
    ask_qty: structd.u64
    symbol: structd.string(8)
    closed: structd.bool_


class AnalystMethods:
    """This process's behavior for Book; nobody else sees it."""

    @staticmethod
    def imbalance(book: Book) -> float:
        total = book.bid_qty + book.ask_qty
        return (book.bid_qty - book.ask_qty) / total if total else 0.0

    @staticmethod
    def describe(book: Book) -> str:
        return (f"{book.symbol} spread {book.ask - book.bid:.2f} "
                f"imbalance {book.imbalance():+.2f}")


def main(channel: str, capability: str) -> int:
    with structd.connect(name="order_book_analyst.py") as client:
        ch = client.join(channel, capability)
        ch.bind(Book, AnalystMethods)
        client.seal_bindings()  # this process's behavior is final
        book = ch.view(Book, ch.get_root("book"))
        seen, shown = 0, None
        while True:
            with book.lock:
                while book.version == seen and not book.closed:
                    book.changed.wait(book.lock, timeout=0.1)
                closed = book.closed
                seen = book.version
                text = book.describe()  # sampled under the lock: consistent
            # The first quote, every 50th, and the last one.
            if seen != shown and (shown is None or seen % 50 == 0 or closed):
                print(f"[python analyst pid {os.getpid()}] v{seen} {text}", flush=True)
                shown = seen
            if closed:
                break
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
