"""`duetto serve`: a local model over the duplex wire, for the desktop app elsewhere.

Loads one backend (any family, a tiny model included) and serves it on
`ws://HOST:PORT/v1/realtime?duplex=1`. Only this machine can connect unless `--host`
says otherwise, and then a token is required (`--token` or DUETTO_SERVE_TOKEN).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

TOKEN_ENV = "DUETTO_SERVE_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="DIR", required=True, type=Path,
                        help="a model folder (a tiny one from `duetto models tiny` will do)")
    parser.add_argument("--family", default=None,
                        help="the model family; by default read from the folder")
    parser.add_argument("--quant", default="bf16", choices=("bf16", "fp16", "int8", "nf4"))
    parser.add_argument("--device", default=None, help="cuda or cpu (default: the backend's)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8099, help="port (0: any free one)")
    parser.add_argument("--token", default=None,
                        help=f"the token clients must send (default: ${TOKEN_ENV}); "
                             "required on any address but this machine's")
    parser.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                        help="how long a dropped client may resume its conversation")
    parser.add_argument("--name", default=None,
                        help="the model name the server reports (default: the folder name)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from app.model import families
    from app.model.contract import BackendError, ModelSource, Quant
    from app.model.remote import wire

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not wire.is_loopback(args.host) and not token:
        print(f"duetto serve: listening on {args.host} lets other machines in, so a token "
              f"is required: pass --token or set {TOKEN_ENV} (or keep the default "
              "--host 127.0.0.1)", file=sys.stderr)
        return 2
    try:
        family = args.family or families.of_folder(args.model)
        backend_class = families.backend_class(family)
        kwargs = {"device": args.device} if args.device else {}
        backend = backend_class(**kwargs)
        print(f"duetto serve: loading {family} from {args.model} ...", flush=True)
        backend.load(ModelSource(local_dir=args.model), Quant(args.quant),
                     lambda what, frac: None)
    except BackendError as exc:
        print(f"duetto serve: cannot load the model: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(backend, args, token))


async def _serve(backend, args: argparse.Namespace, token: str | None) -> int:
    from app.serve.server import DuplexServer

    server = DuplexServer(backend, args.name or args.model.name, host=args.host,
                          port=args.port, token=token, grace_s=args.grace)
    try:
        port = await server.start()
    except OSError as exc:
        print(f"duetto serve: cannot listen on {args.host}:{args.port} ({exc})",
              file=sys.stderr)
        return 2
    guard = "a token is required" if token else "no token (this machine only)"
    # The exact line scripts and tests wait for.
    print(f"duetto serve: listening on ws://{args.host}:{port}/v1/realtime?duplex=1 "
          f"({backend.spec.family}, {guard})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows: Ctrl+C
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
        backend.close()
    return 0
