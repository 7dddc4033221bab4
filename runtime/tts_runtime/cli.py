"""`tts-runtime serve | convert | testmodel | bench | soak | memory | cache-bench`.

Every failure a user can cause (bad setting, unloadable model, missing file)
ends with one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tts-runtime", description="Batching ONNX text-to-speech server (Piper voices)."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="serve the model over HTTP",
        description="Settings come from TTS_* environment variables (see docs/runtime.md); "
        "the options below override them.",
    )
    serve.add_argument("--model-path", type=Path, help="overrides TTS_MODEL_PATH")
    serve.add_argument("--host", help="overrides TTS_HOST")
    serve.add_argument("--port", type=int, help="overrides TTS_PORT")
    serve.add_argument("--device", choices=["auto", "cuda", "cpu"], help="overrides TTS_DEVICE")
    serve.add_argument("--precision", choices=["fp16", "fp32"], help="overrides TTS_PRECISION")

    convert = commands.add_parser("convert", help="convert an FP32 ONNX voice to FP16")
    convert.add_argument("--fp16", action="store_true", required=True, help="convert to FP16")
    convert.add_argument("source", type=Path, help="FP32 model.onnx")
    convert.add_argument("target", type=Path, help="where to write the FP16 model")

    testmodel = commands.add_parser(
        "testmodel", help="write the built-in VITS-shaped test voice (random weights)"
    )
    testmodel.add_argument("out_dir", type=Path)
    testmodel.add_argument("--size", choices=["small", "medium"], default="small")
    testmodel.add_argument("--speakers", type=int, default=1)

    bench = commands.add_parser(
        "bench", help="benchmark batch=1 vs dynamic batching vs piper's own server"
    )
    from tts_runtime import bench as bench_module
    from tts_runtime import cache_bench as cache_bench_module
    from tts_runtime import memory_bench as memory_module
    from tts_runtime import soak as soak_module

    bench_module.add_arguments(bench)
    soak = commands.add_parser(
        "soak", help="run one server under a long mixed load and watch its memory (RSS)"
    )
    soak_module.add_arguments(soak)
    memory = commands.add_parser(
        "memory",
        help="compare the engine's memory modes side by side: RSS held and speed, "
        "each mode in its own process",
    )
    memory_module.add_arguments(memory)
    cache_bench = commands.add_parser(
        "cache-bench",
        help="the response cache: hit vs synthesis latency and the hit ratio on a "
        "Zipf-distributed prompt set, Redis shared by a second replica",
    )
    cache_bench_module.add_arguments(cache_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "convert":
            return _convert(args.source, args.target)
        if args.command == "testmodel":
            return _testmodel(args.out_dir, args.size, args.speakers)
        return _measure(args)
    except KeyboardInterrupt:
        return 130


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"tts-runtime: {message}", file=sys.stderr)
    return code


def _measure(args: argparse.Namespace) -> int:
    from tts_runtime.bench import NoVoiceError, run_benchmark
    from tts_runtime.cache_bench import run_cache_bench
    from tts_runtime.memory_bench import run_memory
    from tts_runtime.soak import run_soak

    commands = {
        "bench": run_benchmark,
        "soak": run_soak,
        "memory": run_memory,
        "cache-bench": run_cache_bench,
    }
    try:
        return commands[args.command](args)
    except NoVoiceError as exc:
        return _fail(str(exc))


def _serve(args: argparse.Namespace) -> int:
    from tts_runtime.errors import SettingsError
    from tts_runtime.server import serve
    from tts_runtime.settings import load_settings

    flags = {
        "model_path": args.model_path,
        "host": args.host,
        "port": args.port,
        "device": args.device,
        "precision": args.precision,
    }
    try:
        settings = load_settings(**{k: v for k, v in flags.items() if v is not None})
    except SettingsError as exc:
        return _fail(str(exc))
    return serve(settings)


def _convert(source: Path, target: Path) -> int:
    from tts_runtime.fp16 import convert_to_fp16

    if not source.is_file():
        return _fail(f"cannot convert {source}: no such file")
    try:
        convert_to_fp16(source, target)
    except Exception as exc:  # onnx raises several unrelated types for a bad file
        return _fail(f"cannot convert {source}: {exc}")
    print(f"wrote {target}")
    return 0


def _testmodel(out_dir: Path, size: str, speakers: int) -> int:
    from tts_runtime.testmodel import write_test_model

    try:
        write_test_model(out_dir, size=size, num_speakers=speakers)  # type: ignore[arg-type]
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    print(f"wrote {out_dir / 'model.onnx'} and {out_dir / 'model.onnx.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
